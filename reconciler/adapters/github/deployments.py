"""What notifications need of GitHub: the commits between two SHAs (compare), and GitHub
Deployments that follow each rollout."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from reconciler.adapters.github.client import GitHubClient, Halt, Response
from reconciler.core.errors import DeliveryError, ErrorKind, GitHubError
from reconciler.core.notify.config import STARTS, Channel, EventKind
from reconciler.core.notify.render import MAX_COMMITS, Commit, Comparison, Notification

FIND_PAGE = 10  # deployments of one (sha, environment) looked at for the reconciler's own


class CommitReader:
    """The CommitLog: the commits between two SHAs."""

    def __init__(self, client: GitHubClient) -> None:
        self.client = client

    def compare(self, repo: str, base: str, head: str) -> Comparison:
        """The commits from base to head, newest MAX_COMMITS of them, in one REST request."""
        try:
            r = self.client.request("GET", f"/repos/{repo}/compare/{base}...{head}?per_page=100")
        except Halt as halt:
            raise GitHubError(halt.error.reason, kind=halt.error.kind) from halt
        if r.status != 200:
            raise GitHubError(
                f"GitHub answered {r.status} comparing {repo} {base[:7]}...{head[:7]}: {r.message}"
            )
        data = r.json() or {}
        raw = data.get("commits") or []
        commits = tuple(_commit_line(c) for c in raw[-MAX_COMMITS:])
        old = data.get("base_commit")
        return Comparison(
            commits,
            int(data.get("total_commits", len(raw))),
            _commit_line(old) if isinstance(old, dict) else None,
        )


def _commit_line(c: Mapping[str, Any]) -> Commit:
    detail = c.get("commit") or {}
    author = (detail.get("author") or {}).get("name") or (c.get("author") or {}).get("login")
    return Commit(
        sha=str(c.get("sha", "")),
        subject=str(detail.get("message", "")).split("\n", 1)[0],
        author=str(author or "unknown"),
        url=str(c.get("html_url", "")),
    )


class GitHubDeployments:
    """A GitHub Deployment per deployed commit, its statuses following the rollout: deploying →
    in_progress, deployed → success (GitHub marks the previous ones inactive), rolled back →
    failure for the bad commit and success again for the one running. Needs a token (or App)
    with `deployments: write`. The deployment of a commit is found by a list query, so nothing
    is remembered between syncs."""

    def __init__(self, source: GitHubClient) -> None:
        self.source = source

    def send(self, channel: Channel, n: Notification) -> None:
        if not (n.repo and n.new_sha and n.site):
            return
        environment = channel.environment or n.site
        try:
            if n.event in STARTS:
                deployment = self._create(n.repo, n.new_sha, environment, n)
                self._status(n.repo, deployment, "in_progress", n, "rolling out")
            elif n.event is EventKind.DEPLOYED:
                deployment = self._create(n.repo, n.new_sha, environment, n)
                self._status(n.repo, deployment, "success", n, "available")
            elif n.event is EventKind.ROLLED_BACK:
                bad = self._create(n.repo, n.new_sha, environment, n)
                self._status(n.repo, bad, "failure", n, f"rolled back: {n.reason}")
                good = self._find(n.repo, n.old_sha, environment, n.site) if n.old_sha else None
                if good is not None:
                    self._status(n.repo, good, "success", n, "running again after a rollback")
            elif n.event is EventKind.HELD:
                self._held(n, environment)
        except Halt as halt:
            raise DeliveryError(f"github_deployments: {halt.error.reason}") from halt
        except GitHubError as exc:
            retryable = exc.kind in (ErrorKind.GITHUB_UNAVAILABLE, ErrorKind.GITHUB_UNREACHABLE)
            raise DeliveryError(f"github_deployments: {exc}", retryable=retryable) from exc

    def _held(self, n: Notification, environment: str) -> None:
        """A site held on another commit (a person's undo or set image, `reconciler rollback`):
        the commit now running gets a deployment marked success, the one shown before is made
        inactive; an image that is no commit of the branch is said so on the one shown."""
        assert n.repo and n.site
        who = n.detail or "someone"
        active = self._active(n.repo, environment, n.site)
        if n.running_sha is None:
            if active is not None:
                image = n.image or "an image"
                what = f"held by {who}: runs {image}, not a commit of {n.branch or 'the branch'}"
                self._status(n.repo, active, "inactive", n, what)
            return
        running = self._create(n.repo, n.running_sha, environment, n)
        if active is not None and active != running:
            what = f"replaced by {n.running_sha[:7]}: held by {who}"
            self._status(n.repo, active, "inactive", n, what)
        self._status(n.repo, running, "success", n, f"held by {who} on {n.running_sha[:7]}")

    def _active(self, repo: str, environment: str, site: str) -> int | None:
        """The site's deployment GitHub shows as live: the newest whose last status is success."""
        query = f"environment={quote(environment, safe='')}&per_page={FIND_PAGE}"
        r = self._checked(self.source.request("GET", f"/repos/{repo}/deployments?{query}"))
        for found in r.json() or []:
            payload = found.get("payload")
            if not (isinstance(payload, dict) and payload.get("site") == site):
                continue
            url = f"/repos/{repo}/deployments/{int(found['id'])}/statuses?per_page=1"
            latest = self._checked(self.source.request("GET", url)).json() or []
            if latest and isinstance(latest[0], dict) and latest[0].get("state") == "success":
                return int(found["id"])
        return None

    def _find(self, repo: str, sha: str, environment: str, site: str) -> int | None:
        """The newest deployment of (sha, environment) this reconciler created for the site."""
        query = f"sha={sha}&environment={quote(environment, safe='')}&per_page={FIND_PAGE}"
        r = self._checked(self.source.request("GET", f"/repos/{repo}/deployments?{query}"))
        for found in r.json() or []:
            payload = found.get("payload")
            if isinstance(payload, dict) and payload.get("site") == site:
                return int(found["id"])
        return None

    def _create(self, repo: str, sha: str, environment: str, n: Notification) -> int:
        """Idempotent: a deployment this reconciler created for (sha, environment) before is
        reused, so a retry after an answer that was lost (a 5xx after GitHub created it; the
        POST itself is never retried by the client, see _ReadRetry) creates no duplicate."""
        assert n.site
        existing = self._find(repo, sha, environment, n.site)
        if existing is not None:
            return existing
        body = {
            "ref": sha,
            "environment": environment,
            "auto_merge": False,
            "required_contexts": [],  # the reconciler has checked what it needs already
            "description": f"reconciler: {n.site} {n.branch or ''}@{sha[:7]}"[:140],
            "payload": {"site": n.site, "namespace": n.namespace, "deployment": n.deployment},
        }
        r = self._checked(self.source.request("POST", f"/repos/{repo}/deployments", body=body))
        return int((r.json() or {})["id"])

    def _status(self, repo: str, deployment: int, state: str, n: Notification, what: str) -> None:
        body: dict[str, Any] = {"state": state, "description": what[:140]}
        if n.site_url:
            body["environment_url"] = n.site_url
            body["log_url"] = n.site_url
        url = f"/repos/{repo}/deployments/{deployment}/statuses"
        self._checked(self.source.request("POST", url, body=body))

    @staticmethod
    def _checked(r: Response) -> Response:
        if 200 <= r.status < 300:
            return r
        hint = " (the token needs deployments: write)" if r.status in (403, 404) else ""
        kind = ErrorKind.GITHUB_UNAVAILABLE if r.status >= 500 else ErrorKind.GITHUB
        raise GitHubError(f"GitHub answered {r.status}: {r.message}{hint}", kind=kind)
