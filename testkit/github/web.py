"""The stand-in's web pages: what the links of the status page (commit, branch, compare) open.

GitHub's web UI lives at github.com/{owner}/{repo}/commit/{sha} etc.; the reconciler derives
those links from its API base, which offline is the stand-in. A small HTML page per link answers
them (the API itself lives under /repos/…, /graphql, /rate_limit: no clash).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

from testkit.github.replies import Reply
from testkit.github.state import Repo, resolve_commit

__all__ = ["page"]

_WEB = re.compile(r"^/(?P<owner>[^/]+)/(?P<repo>[^/]+)/(?P<kind>commit|tree|compare)/(?P<ref>.+)$")
_API_ROOTS = frozenset({"repos", "orgs", "users", "user", "api", "app", "installation"})


def page(method: str, path: str, repos: Callable[[str, str], Repo | None]) -> Reply | None:
    """The HTML page of a web link, or None when `path` is no web link (the API answers it)."""
    found = _WEB.match(path)
    if method not in ("GET", "HEAD") or found is None or found["owner"] in _API_ROOTS:
        return None
    repo = repos(found["owner"], found["repo"])
    name = f"{found['owner']}/{found['repo']}"
    if repo is None:
        return _html(404, f"{name}: no such repository", "")
    kind, ref = found["kind"], found["ref"]
    if kind == "compare":
        base, _, head = ref.partition("...")
        body = f"<p>{_commit_line(repo, base)}</p><p>…</p><p>{_commit_line(repo, head)}</p>"
        return _html(200, f"{name}: compare {base[:7]}...{head[:7]}", body)
    sha = resolve_commit(repo, ref)
    if sha is None:
        return _html(404, f"{name}: no commit or branch {ref}", "")
    title = f"{name}: {'branch ' + ref if kind == 'tree' else 'commit ' + sha[:7]}"
    return _html(200, title, f"<p>{_commit_line(repo, sha)}</p>")


def _commit_line(repo: Repo, ref: str) -> str:
    sha = resolve_commit(repo, ref)
    commit = repo.commits.get(sha) if sha else None
    if commit is None:
        return f"<code>{html.escape(ref)}</code> (not a commit of this repository)"
    return (
        f"<code>{commit.sha}</code> {html.escape(commit.message)} — "
        f"{html.escape(commit.author)}, {html.escape(commit.date)}"
    )


def _html(status: int, title: str, body: str) -> Reply:
    text = (
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"</head><body><h1>{html.escape(title)}</h1>{body}"
        "<p><small>the offline GitHub stand-in</small></p></body></html>"
    )
    return Reply(
        status, raw_body=text.encode(), content_type="text/html; charset=utf-8", validate=False
    )
