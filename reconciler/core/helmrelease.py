"""Pure rules for a site delivered by a Helm release (issue #21). No I/O.

The adapter (reconciler/adapters/helm.py) reads the release with the real `helm` and hands the
answers here: which image the release runs (the values keys the site names, the same
`HelmValues` vocabulary as a values file written back to git), which workloads its manifest
holds, what `--set-string` pairs deploy an image, the description the reconciler writes on each
revision it makes (so `helm history` reads like `kubectl rollout history`), which commits it
rolled back (level-triggered: read back from those descriptions), whether a person changed the
image (a revision it did not write that changed the image value: the hold), and which revision a
failed rollout goes back to.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from reconciler.core.errors import HelmError
from reconciler.core.writeback import HelmValues, ImageRef

PREFIX = "reconciler: "
MAX_DESCRIPTION = 256  # helm refuses longer descriptions (action.MaxDescriptionLength)
LIVE = frozenset({"deployed", "superseded"})  # statuses of revisions that went live
ROLLOUT_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet"})
WORKLOAD_KINDS = ROLLOUT_KINDS | {"ReplicaSet", "Job", "CronJob"}

_DEPLOY = re.compile(
    r"^reconciler: (?P<branch>\S+)@(?P<sha>[0-9a-f]{7,40})(?: \(was (?P<was>[0-9a-f]{7,40})\))?"
)
_ROLLBACK = re.compile(
    r"^reconciler: rollback of (?P<branch>\S+)@(?P<sha>[0-9a-f]{7,40}) to revision (?P<to>\d+)"
)


@dataclass(frozen=True, slots=True)
class ReleaseImage:
    """The image values of a release: each the value of its key, None when the key is unset."""

    repository: str | None = None
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"{self.repository or ''}{tag}{digest}" or "(no image values)"


@dataclass(frozen=True, slots=True)
class Container:
    name: str
    image: str


@dataclass(frozen=True, slots=True)
class Workload:
    """A workload of the release's manifest: kind, namespace/name, and its containers."""

    kind: str
    namespace: str
    name: str
    containers: tuple[Container, ...]
    init_containers: tuple[Container, ...] = ()

    @property
    def followed(self) -> bool:
        """Whether it rolls out (Deployment, StatefulSet, DaemonSet) and can be followed."""
        return self.kind in ROLLOUT_KINDS

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True, slots=True)
class Revision:
    """One revision of `helm history -o json`."""

    number: int
    status: str
    description: str
    updated: str = ""
    chart: str = ""
    app_version: str = ""

    @property
    def ours(self) -> bool:
        return self.description.startswith(PREFIX)


@dataclass(frozen=True, slots=True)
class Upgraded:
    """What `helm upgrade -o json` answered: the revision it made (or would make, on a dry
    run), its status and the rendered manifest."""

    revision: int
    status: str
    description: str
    manifest: str
    dry_run: bool


@dataclass(frozen=True, slots=True)
class Mark:
    """What a description the reconciler wrote says: a deploy of branch@sha (was `previous`), or
    a rollback of branch@sha (a failed commit) to revision `to`."""

    branch: str
    sha: str
    previous: str | None = None
    rollback_to: int | None = None


@dataclass(frozen=True, slots=True)
class PersonChange:
    """A revision the reconciler did not write that changed the image: the site is held. Helm
    records no user, so "who" is the revision and its description (e.g. "Rollback to 2")."""

    revision: int
    description: str
    updated: str
    image: ReleaseImage
    was: ReleaseImage

    @property
    def reason(self) -> str:
        return (
            f"image set to {self.image} (was {self.was}) by revision {self.revision} "
            f'("{self.description}") at {self.updated or "?"}, not by the reconciler'
        )


# ---- values -------------------------------------------------------------------------------


def lookup(values: Mapping[str, Any], dotted: str) -> Any:
    """The value at a dotted key path, None when any part is missing."""
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def release_image(values: Mapping[str, Any], keys: HelmValues) -> ReleaseImage:
    """The image a release runs, from its (computed) values and the keys the site names."""
    return ReleaseImage(
        repository=_text(lookup(values, keys.repository)) if keys.repository else None,
        tag=_text(lookup(values, keys.tag)) if keys.tag else None,
        digest=_text(lookup(values, keys.digest)) if keys.digest else None,
    )


