"""Rollout rules of the other workload kinds (pure): StatefulSet, DaemonSet and CronJob.

Each judges the object as the API server returns it (a plain dict: ``metadata``, ``spec``,
``status``) and, for failures, its pods, into the vocabulary core/rollout.py uses for
Deployments: a Verdict of progressing / available / failed (None while no controller has
reported), the progress such as "2/3 ready", and the reason text. The rules:

- **StatefulSet** (those of ``kubectl rollout status``, plus the revisions): nothing until the
  controller has reported (``observedGeneration``); progressing until it has seen the latest
  spec (``observedGeneration >= generation``), every replica is ready, ``updatedReplicas``
  reaches ``replicas`` and ``updateRevision == currentRevision``; then available.
- StatefulSet ``partition`` N > 0: the pods below ordinal N keep the previous revision by
  design, so the rollout is available once the ``replicas - N`` updated pods are and every
  replica is ready, "partitioned at N" (never failed for the pods it holds back).
- StatefulSet (or DaemonSet) ``OnDelete``: the controller replaces no pod by itself; until a
  person deletes the old ones the rollout is progressing, "waiting for pods to be replaced",
  and never failed by the rollout timeout.
- **DaemonSet**: progressing until ``observedGeneration`` caught up, ``updatedNumberScheduled
  == desiredNumberScheduled`` and ``numberAvailable == desiredNumberScheduled``; then available.
- Failure of a StatefulSet or DaemonSet (neither has a progress deadline): a progressing
  rollout at least ``timeout`` seconds old whose new pods (those running the template's images)
  wait in CrashLoopBackOff, ImagePullBackOff or another of rollout.STUCK_REASONS.
- **CronJob**: the rollout is the first Job created from the current template (its pod
  template runs the CronJob's images; not older than the ``updated-at`` the reconciler wrote):
  condition Complete → available, condition Failed (``backoffLimit`` reached, deadline) →
  failed with the Job's reason; running → progressing, failed like the kinds above when its
  pods are stuck past the timeout. No such Job yet: "suspended" when ``spec.suspend``, else
  "waiting for the next schedule at HH:MM" (the schedule in ``spec.timeZone``, default UTC);
  neither is failed by the timeout.

The pod template lives at ``spec.template`` (Deployment, StatefulSet, DaemonSet) or at
``spec.jobTemplate.spec.template`` (CronJob): template_path(). History comes from the
ControllerRevisions a StatefulSet or DaemonSet owns, and from the Jobs a CronJob owns
(revisions()); rollback_patch() sets the image recorded before the failed change back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from reconciler.core import annotations as ann
from reconciler.core.model import (
    CRONJOB,
    DAEMONSET,
    DEPLOYMENT,
    KINDS,
    STATEFULSET,
    FieldOwner,
    KubeEvent,
    ObservedDeployment,
    Rollout,
    WorkloadVerdict,
)
from reconciler.core.rollout.history import Deploy
from reconciler.core.rollout.state import (
    STUCK_REASONS,
    image_owners,
    parse_time,
    rollback_of,
)
from reconciler.core.rollout.state import state as rollout_state
from reconciler.core.windows import cron_next

__all__ = [
    "CRONJOB",
    "DAEMONSET",
    "DEPLOYMENT",
    "KINDS",
    "STATEFULSET",
    "Revision",
    "Verdict",
    "WorkloadPatch",
    "deploys",
    "first_job",
    "image_body",
    "images",
    "judge",
    "kind_image_owners",
    "revisions",
    "rollback_patch",
    "state",
    "stuck_pods",
    "template_path",
]


Obj = Mapping[str, Any]


Verdict = WorkloadVerdict  # the one value of a workload's rollout (core.model)


@dataclass(frozen=True, slots=True)
class Revision:
    """One entry of a workload's history: a ControllerRevision, or a Job of a CronJob."""

    number: int  # the ControllerRevision's revision; for Jobs, 1 = the oldest
    name: str
    images: Mapping[str, str]  # container name → image
    created: str
    sha: str | None = None  # reconciler.dev/sha recorded on the Job (its jobTemplate's)
    outcome: str = ""  # Jobs: succeeded | failed | running


