"""Pure rollout rules: rollout state, who holds the image, rollback/hold patches. No I/O."""

from __future__ import annotations

import calendar
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from reconciler.core import annotations as ann
from reconciler.core.model import (
    CRONJOB,
    DEPLOYMENT,
    DeploymentPatch,
    FieldOwner,
    ImageChange,
    KubeEvent,
    ObservedDeployment,
    Rollout,
    Site,
)

FIELD_MANAGER = "reconciler"

# Container states that mean the new pods will not come up by themselves.
STUCK_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)


def stamp(now: float) -> str:
    """RFC 3339 UTC, whole seconds (fractions ignored), as annotations and messages carry it."""
    return datetime.fromtimestamp(int(now), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> float | None:
    """Seconds since the epoch of an RFC 3339 UTC time as the API server writes it."""
    return _parse_time(value) if value else None


# Every sync reads every workload's times (reconciler.dev/updated-at: serve's per-site metrics,
# holds, soaks): each distinct text parsed once (strptime costs ~25 µs; a fleet's times repeat
# from sync to sync).
@functools.lru_cache(maxsize=65536)
def _parse_time(value: str) -> float | None:
    try:
        parsed = datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None
    return float(calendar.timegm(parsed.timetuple()))


def state(d: ObservedDeployment) -> tuple[Rollout | None, str]:
    """The rollout state from the controller's status, and progress such as "2/3 ready".

    None while no controller has reported on the Deployment. Same rules as
    `kubectl rollout status`: failed on ProgressDeadlineExceeded; progressing until the
    controller has seen the latest spec and every replica is updated and available.
    """
    if d.kind != DEPLOYMENT:  # judged by core.workloads when it was read
        if d.verdict is None:
            return None, ""
        v = d.verdict
        return v.rollout, f"{v.progress} ({v.reason})" if v.reason else v.progress
    s = d.status
    if s is None:
        return None, ""
    progress = f"{s.available}/{s.desired} ready"
    if s.deadline_exceeded:
        return Rollout.FAILED, progress
    if s.observed_generation < d.generation:
        return Rollout.PROGRESSING, progress
    if s.updated < s.desired or s.replicas > s.updated or s.available < s.updated:
        return Rollout.PROGRESSING, f"{min(s.updated, s.available)}/{s.desired} ready"
    return Rollout.AVAILABLE, progress


def timeout(site: Site, d: ObservedDeployment) -> int:
    if site.rollout_timeout is not None:
        return site.rollout_timeout
    return d.status.progress_deadline_seconds if d.status else 600


def owns_image(d: ObservedDeployment, container: str) -> bool:
    owner = d.image_owners.get(container)
    return owner is not None and owner.manager == FIELD_MANAGER


def ours(d: ObservedDeployment, container: str) -> bool:
    """Whether the image now running is one the reconciler set and may roll back."""
    return owns_image(d, container) and bool(d.annotations.get(ann.SHA))


def wants_pods(site: Site, d: ObservedDeployment, container: str, now: float) -> bool:
    """Whether a progressing rollout of ours is old enough that stuck pods would fail it."""
    rollout, _ = state(d)
    if rollout is not Rollout.PROGRESSING or not ours(d, container):
        return False
    if d.kind == CRONJOB or (d.verdict is not None and not d.verdict.timed):
        return False  # a CronJob's Job fails it (backoffLimit); it waits on a person or schedule
    started = parse_time(d.annotations.get(ann.UPDATED_AT))
    return started is not None and now - started >= timeout(site, d)


def failure(d: ObservedDeployment, troubles: tuple[str, ...]) -> str | None:
    """Why the rollout failed, or None: the deadline, or stuck pods of the new image."""
    if d.status is not None and d.status.deadline_exceeded:
        return d.status.message or "ProgressDeadlineExceeded"
    if d.verdict is not None and d.verdict.rollout is Rollout.FAILED:  # a CronJob's Job failed
        return d.verdict.reason or "failed"
    if troubles:
        return "new pods are not coming up: " + "; ".join(troubles[:3])
    return None


@dataclass(frozen=True, slots=True)
class Hold:
    """Why the reconciler leaves a site alone: who, when, and how to resume."""

    by: str
    at: str
    reason: str
    write: DeploymentPatch | None = None  # record the branch head on first sight
    resumes: bool = False  # a manual hold whose branch has moved on


def hold_of(
    site: Site, d: ObservedDeployment, container: str, head_sha: str | None, now: float
) -> Hold | None:
    """An explicit hold, or a person's (another manager's) change of the managed image."""
    notes = d.annotations
    if ann.HOLD in notes:
        by, at = notes.get(ann.HOLD_BY, "someone"), notes.get(ann.HOLD_AT, "")
        why = notes[ann.HOLD] or "held"
        return Hold(
            by,
            at,
            f"held by {by} at {at or '?'}: {why}; `reconciler resume {site.name}` lifts it",
        )
    owner = d.image_owners.get(container)
    if owner is None or owner.manager == FIELD_MANAGER or not managed(d):
        return None
    if site.git is not None:  # the GitOps tool sets every image: the repository tells (gitops)
        return None
    changed = parse_time(owner.time)
    resumed = parse_time(notes.get(ann.RESUMED_AT))
    if resumed is not None and (changed is None or changed <= resumed):
        return None
    image = d.image_of(container) or "?"
    held_head = notes.get(ann.HELD_HEAD)
    what = f"image set to {image} by {owner.manager} ({owner.operation}) at {owner.time or '?'}"
    if held_head and head_sha and head_sha != held_head:
        return Hold(owner.manager, owner.time, what, resumes=True)
    write = None
    if not held_head and head_sha:
        write = DeploymentPatch(
            d.namespace,
            d.name,
            {ann.HELD_HEAD: head_sha},
            events=(
                KubeEvent(
                    "Normal",
                    "Held",
                    f"{what}; the reconciler leaves it until {site.repo} moves past "
                    f"{head_sha[:7]} or `reconciler resume {site.name}`",
                ),
            ),
            resource_version=d.resource_version,
            kind=d.kind,
        )
    since = (held_head or head_sha or "")[:7]
    until = f"a commit after {since} lands" if since else "the branch moves"
    return Hold(
        owner.manager,
        owner.time,
        f"{what}; held until {until} or `reconciler resume {site.name}`",
        write=write,
    )


def managed(d: ObservedDeployment) -> bool:
    """Whether the reconciler has ever set this Deployment's image (else it is adopted, not held):
    every image it sets leaves one of these annotations (field ownership alone does not tell, as
    it also writes annotations of Deployments it has not deployed to)."""
    return any(k in d.annotations for k in (ann.SHA, ann.PREVIOUS_IMAGE, ann.FAILED_SHA, ann.HOLD))


@dataclass(frozen=True, slots=True)
class Rollback:
    """What a rollback writes, whatever the workload's kind: the image recorded before the failed
    change, the annotations that remember the failed commit, the change-cause and the Events."""

    image: str
    annotations: dict[str, str | None]
    change_cause: str
    events: tuple[KubeEvent, ...]


def previous_image(notes: Mapping[str, str], container: str | None) -> str | None:
    """The image `container` ran before the reconciler's last change of it: its own record,
    else the workload's (written before there was one per container)."""
    own = notes.get(ann.previous_image_of(container)) if container else None
    return own or notes.get(ann.PREVIOUS_IMAGE) or None


def rollback_of(
    notes: Mapping[str, str], repo: str, container: str, current: str, *, why: str, now: float
) -> Rollback | None:
    """The rollback of a workload annotated ``notes`` whose ``container`` runs ``current``;
    None without a recorded previous image."""
    previous = previous_image(notes, container)
    if not previous:
        return None
    bad = notes.get(ann.SHA, "")
    previous_sha = notes.get(ann.PREVIOUS_SHA) or None
    was = (previous_sha or "")[:7] or previous
    return Rollback(
        previous,
        {
            ann.SHA: previous_sha,
            ann.UPDATED_AT: stamp(now),
            ann.PREVIOUS_IMAGE: None,
            ann.previous_image_of(container): None,
            ann.PREVIOUS_SHA: None,
            ann.FAILED_SHA: bad,
            ann.FAILED_REASON: why[:500],
            ann.FAILED_AT: stamp(now),
        },
        f"reconciler: rolled back {repo} {bad[:7]} -> {was} (rollout failed)",
        (
            KubeEvent("Warning", "RolloutFailed", f"{current} ({bad[:7]}): {why}"[:1024]),
            KubeEvent("Normal", "RolledBack", f"container {container}: {current} -> {previous}"),
        ),
    )


def rollback_patch(
    site: Site, d: ObservedDeployment, container: str, why: str, now: float
) -> DeploymentPatch | None:
    """Back to the image recorded before the failed change; the failed commit is remembered."""
    current = d.image_of(container) or ""
    back = rollback_of(d.annotations, site.repo, container, current, why=why, now=now)
    if back is None:
        return None
    return DeploymentPatch(
        d.namespace,
        d.name,
        back.annotations,
        container=container,
        image=back.image,
        change_cause=back.change_cause,
        events=back.events,
        resource_version=d.resource_version,
        kind=d.kind,
        init=d.is_init(container),
    )


def update_patch(change: ImageChange, now: float) -> DeploymentPatch:
    """The DeploymentPatch of one image update: the image and where it came from."""
    return DeploymentPatch(
        change.namespace,
        change.deployment,
        update_annotations(change, now),
        container=change.container,
        image=change.image,
        change_cause=(
            f"reconciler: {change.repo}@{change.branch} {change.sha[:7]} "
            f"({change.container}={_readable(change.image)})"
        ),
        events=(
            KubeEvent(
                "Normal",
                "ImageUpdated",
                f"container {change.container}: {change.previous_image} -> {change.image} "
                f"({change.repo}@{change.branch} {change.sha[:7]})",
            ),
        ),
        resource_version=change.resource_version,
        kind=change.kind,
        init=change.init,
    )


def _readable(image: str) -> str:
    """An image for `kubectl rollout history`: a pinned digest cut to 12 hex digits."""
    name, at, digest = image.partition("@")
    algorithm, _, hexdigest = digest.partition(":")
    return f"{name}@{algorithm}:{hexdigest[:12]}" if at and hexdigest else image


def update_annotations(change: ImageChange, now: float) -> dict[str, str | None]:
    """What an image update records: where the image came from and what it replaced."""
    notes: dict[str, str | None] = {
        ann.REPO: change.repo,
        ann.BRANCH: change.branch,
        ann.SHA: change.sha,
        ann.UPDATED_AT: stamp(now),
        ann.TRIGGER: change.trigger[:100] or None,
        ann.PREVIOUS_IMAGE: change.previous_image or None,
        ann.previous_image_of(change.container): change.previous_image or None,
        ann.PREVIOUS_SHA: change.previous_sha or None,
    }
    notes.update(change.notes)
    for key in change.clear:
        notes[key] = None
    return notes


def hold_patch(d: ObservedDeployment, by: str, reason: str, now: float) -> DeploymentPatch:
    why = reason or "held"
    return DeploymentPatch(
        d.namespace,
        d.name,
        {ann.HOLD: why, ann.HOLD_BY: by, ann.HOLD_AT: stamp(now)},
        events=(KubeEvent("Normal", "Held", f"held by {by}: {why}"[:1024]),),
        resource_version=d.resource_version,
        kind=d.kind,
    )


def resume_patch(d: ObservedDeployment, by: str, now: float) -> DeploymentPatch:
    notes: dict[str, str | None] = dict.fromkeys(ann.HOLD_KEYS)
    notes[ann.RESUMED_AT] = stamp(now)
    return DeploymentPatch(
        d.namespace,
        d.name,
        notes,
        events=(KubeEvent("Normal", "Resumed", f"resumed by {by}"),),
        resource_version=d.resource_version,
        kind=d.kind,
    )


def manual_rollback_patch(
    site: Site,
    d: ObservedDeployment,
    *,
    container: str,
    image: str,
    sha: str | None,
    by: str,
    now: float,
) -> DeploymentPatch:
    """`reconciler rollback`: deploy an earlier image and hold the site there."""
    current = d.image_of(container) or ""
    notes = d.annotations
    target = sha[:7] if sha else image
    return DeploymentPatch(
        d.namespace,
        d.name,
        {
            ann.SHA: sha,
            ann.UPDATED_AT: stamp(now),
            ann.PREVIOUS_IMAGE: current or None,
            ann.previous_image_of(container): current or None,
            ann.PREVIOUS_SHA: notes.get(ann.SHA) or None,
            ann.HOLD: f"rolled back to {target}",
            ann.HOLD_BY: by,
            ann.HOLD_AT: stamp(now),
            ann.HELD_HEAD: None,
            ann.TRIGGER: f"{by} (rollback command)"[:100],
        },
        container=container,
        image=image,
        change_cause=f"reconciler: rolled back {site.repo} to {target} by {by}",
        events=(
            KubeEvent(
                "Normal", "RolledBack", f"by {by}: container {container}: {current} -> {image}"
            ),
        ),
        resource_version=d.resource_version,
        kind=d.kind,
        init=d.is_init(container),
    )


def image_owners(managed_fields: Sequence[Mapping[str, object]]) -> dict[str, FieldOwner]:
    """Which manager owns each container's (and init container's: names are unique in a pod)
    image, from managedFields (Update or Apply entries)."""
    owners: dict[str, FieldOwner] = {}
    for entry in managed_fields:
        if entry.get("subresource"):
            continue
        fields = entry.get("fieldsV1")
        pod = _dig(fields, "f:spec", "f:template", "f:spec")
        if not isinstance(pod, Mapping):
            continue
        both = (pod.get("f:containers"), pod.get("f:initContainers"))
        lists = [c for c in both if isinstance(c, Mapping)]
        for key, value in (item for c in lists for item in c.items()):
            if not (isinstance(key, str) and key.startswith('k:{"name":')):
                continue
            if isinstance(value, Mapping) and "f:image" in value:
                name = key[len('k:{"name":"') : -len('"}')]
                owners[name] = FieldOwner(
                    str(entry.get("manager", "")),
                    str(entry.get("operation", "")),
                    str(entry.get("time", "")),
                )
    return owners


def _dig(value: object, *keys: str) -> object:
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def merge(patches: Sequence[DeploymentPatch]) -> DeploymentPatch:
    """One write of several patches of one workload (a release's containers and init
    containers): every image they set, the annotations of the first that sets each (the
    commit is the release's; each container's previous image has a key of its own), their
    Events and change-causes; guarded by the first's resourceVersion."""
    first = patches[0]
    if len(patches) == 1:
        return first
    notes: dict[str, str | None] = {}
    for p in patches:
        for key, value in p.annotations.items():
            notes.setdefault(key, value)
    causes = [p.change_cause for p in patches if p.change_cause]
    return DeploymentPatch(
        first.namespace,
        first.deployment,
        notes,
        container=first.container,
        image=first.image,
        change_cause="; ".join(dict.fromkeys(causes))[:250] or None,
        events=tuple(e for p in patches for e in p.events),
        resource_version=first.resource_version,
        kind=first.kind,
        init=first.init,
        also=tuple(i for p in patches[1:] for i in p.images),
    )
