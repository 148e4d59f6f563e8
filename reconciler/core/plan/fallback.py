"""The newest ready commit, forward only (pure): what may go out when a branch head is not ready.

A head is not ready when its image is missing, its checks are pending or failed (``verify =
"checks"``), or the rollout watcher marked it failed. Then the older commits of the
branch that came with the head (``BranchHead.history``, bounded by RECONCILER_LOOKBACK) are the
candidates, newest first, under three rules:

- forward only: the walk stops at the commit the Deployment runs (``core/plan/running.py``: its
  ``reconciler.dev/sha``, or the commit whose image it runs, tag with or without digest), so
  nothing older than what runs is ever a candidate;
- a commit the rollout watcher marked failed (``reconciler.dev/failed-sha``) is never one;
- with ``verify = "checks"``, only commits whose checks roll up to SUCCESS are.

The engine then verifies the candidates like any target and deploys the newest that passes.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.core.errors import ErrorKind
from reconciler.core.model import Action, BranchHead, SitePlan, Skip
from reconciler.core.plan.running import runs
from reconciler.core.plan.template import render

__all__ = ["Candidate", "candidates", "not_ready", "reason"]

READY_CHECKS = "SUCCESS"
_NOT_READY = (Skip.IMAGE_MISSING, Skip.CHECKS_PENDING, Skip.FAILED_COMMIT)


@dataclass(frozen=True, slots=True)
class Candidate:
    """An older commit that may replace the head: how far behind it is, and its image."""

    sha: str
    behind: int
    image: str


def not_ready(p: SitePlan) -> bool:
    """Whether the plan waits on a head that is not ready (so an older commit may go instead)."""
    if p.action is Action.ERROR:
        return p.error_kind is ErrorKind.CHECKS_FAILED
    return p.action is Action.SKIP and p.skip in _NOT_READY


def candidates(p: SitePlan, head: BranchHead) -> tuple[Candidate, ...]:
    """The commits that may replace ``head`` for the site of ``p``, newest first."""
    history = head.history
    if len(history) < 2 or history[0].sha != head.sha:
        return ()
    site = p.site
    out: list[Candidate] = []
    for behind, commit in enumerate(history[1:], start=1):
        image = render(
            site.image, owner=site.owner, repo=site.repo_name, branch=head.branch, sha=commit.sha
        )
        if runs(p, commit.sha, image):
            break  # what runs now (tag, tag@digest or recorded): everything from here is older
        if commit.sha == p.failed_sha:
            continue
        if site.verify == "checks" and commit.checks != READY_CHECKS:
            continue
        out.append(Candidate(commit.sha, behind, image))
    return tuple(out)


def reason(p: SitePlan, head: BranchHead, chosen: Candidate) -> str:
    """What the plan says when ``chosen`` goes out instead of the head."""
    if p.skip is Skip.FAILED_COMMIT:
        why = "its rollout failed"
    elif p.action is Action.ERROR:
        why = "checks failed"
    elif p.skip is Skip.CHECKS_PENDING:
        why = "checks pending"
    else:
        why = "image missing"
    plural = "s" if chosen.behind != 1 else ""
    return (
        f"head {head.sha[:7]} not ready ({why}); deploying {chosen.sha[:7]}, "
        f"{chosen.behind} commit{plural} behind"
    )
