"""The verdict for a site delivered by a Helm release (issue #21): pure, over what the helm
delivery read (reconciler/sync/helmdelivery.py), with the planner's actions and vocabulary.

What the release says (core/helmrelease.py): the image its values carry, the reconciler's own
revisions (their descriptions name the commit), the commits it rolled back (never again), a
person's `helm upgrade`/`helm rollback` that changed the image (the hold). What the cluster says:
the rollout of the release's workloads, by the rules of their kind, and the reconciler's notes
(an explicit hold, a resume, what was last notified) on the release's Deployment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from reconciler.core import annotations as ann
from reconciler.core.errors import ErrorKind, HelmError
from reconciler.core.helmrelease import (
    ReleaseImage,
    Revision,
    Workload,
    bad_commits,
    is_bad,
    mark,
    person_change,
    rollback_target,
    set_pairs,
    wanted,
)
from reconciler.core.model import (
    DEPLOYMENT,
    Action,
    BranchHead,
    HeadError,
    HeadResult,
    HelmSpec,
    ObservedDeployment,
    Rollout,
    Site,
    SitePlan,
    Skip,
)
from reconciler.core.plan.running import commit_of_image
from reconciler.core.plan.template import render
from reconciler.core.rollout import state as rollout
from reconciler.core.writeback import HelmValues, ImageRef


@dataclass(frozen=True, slots=True)
class ReleaseView:
    """What the helm delivery read for one site: the release's history and deployed revision,
    the image values of that revision (and of the revisions a hold is judged on), the workloads
    of its manifest, the Deployments among them as the cluster has them (None: not there), and
    stuck pods of a rollout that ran past the site's rollout_timeout."""

    history: tuple[Revision, ...]
    deployed: Revision
    image: ReleaseImage
    workloads: tuple[Workload, ...] = ()
    # the workloads it follows, by "Kind/name" (str(Workload)): Deployments, StatefulSets,
    # DaemonSets and CronJobs as the cluster port reads them (each kind judged by its rules)
    deployments: Mapping[str, ObservedDeployment | None] = field(default_factory=dict)
    images: Mapping[int, ReleaseImage] = field(default_factory=dict)
    troubles: tuple[str, ...] = ()

    @property
    def notes(self) -> Mapping[str, str]:
        """The reconciler's annotations on the release's first Deployment (hold, resume, ...)."""
        first = next(
            (
                d
                for k, d in self.deployments.items()
                if d is not None and k.startswith("Deployment/")
            ),
            None,
        )
        return first.annotations if first is not None else {}


def keys_of(spec: HelmSpec) -> HelmValues:
    return HelmValues(tag=spec.tag, repository=spec.repository, digest=spec.digest)


def shown(spec: HelmSpec, image: ReleaseImage, repository: str) -> str:
    """The release's image as a reference; the repository from the site's image template when
    no values key carries it."""
    return str(ImageRef(image.repository or repository, image.tag, image.digest))


def notes_deployment(site: Site, workloads: tuple[Workload, ...]) -> Workload | None:
    """The Deployment of the release that carries the reconciler's notes: the one named by the
    site's `deployment` when the release has it, else the release's first Deployment."""
    deployments = [w for w in workloads if w.kind == DEPLOYMENT]
    named = next((w for w in deployments if w.name == site.deployment), None)
    return named or (deployments[0] if deployments else None)


def lead_workload(plan: SitePlan, view: ReleaseView) -> ObservedDeployment | None:
    """The release's Deployment that carries the notes (lead time's records among them), its
    annotations as core.leadtime reads them: the commit the deployed revision runs
    (plan.running_sha) and when that revision was made, from Helm's release record, when the
    revision is the reconciler's (an upgrade, a rollback); no commit after a person's."""
    w = notes_deployment(plan.site, view.workloads)
    d = view.deployments.get(str(w)) if w is not None else None
    if d is None:
        return None
    notes = {k: v for k, v in d.annotations.items() if k not in (ann.SHA, ann.UPDATED_AT)}
    at = _utc(view.deployed.updated)
    if view.deployed.ours and plan.running_sha and at:
        notes[ann.SHA] = plan.running_sha
        notes[ann.UPDATED_AT] = at
    return replace(d, annotations=notes)


