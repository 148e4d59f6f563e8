"""Sites delivered by a Helm release (Site.delivery "helm", issue #21): the SiteDelivery that
reads the release and its workloads, and upgrades or rolls back the release, through the
HelmReleases port (the real helm) and the Cluster port (the release's Deployments and the
reconciler's notes on them). The rules are core.helmplan's and core.helmrelease's.

One deploy is `helm upgrade RELEASE <its deployed chart> --reuse-values --set-string KEY=VALUE
--description "reconciler: main@3f2c1a9 (was 0a48ebe)"`, never `--wait`: the engine follows the
release's workloads (every second in serve) and, when the rollout fails, `helm rollback` to the
previous good revision with a description naming the failed commit, which is how that commit is
remembered (helm history) and never deployed again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime

from reconciler.core import leadtime
from reconciler.core.errors import CommandError, ErrorKind, HelmError, ReconcilerError
from reconciler.core.helmplan import (
    ReleaseView,
    keys_of,
    lead_workload,
    notes_deployment,
    rollout_of,
    verdict,
)
from reconciler.core.helmrelease import (
    ReleaseImage,
    Revision,
    current,
    deploy_description,
    hold_revisions,
    mark,
    release_image,
    rollback_description,
    rollback_target,
    wanted,
    workloads,
)
from reconciler.core.model import (
    DEPLOYMENT,
    KINDS,
    Action,
    ApplyResult,
    DeploymentPatch,
    HeadResult,
    HelmSpec,
    ObservedDeployment,
    Rollout,
    Site,
    SitePlan,
)
from reconciler.core.plan.template import render
from reconciler.core.ports import Cluster, HelmReleases
from reconciler.core.rollout import state as rollout
from reconciler.core.rollout.history import Deploy
from reconciler.core.writeback import ImageRef
from reconciler.sync.fanout import bounded_map

log = logging.getLogger(__name__)

MANUAL_PREFIX = "reconciler: rollback to revision"  # ours, but no failed commit


class HelmDelivery:
    """The SiteDelivery of sites with a [sites.NAME.helm] table."""

    def __init__(self, helm: HelmReleases, cluster: Cluster, *, concurrency: int = 4) -> None:
        self.helm = helm
        self.cluster = cluster
        self.concurrency = concurrency

    # ---- reading -----------------------------------------------------------------------------

    def observe(self, sites: Sequence[Site]) -> Mapping[str, object]:
        """Each site's ReleaseView (three helm runs, one GET per Deployment of the release, a
        `helm get values` per revision a hold is judged on), or its ReconcilerError."""
        views = bounded_map(self._view_or_error, sites, limit=self.concurrency, name="helm")
        return {s.name: v for s, v in zip(sites, views, strict=True)}

    def _view_or_error(self, site: Site) -> ReleaseView | ReconcilerError:
        try:
            return self.view(site)
        except ReconcilerError as exc:
            return exc

    def view(self, site: Site) -> ReleaseView:
        spec = _spec(site)
        ns, name = spec.namespace, spec.release
        history = self.helm.history(ns, name)
        deployed = current(history)
        if deployed is None:
            raise HelmError(
                f"helm release {ns}/{name}: not found", kind=ErrorKind.HELM_RELEASE_NOT_FOUND
            )
        keys = keys_of(spec)
        image = release_image(self.helm.values(ns, name, deployed.number), keys)
        found = workloads(self.helm.manifest(ns, name, deployed.number), ns)
        images = {deployed.number: image}
        for number in hold_revisions(history):
            if number not in images:
                images[number] = release_image(self.helm.values(ns, name, number), keys)
        deployments = {
            str(w): self.cluster.read(w.namespace, w.name, w.kind) for w in found if w.kind in KINDS
        }
        view = ReleaseView(history, deployed, image, found, deployments, images)
        return ReleaseView(
            history, deployed, image, found, deployments, images, self._troubles(site, view)
        )

    def _troubles(self, site: Site, view: ReleaseView) -> tuple[str, ...]:
        """Stuck new pods of a rollout of ours older than the site's rollout_timeout (without
        one, each Deployment's progressDeadlineSeconds decides)."""
        state, _ = rollout_of(view)
        started = _instant(view.deployed.updated)
        if site.rollout_timeout is None or state is not Rollout.PROGRESSING or started is None:
            return ()
        if not view.deployed.ours or datetime.now().timestamp() - started < site.rollout_timeout:
            return ()
        found: list[str] = []
        for w in view.workloads:
            d = view.deployments.get(str(w))
            if d is None or w.kind != DEPLOYMENT:
                continue
            for c in d.containers:
                try:
                    found += self.cluster.pod_troubles(d.namespace, d.selector, c.name, c.image)
                except ReconcilerError as exc:
                    log.warning("cannot read the pods of %s/%s: %s", d.namespace, d.name, exc)
        return tuple(found)

    def verdict(self, site: Site, head: HeadResult | None, seen: object, now: float) -> SitePlan:
        assert isinstance(seen, ReleaseView), seen
        return verdict(site, head, seen, now)

    def workload(self, plan: SitePlan, seen: object) -> ObservedDeployment | None:
        """The release's Deployment that carries the notes, as lead time reads it (the
        deployed revision's commit and time from Helm's record: core.helmplan.lead_workload)."""
        assert isinstance(seen, ReleaseView), seen
        return lead_workload(plan, seen)

    # ---- writing -----------------------------------------------------------------------------

    def apply(self, plan: SitePlan, *, dry_run: bool, trigger: str) -> ApplyResult:
        """An UPDATE: `helm upgrade` (`--dry-run=server` on a dry run); a ROLLED_BACK: `helm
        rollback` to plan.back_to (nothing on a dry run). Guarded by the deployed revision it
        was planned against: another one is a conflict, and the engine plans again."""
        spec = _spec(plan.site)
        planned = int(plan.resource_version) if plan.resource_version.isdigit() else None
        try:
            if plan.action is Action.ROLLED_BACK and plan.back_to is not None:
                if not dry_run:
                    self._roll_back(plan, spec, planned)
                return ApplyResult(ok=True)
            if plan.action is not Action.UPDATE:
                return ApplyResult(ok=True)
            assert plan.target_image and plan.sha and plan.branch
            done = self.helm.upgrade(
                spec.namespace,
                spec.release,
                _pairs(spec, plan.target_image),
                description=deploy_description(plan.branch, plan.sha, plan.running_sha),
                dry_run=dry_run,
                revision=planned,
            )
        except HelmError as exc:
            conflict = exc.kind is ErrorKind.CONFLICT
            return ApplyResult(ok=False, reason=str(exc), error_kind=exc.kind, conflict=conflict)
        log.info(
            "%s: helm upgrade %s/%s%s -> revision %s (%s, trigger %s)",
            plan.site.name, spec.namespace, spec.release, " (dry run)" if dry_run else "",
            done.revision, done.status, trigger,
            extra={"event": "helm_upgrade", "site": plan.site.name, "revision": done.revision},
        )  # fmt: skip
        if not dry_run:
            self._record_stages(plan, done.manifest)
        return ApplyResult(ok=True, generation=done.revision)

    def _record_stages(self, plan: SitePlan, manifest: str) -> None:
        """The deployed commit's stages (core.leadtime), on the release's Deployment that carries
        the notes: one unguarded annotation patch after the upgrade (only reconciler.dev/ keys).
        Lost (a crash, a refusal), the head's record, when there was one, still tells them."""
        notes = leadtime.update_notes(plan)
        spec = _spec(plan.site)
        w = notes_deployment(plan.site, workloads(manifest, spec.namespace)) if notes else None
        if w is None:
            return
        result = self.cluster.patch(DeploymentPatch(w.namespace, w.name, notes), dry_run=False)
        if not result.ok:
            log.warning(
                "%s: recording the stages of the upgrade: %s", plan.site.name, result.reason
            )

    def _roll_back(self, plan: SitePlan, spec: HelmSpec, planned: int | None) -> None:
        assert plan.back_to is not None
        to = int(plan.back_to)
        why = plan.reason.partition("failed (")[2].rpartition(")")[0] or "rollout failed"
        bad = plan.failed_sha or ""
        self.helm.rollback(
            spec.namespace,
            spec.release,
            to,
            description=rollback_description(plan.branch or "?", bad, to, why),
            expect=planned,
        )

    # ---- commands ----------------------------------------------------------------------------

    def _notes(self, site: Site) -> ObservedDeployment:
        """The release's Deployment that carries the reconciler's notes."""
        spec = _spec(site)
        deployed = current(self.helm.history(spec.namespace, spec.release))
        if deployed is None:
            raise CommandError(f"helm release {spec.namespace}/{spec.release} not found")
        found = workloads(
            self.helm.manifest(spec.namespace, spec.release, deployed.number), spec.namespace
        )
        w = notes_deployment(site, found)
        d = self.cluster.read(w.namespace, w.name) if w is not None else None
        if d is None:
            raise CommandError(f"{site.name}: the release {spec.release} has no Deployment")
        return d

    def _note(self, site: Site, patch_of: object) -> None:
        d = self._notes(site)
        assert callable(patch_of)
        result = self.cluster.patch(patch_of(d), dry_run=False)
        if not result.ok:
            raise CommandError(f"{site.name}: {result.reason}")
        self.cluster.settle()

    def hold(self, site: Site, *, by: str, reason: str, now: float) -> str:
        self._note(site, lambda d: rollout.hold_patch(d, by, reason, now))
        return f"{site.name} held by {by}: {reason or 'held'}"

    def resume(self, site: Site, *, by: str, now: float) -> str:
        self._note(site, lambda d: rollout.resume_patch(d, by, now))
        return f"{site.name} resumed by {by}; the next sync deploys its branch head"

    def rollback(
        self, site: Site, *, by: str, to: str | None, image: str | None, now: float
    ) -> tuple[str, str | None]:
        """`helm rollback` to the revision before the deployed one (or `helm upgrade` to the
        image of commit `to`), then hold the site there."""
        spec = _spec(site)
        ns, name = spec.namespace, spec.release
        history = self.helm.history(ns, name)
        deployed = current(history)
        if deployed is None:
            raise CommandError(f"helm release {ns}/{name} not found")
        try:
            if to is None:
                target = rollback_target(history, deployed.number)
                if target is None:
                    raise CommandError(f"{site.name}: no earlier revision of {name} to go back to")
                made = self.helm.rollback(
                    ns, name, target.number,
                    description=f"{MANUAL_PREFIX} {target.number} by {by}"[:256],
                    expect=deployed.number,
                )  # fmt: skip
                shown = f"revision {target.number} (now revision {made.number})"
            else:
                assert image is not None
                branch = site.branch or "main"
                self.helm.upgrade(
                    ns, name, _pairs(spec, image),
                    description=deploy_description(branch, to) + f" by {by}",
                    revision=deployed.number,
                )  # fmt: skip
                shown = image
        except HelmError as exc:
            raise CommandError(f"{site.name}: {exc}") from exc
        self.hold(site, by=by, reason=f"rolled back to {shown}", now=now)
        return f"{site.name} rolled back to {shown} by {by} and held", image

    def history(self, site: Site) -> list[Deploy]:
        """The release's revisions, newest first, as deploys: the commit from the reconciler's
        descriptions, "helm" (a person) for the others."""
        spec = _spec(site)
        revisions = self.helm.history(spec.namespace, spec.release)
        return [_deploy(site, r) for r in sorted(revisions, key=lambda r: -r.number)]


