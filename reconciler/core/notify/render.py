"""Pure: a Notification value and its renderings (generic JSON v1, Slack Block Kit, Google Chat)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from reconciler.core.notify.config import ChannelKind, EventKind
from reconciler.core.rollout.state import stamp

PAYLOAD_VERSION = 1
SIGNATURE_HEADER = "X-Reconciler-Signature-256"
MAX_COMMITS = 10

_TITLES = {
    EventKind.DEPLOYING: "🚀 {site} is deploying {ref}",
    EventKind.DEPLOYED: "✅ {site} deployed {ref}",
    EventKind.ROLLED_BACK: "⏪ {site}: rollout of {new} failed and was rolled back",
    EventKind.HELD: "✋ {site} is held by {who}",
    EventKind.BLOCKED: "⏳ {site} is blocked: head {new} is not ready",
    EventKind.FAILING: "❌ {site} is failing",
    EventKind.RECOVERED: "✅ {site} recovered",
    EventKind.FLAPPING: "🔁 {site} is flapping ({flaps} state changes within an hour)",
    EventKind.RATE_LIMITED: "🚦 GitHub rate limit exhausted",
    EventKind.WAITING: "⏸️ {site} is waiting for approval of {new}",
    EventKind.APPROVED: "👍 {site}: {new} approved by {who}, deploying",
    EventKind.WINDOW_OVERRIDE: "⚠️ {site}: {new} deployed through a closed window by {who}",
}


@dataclass(frozen=True, slots=True)
class Commit:
    """One commit between the old and the new SHA."""

    sha: str
    subject: str
    author: str
    url: str


@dataclass(frozen=True, slots=True)
class Comparison:
    """The commits from old to new (newest last, at most MAX_COMMITS) and how many there are."""

    commits: tuple[Commit, ...]
    total: int
    base: Commit | None = None  # the old commit itself (what runs)

    @property
    def head(self) -> Commit | None:
        """The new commit (the branch head): the newest listed, or the base when identical."""
        return self.commits[-1] if self.commits else (self.base if self.total == 0 else None)


@dataclass(frozen=True, slots=True)
class Notification:
    """Everything a message says; site fields are None for global events (the rate limit)."""

    id: str
    event: EventKind
    at: float
    reason: str
    site: str | None = None
    repo: str | None = None
    branch: str | None = None
    namespace: str | None = None
    deployment: str | None = None
    old_sha: str | None = None
    new_sha: str | None = None
    detail: str = ""
    held_at: str | None = None
    flaps: int = 0
    status_url: str | None = None
    web_url: str = "https://github.com"
    comparison: Comparison | None = None
    running_sha: str | None = None  # held: the commit its image is (None: not a commit of it)
    image: str | None = None  # held: the image it runs

    @property
    def compare_url(self) -> str | None:
        if not (self.repo and self.old_sha and self.new_sha) or self.old_sha == self.new_sha:
            return None
        return f"{self.web_url}/{self.repo}/compare/{self.old_sha}...{self.new_sha}"

    @property
    def site_url(self) -> str | None:
        if not self.status_url:
            return None
        return f"{self.status_url}/#site-{self.site}" if self.site else f"{self.status_url}/"

    def commit_url(self, sha: str) -> str:
        return f"{self.web_url}/{self.repo}/commit/{sha}"

    def title(self) -> str:
        template = _TITLES[self.event]
        ref = f"{self.branch or '?'}@{_short(self.new_sha)}"
        return template.format(
            site=self.site,
            ref=ref,
            new=_short(self.new_sha),
            who=self.detail or "someone",
            flaps=self.flaps,
        )


def _short(sha: str | None) -> str:
    return sha[:7] if sha else "?"


def _iso(ts: float) -> str:
    return stamp(ts)


def payload(n: Notification) -> dict[str, Any]:
    """The generic webhook body, version 1 (documented in docs/notifications.md)."""
    c = n.comparison
    return {
        "version": PAYLOAD_VERSION,
        "event": n.event.value,
        "id": n.id,
        "at": _iso(n.at),
        "site": n.site,
        "repo": n.repo,
        "branch": n.branch,
        "namespace": n.namespace,
        "deployment": n.deployment,
        "old_sha": n.old_sha,
        "new_sha": n.new_sha,
        "compare_url": n.compare_url,
        "commits": [
            {"sha": x.sha, "subject": x.subject, "author": x.author, "url": x.url}
            for x in (c.commits if c else ())
        ],
        "total_commits": c.total if c else None,
        "reason": n.reason,
        "detail": n.detail or None,
        "held_at": n.held_at,
        "running_sha": n.running_sha,
        "image": n.image,
        "flaps": n.flaps or None,
        "status_url": n.site_url,
    }


def _plain(text: str) -> str:
    """Escape what Slack's mrkdwn treats as markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link(url: str | None, text: str) -> str:
    return f"<{url}|{_plain(text)}>" if url else _plain(text)


def _summary_lines(n: Notification) -> list[str]:
    lines = []
    if n.repo:
        lines.append(f"*Repo:* {_link(f'{n.web_url}/{n.repo}', n.repo)}@{_plain(n.branch or '?')}")
    if n.namespace:
        lines.append(f"*Deployment:* `{n.namespace}/{n.deployment}`")
    if n.old_sha or n.new_sha:
        old = _link(n.commit_url(n.old_sha), _short(n.old_sha)) if n.old_sha else "?"
        new = _link(n.commit_url(n.new_sha), _short(n.new_sha)) if n.new_sha else "?"
        compare = f" ({_link(n.compare_url, 'compare')})" if n.compare_url else ""
        lines.append(f"*Commit:* {old} → {new}{compare}")
    if n.held_at:
        lines.append(f"*Since:* {_plain(n.held_at)}")
    return lines


def _commit_lines(n: Notification) -> list[str]:
    c = n.comparison
    if c is None or not c.commits:
        return []
    lines = [
        f"• {_link(x.url, x.sha[:7])} {_plain(x.subject[:120])} — {_plain(x.author)}"
        for x in c.commits
    ]
    if c.total > len(c.commits):
        lines.insert(0, f"_{c.total} commits; the newest {len(c.commits)}:_")
    return lines


def slack(n: Notification) -> dict[str, Any]:
    """A Slack incoming-webhook body: a readable Block Kit message with a plain-text fallback."""
    title = n.title()
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{_plain(title)}*"}},
    ]
    if n.reason:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _plain(n.reason)}})
    summary = _summary_lines(n)
    if summary:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(summary)}})
    commits = _commit_lines(n)
    if commits:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "\n".join(commits)}]}
        )
    if n.site_url:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Status page"},
                        "url": n.site_url,
                    }
                ],
            }
        )
    return {"text": f"{title}: {n.reason}" if n.reason else title, "blocks": blocks}


def google_chat(n: Notification) -> dict[str, Any]:
    """A Google Chat incoming-webhook body (text messages use the same link syntax as Slack)."""
    parts = [f"*{n.title()}*"]
    if n.reason:
        parts.append(n.reason)
    parts += _summary_lines(n) + _commit_lines(n)
    if n.site_url:
        parts.append(f"<{n.site_url}|Status page>")
    return {"text": "\n".join(parts)}


def render(kind: ChannelKind, n: Notification) -> dict[str, Any]:
    if kind is ChannelKind.SLACK:
        return slack(n)
    if kind is ChannelKind.GOOGLE_CHAT:
        return google_chat(n)
    return payload(n)


def sign(secret: bytes, body: bytes) -> str:
    """The signature header value: sha256=<hex HMAC-SHA256 of the raw body>."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