def _utc(text: str) -> str | None:
    """A time of `helm history` (RFC 3339, any offset) as the annotations write times."""
    try:
        return rollout.stamp(datetime.fromisoformat(text).timestamp()) if text else None
    except ValueError:
        return None


def rollout_of(view: ReleaseView) -> tuple[Rollout | None, str]:
    """The release's rollout: failed when one workload failed, progressing while one is,
    available when all are (each by the rules of its kind); None when none has a status yet
    (or the release has none it follows)."""
    states = [
        (str(w), rollout.state(d))
        for w in view.workloads
        if (d := view.deployments.get(str(w))) is not None
    ]
    if not states:
        return None, ""
    progress = ", ".join(f"{name} {p}" for name, (_, p) in states) if len(states) > 1 else ""
    progress = progress or states[0][1][1]
    found = {s for _, (s, _) in states}
    for verdict in (Rollout.FAILED, None, Rollout.PROGRESSING):
        if verdict in found:
            return (verdict or Rollout.PROGRESSING), progress
    return Rollout.AVAILABLE, progress


def failure_of(view: ReleaseView) -> str | None:
    """Why the release's rollout failed (a Deployment past its deadline, a StatefulSet's or
    DaemonSet's stuck pods or a CronJob's failed Job as core.workloads judged them, stuck pods)."""
    for w in view.workloads:
        d = view.deployments.get(str(w))
        if d is None:
            continue
        if d.kind == DEPLOYMENT and (
            d.status is None or d.status.observed_generation < d.generation
        ):
            continue  # not judged before the controller has seen the release's template
        if why := rollout.failure(d, ()):
            return f"{w}: {why}"
    if view.troubles:
        return "new pods are not coming up: " + "; ".join(view.troubles[:3])
    return None


def verdict(site: Site, head: HeadResult | None, view: ReleaseView, now: float) -> SitePlan:
    """The site's verdict: held, rolled back, the failed commit waited out, in sync, or an
    update of the release's image values."""
    spec = site.helm
    assert spec is not None
    base = SitePlan(site, Action.ERROR, branch=site.branch, container=None)
    if isinstance(head, BranchHead):
        base = replace(base, branch=head.branch, sha=head.sha, head_sha=head.sha)
    repository = _repository(site, base.branch)
    current = shown(spec, view.image, repository)
    state, progress = rollout_of(view)
    deployed = mark(view.deployed.description)
    running = _running(site, base.branch, current, view)
    bad = bad_commits(view.history)
    base = replace(
        base,
        current_image=current,
        running_sha=running,
        rollout=state,
        progress=progress,
        changed_at=view.deployed.updated or None,
        notified=view.notes.get(ann.NOTIFIED),
        resource_version=str(view.deployed.number),
        failed_sha=_last_bad(view.history) if bad else None,
    )
    if site.paused or view.notes.get(ann.PAUSED, "").lower() in ann.TRUE_VALUES:
        paused = "paused in sites.toml" if site.paused else f"paused by the {ann.PAUSED} annotation"
        return replace(base, action=Action.SKIP, skip=Skip.PAUSED, reason=paused)
    held = _held(site, view)
    if held is not None:
        return replace(base, action=Action.HELD, reason=held[2], held_by=held[0], held_at=held[1])
    if deployed is not None and deployed.rollback_to is None:
        why = failure_of(view)
        if why is not None:  # the full SHA when the image names it, for the rollback record
            full = running if running and running.startswith(deployed.sha) else deployed.sha
            return _failed(base, view, full, why)
    return _versus_head(base, head, view, bad)


def _failed(base: SitePlan, view: ReleaseView, sha: str, why: str) -> SitePlan:
    """The reconciler's deploy of `sha` failed: back to the previous good revision (the commit
    is remembered as bad by the rollback's description), or an error when there is none."""
    base = replace(base, rollout=Rollout.FAILED)
    target = rollback_target(view.history, view.deployed.number)
    if target is None:
        reason = f"rollout of {sha[:7]} failed ({why}); no earlier revision to go back to"
        return replace(base, reason=reason, error_kind=ErrorKind.HELM)
    back = mark(target.description)
    return replace(
        base,
        action=Action.ROLLED_BACK,
        reason=f"rollout of {sha[:7]} failed ({why}); back to revision {target.number}",
        failed_sha=sha,
        back_to=str(target.number),
        running_sha=back.sha if back is not None else None,
    )


