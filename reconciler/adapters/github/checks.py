"""verify = "checks": every commit status and check run of a commit, read into core's Checks
(core.plan.checks decides)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from reconciler.adapters.github.client import GitHubClient, Halt
from reconciler.core.errors import ErrorKind, GitHubError
from reconciler.core.model import ImageStatus
from reconciler.core.plan.checks import Check, checks_verdict
from reconciler.core.ports import VerifyRequest

CHECK_PAGES = 10  # 1,000 statuses and 1,000 check runs per commit at most


class CheckReader:
    """The ImageVerifier of verify = "checks"."""

    def __init__(self, client: GitHubClient) -> None:
        self.client = client

    def verify(self, requests_: Collection[VerifyRequest]) -> Mapping[VerifyRequest, ImageStatus]:
        """ImageStatus per request from the checks of the commit its image was built from."""
        out: dict[VerifyRequest, ImageStatus] = {}
        seen: dict[tuple[str, str], tuple[list[Check], str | None]] = {}
        for r in requests_:
            if r.mode != "checks":
                continue
            try:
                if (r.repo, r.sha) not in seen:
                    seen[(r.repo, r.sha)] = self._commit_checks(r.repo, r.sha)
                checks, problem = seen[(r.repo, r.sha)]
                out[r] = (
                    ImageStatus(None, problem, kind=ErrorKind.GITHUB)
                    if problem
                    else checks_verdict(checks, r.sha, r.required_checks)
                )
            except Halt as halt:
                out[r] = ImageStatus(None, halt.error.reason, kind=halt.error.kind)
            except GitHubError as exc:
                out[r] = ImageStatus(None, str(exc), kind=exc.kind)
        return out

    def _commit_checks(self, repo: str, sha: str) -> tuple[list[Check], str | None]:
        """Every commit status and (latest) check run of a commit, all pages; or a problem."""
        checks: list[Check] = []
        for what, items in (("status", "statuses"), ("check-runs", "check_runs")):
            for page in range(1, CHECK_PAGES + 1):
                url = f"/repos/{repo}/commits/{sha}/{what}?per_page=100&page={page}"
                r = self.client.request("GET", url)
                body = r.json()
                if r.status != 200 or not isinstance(body, dict):
                    return [], f"GitHub answered {r.status} for the checks of {sha[:7]}"
                got = [c for c in body.get(items) or [] if isinstance(c, dict)]
                checks += map(_of_status if what == "status" else _of_run, got)
                if len(got) < 100 or page * 100 >= int(body.get("total_count") or 0):
                    break
            else:
                return [], f"{sha[:7]} has more than {CHECK_PAGES * 100} {items}; not read"
        return checks, None


def _of_status(s: Mapping[str, Any]) -> Check:
    """A commit status as a Check."""
    return Check(str(s.get("context", "")), str(s.get("state") or "pending"))


def _of_run(c: Mapping[str, Any]) -> Check:
    """A check run as a Check: its conclusion once completed, else pending."""
    done = c.get("status") == "completed"
    return Check(str(c.get("name", "")), str(c.get("conclusion") or "") if done else "pending")