def _spec(site: Site) -> HelmSpec:
    if site.helm is None:
        raise ReconcilerError(f"{site.name}: no [sites.{site.name}.helm] table")
    return site.helm


def _pairs(spec: HelmSpec, image: str) -> tuple[tuple[str, str], ...]:
    """Every configured values key with its value for `image` (an emptied digest key too, so a
    stale digest never outranks the new tag)."""
    want: ReleaseImage = wanted(keys_of(spec), ImageRef.parse(image))
    return tuple(
        (key, value or "")
        for key, value in (
            (spec.repository, want.repository),
            (spec.tag, want.tag),
            (spec.digest, want.digest),
        )
        if key
    )


def _deploy(site: Site, r: Revision) -> Deploy:
    m = mark(r.description)
    sha = m.sha if m is not None else None
    image = ""
    if sha is not None and len(sha) == 40:
        branch = m.branch if m is not None else "main"
        image = render(site.image, owner=site.owner, repo=site.repo_name, branch=branch, sha=sha)
    by = "reconciler" if r.ours else "helm (not the reconciler)"
    return Deploy(
        revision=r.number,
        at=r.updated,
        image=image,
        sha=sha,
        by=by,
        outcome=r.status,
        cause=r.description,
    )


def _instant(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp() if text else None
    except ValueError:
        return None


__all__ = ["HelmDelivery"]