def wanted(keys: HelmValues, image: ImageRef) -> ReleaseImage:
    """The image values that deploy `image` (a digest key is cleared when the image has none,
    so a stale digest never outranks the new tag)."""
    if keys.tag and not image.tag:
        raise HelmError(f"the image {image} has no tag for the values key {keys.tag}")
    if keys.digest is None and keys.tag is None:
        raise HelmError("the site names no values key for the image")
    if keys.tag is None and not image.digest:
        raise HelmError(f"the image {image} has no digest for the values key {keys.digest}")
    return ReleaseImage(
        repository=image.repository if keys.repository else None,
        tag=image.tag if keys.tag else None,
        digest=(image.digest or None) if keys.digest else None,
    )


def set_pairs(
    keys: HelmValues, current: ReleaseImage, target: ReleaseImage
) -> tuple[tuple[str, str], ...]:
    """The `--set-string KEY=VALUE` pairs that take the release from `current` to `target`:
    only the keys whose value changes (empty when the release already runs the target)."""
    pairs: list[tuple[str, str]] = []
    for key, old, new in (
        (keys.repository, current.repository, target.repository),
        (keys.tag, current.tag, target.tag),
        (keys.digest, current.digest, target.digest),
    ):
        if key and old != new:
            pairs.append((key, new or ""))
    return tuple(pairs)


def set_argument(key: str, value: str) -> str:
    """One `--set-string` argument, with helm's separators in the value escaped (strvals reads
    `,` as the next pair and `\\` as an escape)."""
    escaped = value.replace("\\", "\\\\").replace(",", "\\,")
    return f"{key}={escaped}"


# ---- the manifest -------------------------------------------------------------------------


def _containers(items: Any) -> tuple[Container, ...]:
    if not isinstance(items, list):
        return ()
    return tuple(
        Container(str(c.get("name", "")), str(c.get("image", "")))
        for c in items
        if isinstance(c, Mapping)
    )


def _pod_spec(kind: str, doc: Mapping[str, Any]) -> Mapping[str, Any]:
    path = ("spec", "jobTemplate", "spec", "template", "spec") if kind == "CronJob" else None
    spec = lookup(doc, ".".join(path or ("spec", "template", "spec")))
    return spec if isinstance(spec, Mapping) else {}


def workloads(manifest: str, namespace: str) -> tuple[Workload, ...]:
    """The workloads of a release manifest (`helm get manifest`), in manifest order; objects
    without a namespace are in the release's."""
    try:
        docs = list(YAML(typ="safe", pure=True).load_all(manifest))
    except YAMLError as exc:
        raise HelmError(f"the release manifest does not parse: {exc}") from exc
    found: list[Workload] = []
    for doc in docs:
        if not isinstance(doc, Mapping) or doc.get("kind") not in WORKLOAD_KINDS:
            continue
        kind = str(doc["kind"])
        meta = doc.get("metadata") or {}
        spec = _pod_spec(kind, doc)
        found.append(
            Workload(
                kind,
                str(meta.get("namespace") or namespace),
                str(meta.get("name", "")),
                _containers(spec.get("containers")),
                _containers(spec.get("initContainers")),
            )
        )
    return tuple(found)


def touched(before: Sequence[Workload], after: Sequence[Workload]) -> tuple[Workload, ...]:
    """The workloads of `after` whose containers differ from `before` (or that are new): what
    an upgrade rolls out."""
    old = {(w.kind, w.namespace, w.name): w for w in before}
    return tuple(
        w
        for w in after
        if (prev := old.get((w.kind, w.namespace, w.name))) is None
        or (prev.containers, prev.init_containers) != (w.containers, w.init_containers)
    )


# ---- descriptions ---------------------------------------------------------------------------


def _clip(text: str) -> str:
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 1] + "…"


def deploy_description(branch: str, sha: str, previous: str | None = None) -> str:
    """'reconciler: main@3f2c1a9 (was 0a48ebe)': what `helm history` shows for a deploy."""
    was = f" (was {previous[:7]})" if previous else ""
    return _clip(f"{PREFIX}{branch}@{sha[:7]}{was}")


def rollback_description(branch: str, sha: str, to: int, reason: str) -> str:
    """'reconciler: rollback of main@badc0de… to revision 3: <why>': the failed commit, named in
    the release record in full (as much of it as the caller knows), is remembered from it
    (bad_commits): two commits that share a short SHA are never confused."""
    return _clip(f"{PREFIX}rollback of {branch}@{sha} to revision {to}: {reason}")


