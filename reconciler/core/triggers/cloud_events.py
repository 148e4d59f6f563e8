"""Google Cloud events carried by Pub/Sub → Hints (pure): Cloud Build builds, registry pushes.

- Cloud Build (topic ``cloud-builds``): data is the Build resource as JSON. A ``SUCCESS`` build
  syncs the sites its substitutions name (``REPO_FULL_NAME`` or ``REPO_NAME``, and
  ``BRANCH_NAME`` when present) and the sites one of whose images (``results.images[].name``)
  their image template can render; when the build names its branch (``BRANCH_NAME``), only
  the sites following that branch (or the default branch: not known here). Any other state is
  ignored.
- Artifact Registry / Container Registry (topic ``gcr``): data is
  ``{"action": "INSERT"|"DELETE", "digest": ..., "tag": ...}``. An ``INSERT`` whose tag one of
  the sites' templates can render syncs those sites; a ``DELETE`` of such a tag is reported on
  them, never deployed; untagged pushes and images no site uses are ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from reconciler.core.model import Site
from reconciler.core.plan.template import pattern
from reconciler.core.triggers import jsontext
from reconciler.core.triggers.hints import Hint, Outcome, follows

__all__ = ["BUILD_EVENT", "GCR_EVENT", "classify_build", "classify_gcr", "sites_for_image"]

BUILD_EVENT = "cloud-build"
GCR_EVENT = "gcr"


def sites_for_image(sites: Iterable[Site], image: str) -> frozenset[str]:
    """The sites whose image template (for their repo and branch) can render ``image``."""
    return frozenset(
        s.name
        for s in sites
        if pattern(s.image, owner=s.owner, repo=s.repo_name, branch=s.branch).fullmatch(image)
    )


def classify_build(data: bytes, attributes: Mapping[str, str], sites: Iterable[Site]) -> Hint:
    """The Hint for one Cloud Build notification."""
    sites = tuple(sites)
    doc = _json_object(data)
    if doc is None:
        return Hint(BUILD_EVENT, Outcome.MALFORMED, "data is not a JSON object (a Build)")
    status = doc.get("status") or attributes.get("status")
    build = str(doc.get("id") or attributes.get("buildId") or "?")
    if not isinstance(status, str):
        return Hint(BUILD_EVENT, Outcome.MALFORMED, f"build {build} has no status")
    if status != "SUCCESS":
        return Hint(BUILD_EVENT, Outcome.IGNORED, f"build {build} is {status}")
    subs = doc.get("substitutions")
    subs = subs if isinstance(subs, dict) else {}
    names = set(_named_by_substitutions(subs, sites))
    branch = subs.get("BRANCH_NAME")
    if isinstance(branch, str) and branch:  # the build names its branch: only its followers
        sites = tuple(s for s in sites if s.branch in (None, branch))
    results = doc.get("results")
    images = results.get("images") if isinstance(results, dict) else None
    for entry in images if isinstance(images, list) else ():
        name = entry.get("name") if isinstance(entry, dict) else None
        if isinstance(name, str):
            names |= sites_for_image(sites, name)
    commit = subs.get("COMMIT_SHA")
    what = f"build {build} succeeded" + (f" for {commit[:7]}" if isinstance(commit, str) else "")
    if not names:
        return Hint(BUILD_EVENT, Outcome.IGNORED, f"{what}: no site builds from it")
    return Hint(BUILD_EVENT, Outcome.SYNC, what, frozenset(names))


def _named_by_substitutions(subs: Mapping[str, Any], sites: tuple[Site, ...]) -> frozenset[str]:
    full, short, branch = (subs.get(k) for k in ("REPO_FULL_NAME", "REPO_NAME", "BRANCH_NAME"))
    branch = branch if isinstance(branch, str) and branch else None
    if isinstance(full, str) and "/" in full:
        return follows(sites, full, branch, None)
    if isinstance(short, str) and short:
        if "/" in short:  # some triggers put owner/name here
            return follows(sites, short, branch, None)
        same = [s for s in sites if s.repo_name.lower() == short.lower()]
        return frozenset().union(*(follows([s], s.repo, branch, None) for s in same))
    return frozenset()


def classify_gcr(data: bytes, sites: Iterable[Site]) -> Hint:
    """The Hint for one Artifact Registry (or Container Registry) notification."""
    doc = _json_object(data)
    if doc is None:
        return Hint(GCR_EVENT, Outcome.MALFORMED, "data is not a JSON object")
    action, tag = doc.get("action"), doc.get("tag")
    if action not in ("INSERT", "DELETE"):
        return Hint(GCR_EVENT, Outcome.MALFORMED, f"unknown action {action!r}")
    if not isinstance(tag, str) or not tag:
        return Hint(GCR_EVENT, Outcome.IGNORED, f"{action} of an untagged image")
    names = sites_for_image(sites, tag)
    if not names:
        return Hint(GCR_EVENT, Outcome.IGNORED, f"{action} {tag}: no site runs this image")
    if action == "DELETE":
        reason = f"image {tag} was deleted; its sites keep what they run"
        return Hint(GCR_EVENT, Outcome.REPORTED, reason, names)
    return Hint(GCR_EVENT, Outcome.SYNC, f"image {tag} was pushed", names)


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        doc = jsontext.decode(data)
    except ValueError:  # not UTF-8, not JSON, nested too deeply
        return None
    return doc if isinstance(doc, dict) else None