def _versus_head(
    base: SitePlan, head: HeadResult | None, view: ReleaseView, bad: frozenset[str]
) -> SitePlan:
    site = base.site
    spec = site.helm
    assert spec is not None
    if head is None:
        return replace(base, reason=f"no branch head for {site.ref}", error_kind=ErrorKind.INTERNAL)
    if isinstance(head, HeadError):
        return replace(base, reason=head.reason, error_kind=head.kind)
    target = render(
        site.image, owner=site.owner, repo=site.repo_name, branch=head.branch, sha=head.sha
    )
    base = replace(base, target_image=target)
    if is_bad(head.sha, bad):
        return replace(
            base,
            action=Action.SKIP,
            skip=Skip.FAILED_COMMIT,
            failed_sha=head.sha,
            reason=f"{head.branch}@{head.sha[:7]} failed to roll out and was rolled back "
            "(helm history says so); waiting for a new commit",
        )
    try:
        pairs = set_pairs(keys_of(spec), view.image, wanted(keys_of(spec), ImageRef.parse(target)))
    except HelmError as exc:
        return replace(base, reason=str(exc), error_kind=exc.kind)
    if not pairs:
        return replace(
            base,
            action=Action.IN_SYNC,
            reason=f"runs {head.branch}@{head.sha[:7]} (revision {view.deployed.number})",
            running_sha=head.sha,
        )
    was = f"ran {base.running_sha[:7]}" if base.running_sha else f"ran {base.current_image}"
    return replace(
        base,
        action=Action.UPDATE,
        reason=f"{head.branch} is at {head.sha[:7]}; {was}; " + change_text(spec, view, pairs),
    )


def change_text(spec: HelmSpec, view: ReleaseView, pairs: tuple[tuple[str, str], ...]) -> str:
    """'helm upgrade web: image.tag v1 → 3f2c1a9…; rolls Deployment/web': what plan shows."""
    old = {spec.repository: view.image.repository, spec.tag: view.image.tag}
    old[spec.digest] = view.image.digest
    values = ", ".join(f"{k} {old.get(k) or '(unset)'} → {v or '(unset)'}" for k, v in pairs)
    rolls = ", ".join(str(w) for w in view.workloads if w.followed) or "no workload it follows"
    return f"helm upgrade {spec.release}: {values}; rolls {rolls}"


def _repository(site: Site, branch: str | None) -> str:
    sample = render(
        site.image, owner=site.owner, repo=site.repo_name, branch=branch or "main", sha="0" * 40
    )
    return ImageRef.parse(sample).repository


def _running(site: Site, branch: str | None, current: str, view: ReleaseView) -> str | None:
    """The commit the release runs: its image's by the site's template, else the commit the
    reconciler's description of the deployed revision names (short)."""
    found = commit_of_image(site, branch, current)
    if found:
        return found
    m = mark(view.deployed.description)
    if m is not None and m.rollback_to is not None:
        target = next((r for r in view.history if r.number == m.rollback_to), None)
        m = mark(target.description) if target is not None else None
    return m.sha if m is not None else None


def _last_bad(history: tuple[Revision, ...]) -> str | None:
    marks = [m for r in history if (m := mark(r.description)) and m.rollback_to is not None]
    return marks[-1].sha if marks else None


def _held(site: Site, view: ReleaseView) -> tuple[str, str, str] | None:
    """(by, at, reason) of an explicit hold on the release's Deployment, or of a person's
    change of the image values recorded by Helm; None when the site is not held."""
    notes = view.notes
    if ann.HOLD in notes:
        by, at = notes.get(ann.HOLD_BY, "someone"), notes.get(ann.HOLD_AT, "")
        why = notes[ann.HOLD] or "held"
        return (
            by,
            at,
            f"held by {by} at {at or '?'}: {why}; `reconciler resume {site.name}` lifts it",
        )
    change = person_change(view.history, view.images, notes.get(ann.RESUMED_AT))
    if change is None:
        return None
    by = f"helm revision {change.revision} ({change.description})"
    return by, change.updated, f"{change.reason}; `reconciler resume {site.name}` lifts it"