def mark(description: str) -> Mark | None:
    """What a reconciler-written description says; None for any other description."""
    if m := _ROLLBACK.match(description):
        return Mark(m["branch"], m["sha"], rollback_to=int(m["to"]))
    if m := _DEPLOY.match(description):
        return Mark(m["branch"], m["sha"], previous=m["was"])
    return None


def bad_commits(history: Iterable[Revision]) -> frozenset[str]:
    """The SHAs (full, or as short as an older description wrote them) the reconciler rolled
    back, from its rollback descriptions: never again."""
    return frozenset(
        m.sha for r in history if (m := mark(r.description)) and m.rollback_to is not None
    )


def is_bad(sha: str, bad: Iterable[str]) -> bool:
    return any(sha.startswith(b) or b.startswith(sha) for b in bad)


# ---- holds and rollbacks --------------------------------------------------------------------


def current(history: Sequence[Revision]) -> Revision | None:
    """The deployed revision (the newest one, when none says deployed)."""
    ordered = sorted(history, key=lambda r: r.number)
    deployed = [r for r in ordered if r.status == "deployed"]
    newest = deployed or ordered
    return newest[-1] if newest else None


def hold_revisions(history: Sequence[Revision]) -> tuple[int, ...]:
    """The revisions whose image values person_change needs: none when the deployed revision is
    the reconciler's or it never deployed the release; else its last live revision and the live
    ones after it, up to the deployed one (one `helm get values` each)."""
    now = current(history)
    if now is None or now.ours:
        return ()
    live = [r for r in history if r.number <= now.number and r.status in LIVE]
    ours = [r.number for r in live if r.ours]
    if not ours:
        return ()
    return tuple(sorted(r.number for r in live if r.number >= ours[-1]))


def person_change(
    history: Sequence[Revision],
    images: Mapping[int, ReleaseImage],
    resumed_at: str | None = None,
) -> PersonChange | None:
    """A person's change of the image: the deployed revision is not the reconciler's and its
    image differs from that of the reconciler's last revision before it; the change reported is
    the newest live revision not written by the reconciler that changed the image. None when
    the reconciler never deployed this release (it is adopted, not held), or when the change is
    not newer than `resumed_at` (RFC 3339; an unreadable time never lifts a hold)."""
    now = current(history)
    if now is None or now.ours:
        return None
    live = [r for r in sorted(history, key=lambda r: r.number) if r.number <= now.number]
    ours = [r for r in live if r.ours and r.status in LIVE]
    if not ours or now.number not in images or ours[-1].number not in images:
        return None
    base = ours[-1]
    if images[now.number] == images[base.number]:
        return None
    previous = images[base.number]
    change: PersonChange | None = None
    for r in live:
        if r.number <= base.number or r.status not in LIVE or r.number not in images:
            continue
        if images[r.number] != previous and not r.ours:
            change = PersonChange(r.number, r.description, r.updated, images[r.number], previous)
        previous = images[r.number]
    if change is None:
        return None
    changed, resumed = _instant(change.updated), _instant(resumed_at)
    # whole seconds, as a resume is stamped (and as the Deployment rules compare them): a resume
    # in the same second as the change lifts it
    if changed is not None and resumed is not None and int(changed) <= resumed:
        return None
    return change


def _instant(text: str | None) -> float | None:
    """Seconds since the epoch of an RFC 3339 time: helm writes them in the zone of the machine
    that ran it ("2026-12-07T05:00:00.123456789+02:00"), the reconciler in UTC ("...Z")."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def rollback_target(
    history: Sequence[Revision],
    failed: int,
    images: Mapping[int, ReleaseImage] | None = None,
) -> Revision | None:
    """The revision a failed rollout of revision `failed` goes back to: the newest revision
    before it that went live, is not a deploy of a commit the reconciler rolled back, and (when
    the images are known) runs another image than the failed one."""
    bad = bad_commits(history)
    failed_image = (images or {}).get(failed)
    for r in sorted(history, key=lambda r: r.number, reverse=True):
        if r.number >= failed or r.status not in LIVE:
            continue
        m = mark(r.description)
        if m is not None and m.rollback_to is None and is_bad(m.sha, bad):
            continue
        if images is not None and failed_image is not None and images.get(r.number) == failed_image:
            continue
        return r
    return None
