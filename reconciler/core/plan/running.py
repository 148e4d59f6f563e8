"""The commit a Deployment runs (pure): one notion for the planner, the fallback and the notes.

A workload runs commit C when its image is C's image: the site's template rendered for C, as a
tag with or without a pinned digest (``app:<sha>`` and ``app:<sha>@sha256:…`` are one image),
or, for a ``{short_sha}`` template, the commit of the branch's recent history whose SHA starts
with the tag's short SHA; failing that, the commit its ``reconciler.dev/sha`` records. So a
Deployment first rolled out by another tool (Skaffold, Cloud Deploy, ``kubectl set image
…@sha256:…``) and adopted has a running commit too, and the newest-ready walk stops at it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from reconciler.core import annotations as ann
from reconciler.core.model import BranchHead, HeadResult, Site, SitePlan
from reconciler.core.plan.template import pattern

__all__ = ["commit_of_image", "running_sha", "runs", "same_image"]


def same_image(current: str, target: str) -> bool:
    """Same image reference up to a pinned digest: `repo:tag` and `repo:tag@sha256:...` match."""
    return current.partition("@")[0] == target.partition("@")[0]


def commit_of_image(
    site: Site, branch: str | None, image: str, known: Iterable[str] = ()
) -> str | None:
    """The commit whose image (by the site's template) `image` is; None when it is none.

    A full ``{sha}`` in the tag is the commit; a ``{short_sha}`` one is resolved against
    `known` (the branch head and its recent history), else it stays unknown.
    """
    found = pattern(site.image, owner=site.owner, repo=site.repo_name, branch=branch).fullmatch(
        image.partition("@")[0]
    )
    if found is None:
        return None
    groups = found.groupdict()
    if groups.get("sha"):
        return groups["sha"]
    short = groups.get("short_sha") or ""
    return next((sha for sha in known if short and sha.startswith(short)), None)


def running_sha(
    site: Site,
    annotations: Mapping[str, str],
    image: str,
    head: HeadResult | None,
) -> str | None:
    """The commit the workload runs: its image's, else its recorded ``reconciler.dev/sha``.

    The image wins: after a person's ``kubectl set image`` to another commit's image the
    annotation still names the commit before it. The annotation serves where the image says
    nothing (a tag the template does not render, a short SHA older than the history).
    """
    recorded = annotations.get(ann.SHA) or None
    known = tuple(s for s in (recorded,) if s)
    if isinstance(head, BranchHead):
        known += (head.sha, *(c.sha for c in head.history))
    branch = head.branch if isinstance(head, BranchHead) else site.branch
    return commit_of_image(site, branch, image, known) or recorded


def runs(p: SitePlan, sha: str, image: str) -> bool:
    """Whether commit `sha`, whose image is `image`, is what the site of `p` runs now."""
    if p.running_sha and sha == p.running_sha:
        return True
    return p.current_image is not None and same_image(p.current_image, image)