@dataclass(frozen=True, slots=True)
class WorkloadPatch:
    """A strategic-merge patch of one workload (its kind's path to the pod template), the
    Events to record on it, guarded by the resourceVersion it was planned against."""

    kind: str
    namespace: str
    name: str
    body: Mapping[str, Any]
    events: tuple[KubeEvent, ...] = ()


# --- where things are ------------------------------------------------------------------------


def template_path(kind: str) -> tuple[str, ...]:
    """The path of the pod template in an object of `kind` (ValueError for other kinds)."""
    if kind == CRONJOB:
        return ("spec", "jobTemplate", "spec", "template")
    if kind in KINDS:
        return ("spec", "template")
    raise ValueError(f"unknown workload kind {kind!r}; one of {', '.join(KINDS)}")


def _dig(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _pod_images(pod_spec: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for field in ("initContainers", "containers"):
        for c in _dig(pod_spec, field) or ():
            if isinstance(c, Mapping) and c.get("name"):
                out[str(c["name"])] = str(c.get("image", ""))
    return out


def images(kind: str, obj: Obj) -> dict[str, str]:
    """Container (and init container) name → image of the object's pod template."""
    return _pod_images(_dig(obj, *template_path(kind), "spec"))


def kind_image_owners(
    kind: str, managed_fields: Sequence[Mapping[str, Any]]
) -> dict[str, FieldOwner]:
    """Who owns each container's image (rollout.image_owners), at the kind's template path."""
    path = template_path(kind)
    if path == ("spec", "template"):
        return image_owners(managed_fields)
    lifted = [
        {**e, "fieldsV1": {"f:spec": {"f:template": _dig(e.get("fieldsV1"), *_f(path))}}}
        for e in managed_fields
    ]
    return image_owners(lifted)


def _f(path: tuple[str, ...]) -> tuple[str, ...]:
    return tuple("f:" + p for p in path)


# --- state -----------------------------------------------------------------------------------


def _generation_seen(obj: Obj) -> bool:
    observed = _dig(obj, "status", "observedGeneration") or 0
    return bool(observed >= (_dig(obj, "metadata", "generation") or 0))


def _statefulset(obj: Obj) -> Verdict:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if not status.get("observedGeneration"):
        return Verdict(None)
    replicas = int(spec.get("replicas", 1))
    ready, updated = status.get("readyReplicas") or 0, status.get("updatedReplicas") or 0
    strategy = spec.get("updateStrategy") or {}
    partition = int(_dig(strategy, "rollingUpdate", "partition") or 0)
    target = max(replicas - partition, 0)
    progress = f"{min(ready, updated)}/{target} ready"
    if not _generation_seen(obj):
        return Verdict(
            Rollout.PROGRESSING, progress, "waiting for the controller to see the change"
        )
    same = status.get("updateRevision") == status.get("currentRevision")
    if strategy.get("type") == "OnDelete":
        if same and updated >= replicas and ready >= replicas:
            return Verdict(Rollout.AVAILABLE, f"{ready}/{replicas} ready")
        why = f"waiting for pods to be replaced (OnDelete): {updated}/{replicas} updated"
        return Verdict(Rollout.PROGRESSING, f"{min(ready, updated)}/{replicas} ready", why, False)
    if partition > 0:
        why = f"partitioned at {partition}: {updated}/{target} updated"
        if updated < target or ready < replicas:
            return Verdict(Rollout.PROGRESSING, progress, why)
        return Verdict(Rollout.AVAILABLE, progress, f"partitioned at {partition}")
    if ready < replicas:
        return Verdict(
            Rollout.PROGRESSING, progress, f"waiting for {replicas - ready} pods to be ready"
        )
    if updated < replicas or not same:
        why = f"waiting for the rolling update: {updated}/{replicas} pods at the new revision"
        return Verdict(Rollout.PROGRESSING, progress, why)
    return Verdict(Rollout.AVAILABLE, f"{ready}/{replicas} ready")


def _daemonset(obj: Obj) -> Verdict:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if "observedGeneration" not in status:
        return Verdict(None)
    desired = status.get("desiredNumberScheduled") or 0
    updated = status.get("updatedNumberScheduled") or 0
    available = status.get("numberAvailable") or 0
    progress = f"{min(updated, available)}/{desired} ready"
    if not _generation_seen(obj):
        return Verdict(
            Rollout.PROGRESSING, progress, "waiting for the controller to see the change"
        )
    if updated >= desired and available >= desired:
        return Verdict(Rollout.AVAILABLE, f"{available}/{desired} ready")
    if _dig(spec, "updateStrategy", "type") == "OnDelete":
        why = f"waiting for pods to be replaced (OnDelete): {updated}/{desired} updated"
        return Verdict(Rollout.PROGRESSING, progress, why, False)
    if updated < desired:
        return Verdict(Rollout.PROGRESSING, progress, f"{updated}/{desired} updated")
    return Verdict(Rollout.PROGRESSING, progress, f"{available}/{desired} available")


def _created(obj: Obj) -> float:
    return parse_time(_dig(obj, "metadata", "creationTimestamp")) or 0.0


def _owned(owner: Obj, items: Sequence[Obj]) -> list[Obj]:
    """The items `owner` owns (by uid); all of them when the owner has no uid (a bare spec)."""
    uid = _dig(owner, "metadata", "uid")
    if not uid:
        return list(items)
    return [
        i
        for i in items
        if any(r.get("uid") == uid for r in _dig(i, "metadata", "ownerReferences") or ())
    ]


def _condition(obj: Obj, kind: str) -> Mapping[str, Any] | None:
    for c in _dig(obj, "status", "conditions") or ():
        if c.get("type") == kind and c.get("status") == "True":
            return c  # type: ignore[no-any-return]
    return None


def first_job(cronjob: Obj, jobs: Sequence[Obj]) -> Obj | None:
    """The first Job created from the CronJob's current template (not older than the image
    change the reconciler recorded), or None."""
    want = images(CRONJOB, cronjob)
    since = parse_time(_dig(cronjob, "metadata", "annotations", ann.UPDATED_AT))
    mine = [
        j
        for j in _owned(cronjob, jobs)
        if _pod_images(_dig(j, "spec", "template", "spec")) == want
        and (since is None or _created(j) >= since)
    ]
    return min(mine, key=lambda j: (_created(j), _dig(j, "metadata", "name") or ""), default=None)


def _cronjob(cronjob: Obj, jobs: Sequence[Obj], now: float) -> Verdict:
    job = first_job(cronjob, jobs)
    if job is None:
        if _dig(cronjob, "spec", "suspend"):
            return Verdict(Rollout.PROGRESSING, "no job yet", "suspended", False)
        return Verdict(Rollout.PROGRESSING, "no job yet", _next_schedule(cronjob, now), False)
    name = _dig(job, "metadata", "name") or "?"
    status = job.get("status") or {}
    completions = _dig(job, "spec", "completions") or 1
    progress = f"{status.get('succeeded') or 0}/{completions} succeeded"
    if _condition(job, "Complete"):
        return Verdict(Rollout.AVAILABLE, progress, f"job {name} succeeded")
    failed = _condition(job, "Failed")
    if failed:
        why = f"job {name} failed: {failed.get('reason') or 'Failed'}"
        if failed.get("message"):
            why += f" ({failed['message']})"
        return Verdict(Rollout.FAILED, progress, why)
    return Verdict(Rollout.PROGRESSING, progress, f"job {name} running")


def _next_schedule(cronjob: Obj, now: float) -> str:
    """ "waiting for the next schedule at HH:MM ZONE" (with the date when it is not today)."""
    schedule = str(_dig(cronjob, "spec", "schedule") or "").strip()
    zone_name = _dig(cronjob, "spec", "timeZone") or "UTC"
    for prefix in ("CRON_TZ=", "TZ="):  # the legacy form: the zone inside the schedule
        if schedule.startswith(prefix):
            zone_name, _, schedule = schedule[len(prefix) :].partition(" ")
    try:
        zone = ZoneInfo(zone_name)
        wall = datetime.fromtimestamp(now, UTC).astimezone(zone).replace(tzinfo=None)
        nxt = cron_next(schedule, wall)
    except (ValueError, ZoneInfoNotFoundError) as exc:
        return f"waiting for the next schedule ({schedule!r} in {zone_name}: {exc})"
    at = nxt.strftime("%H:%M") if nxt.date() == wall.date() else nxt.strftime("%Y-%m-%d %H:%M")
    return f"waiting for the next schedule at {at} {zone_name}"


def state(kind: str, obj: Obj, jobs: Sequence[Obj] = (), now: float = 0.0) -> Verdict:
    """The rollout of a StatefulSet, DaemonSet or CronJob (`jobs`: the Jobs in its namespace;
    `now`: seconds since the epoch, for the next schedule), by the rules above."""
    if kind == STATEFULSET:
        return _statefulset(obj)
    if kind == DAEMONSET:
        return _daemonset(obj)
    if kind == CRONJOB:
        return _cronjob(obj, jobs, now)
    raise ValueError(f"{kind!r}: core/rollout.py judges Deployments; this, {', '.join(KINDS[1:])}")


# --- failure ---------------------------------------------------------------------------------


def stuck_pods(want: Mapping[str, str], pods: Sequence[Obj]) -> tuple[str, ...]:
    """Why the pods running the images `want` are stuck: per pod, a container or an init
    container (which keeps the pod Pending: Init:CrashLoopBackOff) waiting with one of
    rollout.STUCK_REASONS (the same words as for a Deployment's pods)."""
    out = []
    for pod in pods:
        have = _pod_images(pod.get("spec"))
        if not want or any(have.get(name) != image for name, image in want.items()):
            continue
        fields = ("initContainerStatuses", "containerStatuses")
        for cs in (cs for f in fields for cs in _dig(pod, "status", f) or ()):
            reason = _dig(cs, "state", "waiting", "reason")
            if reason in STUCK_REASONS:
                name = _dig(pod, "metadata", "name") or "?"
                out.append(f"pod {name}: {reason} ({cs.get('restartCount') or 0} restarts)")
    return tuple(out)


def judge(
    kind: str,
    obj: Obj,
    *,
    pods: Sequence[Obj] = (),
    jobs: Sequence[Obj] = (),
    now: float,
    timeout: float,
    started: float | None = None,
) -> Verdict:
    """state(), failed when it has been progressing for `timeout` seconds or more (since
    `started`, else the ``updated-at`` the reconciler wrote) with stuck new pods (`pods`: those
    of its namespace; only the workload's own count, or those of a CronJob's first new Job).
    Without a start time it is never failed by pods."""
    verdict = state(kind, obj, jobs, now)
    if verdict.rollout is not Rollout.PROGRESSING or not verdict.timed:
        return verdict
    since = started
    if since is None:
        since = parse_time(_dig(obj, "metadata", "annotations", ann.UPDATED_AT))
    if since is None or now - since < timeout:
        return verdict
    owner = first_job(obj, jobs) if kind == CRONJOB else obj
    troubles = stuck_pods(images(kind, obj), _owned(owner or {}, pods))
    if not troubles:
        return verdict
    why = "new pods are not coming up: " + "; ".join(troubles[:3])
    return Verdict(Rollout.FAILED, verdict.progress, why)


# --- history and rollback --------------------------------------------------------------------


def _job_outcome(job: Obj) -> str:
    if _condition(job, "Complete"):
        return "succeeded"
    if _condition(job, "Failed"):
        return "failed"
    return "running"


def revisions(kind: str, obj: Obj, records: Sequence[Obj]) -> tuple[Revision, ...]:
    """The workload's history, oldest first: the ControllerRevisions a StatefulSet or DaemonSet
    owns (`records`: those of its namespace), or the Jobs a CronJob owns (numbered 1.. by
    creation; the sha is the reconciler.dev/sha its jobTemplate carried)."""
    owned = _owned(obj, records)
    if kind == CRONJOB:
        jobs = sorted(owned, key=lambda j: (_created(j), _dig(j, "metadata", "name") or ""))
        return tuple(
            Revision(
                n,
                _dig(j, "metadata", "name") or "",
                _pod_images(_dig(j, "spec", "template", "spec")),
                _dig(j, "metadata", "creationTimestamp") or "",
                _dig(j, "metadata", "annotations", ann.SHA),
                _job_outcome(j),
            )
            for n, j in enumerate(jobs, start=1)
        )
    if kind not in (STATEFULSET, DAEMONSET):
        raise ValueError(f"{kind!r} has no ControllerRevisions; ReplicaSets are a Deployment's")
    out = [
        Revision(
            int(r.get("revision") or 0),
            _dig(r, "metadata", "name") or "",
            _pod_images(_dig(r, "data", "spec", "template", "spec")),
            _dig(r, "metadata", "creationTimestamp") or "",
        )
        for r in owned
    ]
    return tuple(sorted(out, key=lambda r: r.number))


def _nest(path: tuple[str, ...], leaf: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = dict(leaf)
    for key in reversed(path):
        out = {key: out}
    return out


def image_body(
    kind: str,
    container: str,
    image: str,
    annotations: Mapping[str, str | None],
    *,
    init: bool = False,
    resource_version: str = "",
) -> dict[str, Any]:
    """The strategic-merge patch that sets one container's image at the kind's template path
    (containers merge by name) and the object's annotations (None removes one)."""
    field = "initContainers" if init else "containers"
    body = _nest((*template_path(kind), "spec"), {field: [{"name": container, "image": image}]})
    meta: dict[str, Any] = {"annotations": dict(annotations)}
    if resource_version:
        meta["resourceVersion"] = resource_version
    body["metadata"] = meta
    return body


def rollback_patch(
    kind: str, obj: Obj, container: str, why: str, now: float, *, repo: str = ""
) -> WorkloadPatch | None:
    """Back to the image recorded before the failed change (``previous-image``), the failed
    commit remembered, at the kind's template path; None without a recorded image."""
    notes = _dig(obj, "metadata", "annotations") or {}
    current = images(kind, obj).get(container, "")
    back = rollback_of(notes, repo, container, current, why=why, now=now)
    if back is None:
        return None
    init_containers = _dig(obj, *template_path(kind), "spec", "initContainers") or ()
    init = any(c.get("name") == container for c in init_containers)
    body = image_body(
        kind,
        container,
        back.image,
        {**back.annotations, ann.CHANGE_CAUSE: back.change_cause},
        init=init,
        resource_version=_dig(obj, "metadata", "resourceVersion") or "",
    )
    return WorkloadPatch(
        kind,
        _dig(obj, "metadata", "namespace") or "",
        _dig(obj, "metadata", "name") or "",
        body,
        back.events,
    )


def deploys(d: ObservedDeployment, container: str, history: Sequence[Revision]) -> list[Deploy]:
    """A StatefulSet's, DaemonSet's or CronJob's deploys, newest first, as a Deployment's are
    told (core.rollout.history.Deploy): the commit is one its annotations name (sha, previous,
    failed) whose SHA the revision's image carries, else the one a Job recorded; the newest
    revision running the template's image is the running one; a CronJob's Jobs say how they
    ended."""
    notes = d.annotations
    known = [s for s in (notes.get(ann.SHA), notes.get(ann.PREVIOUS_SHA)) if s]
    failed = notes.get(ann.FAILED_SHA)
    known += [failed] if failed else []
    current = next(
        (c.image for c in (*d.containers, *d.init_containers) if c.name == container), ""
    )
    state, progress = rollout_state(d)
    out: list[Deploy] = []
    running_seen = False
    for r in sorted(history, key=lambda r: r.number, reverse=True):
        image = r.images.get(container, "")
        sha = r.sha or next((s for s in known if s[:7] in image), None)
        if d.kind == CRONJOB:
            outcome = f"job {r.name} {r.outcome}"
        elif image == current and not running_seen:
            running_seen = True
            outcome = f"running: {state.value} {progress}".strip() if state else "running"
        else:
            outcome = "replaced"
        if sha and sha == failed:
            outcome += ", rolled back"
        by = "reconciler" if sha else "a person or another tool"
        out.append(Deploy(r.number, r.created, image, sha, by, outcome))
    return out
