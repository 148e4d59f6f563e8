"""The one entry point every trigger calls: run(SyncRequest) -> SyncReport (plan, gate, apply)."""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from reconciler.core import annotations as ann
from reconciler.core import gates, leadtime, promotion
from reconciler.core.config.sites import Config
from reconciler.core.errors import ErrorKind, ReconcilerError
from reconciler.core.model import (
    DEPLOYMENT,
    KUBERNETES,
    Action,
    ApplyResult,
    BranchHead,
    ClusterRef,
    DeploymentPatch,
    HeadError,
    HeadResult,
    ImageStatus,
    NamespaceError,
    NamespaceView,
    ObservedDeployment,
    Plan,
    RepoRef,
    Rollout,
    Site,
    SitePlan,
    SiteResult,
    Skip,
    SyncReport,
    SyncRequest,
    view_key,
)
from reconciler.core.plan import fallback, planner, release
from reconciler.core.ports import Cluster, HeadSource, ImageVerifier, VerifyRequest
from reconciler.core.rollout import state as rollout
from reconciler.core.windows import Verdict as WindowVerdict
from reconciler.sync import promoting
from reconciler.sync.clusters import Clusters, group
from reconciler.sync.delivery import Deliveries
from reconciler.sync.fanout import bounded_map

log = logging.getLogger(__name__)

# What each cluster (None: home) holds, by namespace.
Observed = Mapping[ClusterRef | None, Mapping[str, NamespaceView]]

# A Deployment's status changes (and bumps its resourceVersion) while it rolls out, so a patch
# guarded by resourceVersion can meet several 409s in a row on a busy Deployment.
CONFLICT_RETRIES = 8


def conflict_pause(attempt: int) -> float:
    """Seconds to wait before re-reading after the attempt-th 409: doubling, jittered, <= 1.5 s."""
    return min(1.0, 0.05 * (1 << attempt)) * random.uniform(0.5, 1.5)


def attempts(engine: Engine) -> Iterator[int]:
    """The attempts of a write guarded by resourceVersion: CONFLICT_RETRIES at most, each retry
    after conflict_pause; none more once the engine is stopping."""
    for attempt in range(CONFLICT_RETRIES):
        if attempt and engine.stopping.wait(engine.conflict_pause(attempt - 1)):
            return
        yield attempt


class Engine:
    """Runs syncs against injected ports; holds no state between runs but the ports' caches."""

    def __init__(
        self,
        *,
        heads: HeadSource,
        cluster: Cluster,
        verifier: ImageVerifier,
        apply_concurrency: int = 8,
        clock: Callable[[], float] = time.time,
        deliveries: Deliveries | None = None,
        clusters: Clusters | None = None,
    ) -> None:
        self.heads = heads
        self.cluster = cluster  # the home cluster: where the reconciler runs (and its Lease)
        self.clusters = clusters or Clusters(cluster)  # it and each [clusters.NAME]
        self.verifier = verifier
        # Sites not delivered by patching their Deployment (Helm, git): routed per site.
        self.deliveries = deliveries or Deliveries()
        self.apply_concurrency = apply_concurrency
        self.clock = clock
        self.stopping = threading.Event()  # set on shutdown: patches in flight finish, no new ones
        # Why this replica may not write now (None: it may), asked before every patch; serve
        # sets it to the Lease holder's answer, so a lost Lease stops every further patch.
        self.fence: Callable[[], str | None] = _open
        self.conflict_pause: Callable[[int], float] = conflict_pause  # tests make it 0
        # When a push webhook announced a commit (repo, sha) -> its push time; serve sets it.
        self.pushed: Callable[[str, str], float | None] = _unknown

    def cluster_of(self, site: Site) -> Cluster:
        """The port of the site's cluster (ReconcilerError: it cannot be built, naming it)."""
        return self.clusters.of(site)

    def plan(
        self,
        config: Config,
        sites: Collection[str] | None = None,
        *,
        override: str | None = None,
        by: str = "",
    ) -> Plan:
        """Plan the selected sites (all when None): reads GitHub and each cluster, writes
        nothing. The environment gates (promotion, approval, windows: core.gates) apply last;
        `override` is the reason for deploying through a closed window, `by` who gives it."""
        self.clusters.keep(s.cluster for s in config.sites if s.cluster)  # a reload dropped some?
        selected = config.select(sites)
        kube = [s for s in selected if s.delivery == KUBERNETES]
        upstream = gates.sources(config.by_name, selected)
        refs = {s.ref for s in selected if not s.paused and not s.promote_from}
        refs |= {
            r.ref for s in selected if s.promote_from and not (r := _root(config, s)).promote_from
        }
        by_cluster = group((*kube, *upstream))
        delivered = promoting.with_sources(selected, upstream)  # a source of any delivery
        # GitHub, each cluster and the other deliveries are read at the same time.
        with ThreadPoolExecutor(len(by_cluster) + 1, thread_name_prefix="observe") as pool:
            observing = {
                ref: pool.submit(_observe, self.clusters, ref, in_cluster)
                for ref, in_cluster in by_cluster.items()
            }
            delivering = pool.submit(self.deliveries.observe, delivered)
            heads = self._resolve(refs)
            observed: Observed = {ref: f.result() for ref, f in observing.items()}
            seen = delivering.result()
        now = self.clock()
        troubles = {
            release.key(part): _troubles(self, part, d, now)
            for site in kube
            for part in release.parts_of(site)
            if (d := _deployment(observed, part)) is not None
        }
        up = promoting.Upstream(
            config, self.deliveries, seen, lambda s: _deployment(observed, s), heads, now
        )
        kube_plan = _plan_sites(selected=kube, observed=observed, troubles=troubles, upstream=up)
        by_name = {p.site.name: p for p in kube_plan.sites}
        result = Plan(tuple(by_name.get(s.name) or _delivered(up, s) for s in selected))
        result = self._gate(result)

        def replan(site: Site, head: BranchHead) -> SitePlan:
            if site.delivery != KUBERNETES:
                return self.deliveries.verdict(site, head, seen, now)
            view, here = {site.ref: head}, observed[site.cluster]
            return planner.plan_site(
                site, view, here, now=now, troubles=troubles.get(release.key(site), ())
            )

        result = _fall_back(self.verifier, result, heads, replan)

        def workload(p: SitePlan) -> ObservedDeployment | None:
            return self.deliveries.workload(p, seen)

        result = _env_gates(config, result, observed, now, override=override, by=by, at=workload)
        return _lead(
            config,
            result,
            heads=heads,
            observed=observed,
            now=now,
            pushed=self.pushed,
            workload=workload,
        )

    def _resolve(self, refs: Collection[RepoRef]) -> Mapping[RepoRef, HeadResult]:
        try:
            return self.heads.resolve(refs)
        except ReconcilerError as exc:  # a source bug or outage fails every site, visibly
            return {ref: HeadError(str(exc), exc.kind) for ref in refs}

    def _gate(self, result: Plan) -> Plan:
        """Verify every update's target (registry or checks); missing ones become skips."""
        wanted = {r for p in result.updates for r in planner.verify_requests(p)}
        if not wanted:
            return result
        statuses: Mapping[VerifyRequest, ImageStatus]
        try:
            statuses = self.verifier.verify(wanted)
        except ReconcilerError as exc:
            statuses = {r: ImageStatus(None, str(exc)) for r in wanted}
        return planner.gate(result, statuses)

    def run(self, config: Config, request: SyncRequest) -> SyncReport:
        """Plan, then (unless plan_only) apply every update; one site's failure stays its own."""
        started = self.clock()
        run_id = uuid.uuid4().hex[:12]
        t0 = time.monotonic()
        the_plan = self.plan(config, request.sites, override=request.override_window, by=request.by)
        timings = {"plan": time.monotonic() - t0}
        if not (request.plan_only or request.dry_run):
            _stamp(self, config, request.sites)
            _record_stages(self, the_plan)
        if request.plan_only or not any(_writes(p) for p in the_plan.sites):
            results = tuple(SiteResult(p) for p in the_plan.sites)
        else:
            t1 = time.monotonic()
            results = self._apply(
                the_plan, config, dry_run=request.dry_run, trigger=request.trigger
            )
            timings["apply"] = time.monotonic() - t1
        report = SyncReport(
            run_id=run_id,
            trigger=request.trigger,
            dry_run=request.dry_run,
            plan_only=request.plan_only,
            started_at=started,
            finished_at=self.clock(),
            results=results,
            config_path=config.path,
            timings=timings,
        )
        log.info(
            "sync %s (%s%s): %s in %.2fs",
            run_id,
            request.trigger,
            ", dry run" if request.dry_run else "",
            report.summary(),
            report.duration,
            extra={
                "event": "sync",
                "run_id": run_id,
                "trigger": request.trigger,
                "summary": report.summary(),
                "duration_s": round(report.duration, 3),
                "updated": report.updated,
                "failed": report.count(Action.ERROR),
            },
        )
        return report

    def _apply(
        self, the_plan: Plan, config: Config, *, dry_run: bool, trigger: str
    ) -> tuple[SiteResult, ...]:
        writes = [p for p in the_plan.sites if _writes(p)]
        applied = bounded_map(
            lambda p: self._apply_one(p, dry_run=dry_run, trigger=trigger),
            writes,
            limit=self.apply_concurrency,
            name="apply",
        )
        self.clusters.settle_for(p.site for p in writes)  # their Events, before the run ends
        done = dict(zip((p.site.name for p in writes), applied, strict=True))
        return tuple(done.get(p.site.name, SiteResult(p)) for p in the_plan.sites)

    def _apply_one(
        self,
        p: SitePlan,
        *,
        dry_run: bool,
        trigger: str,
        replan: Callable[[SitePlan], SitePlan] | None = None,
    ) -> SiteResult:
        """One site's write, sent again after each conflict re-planned by `replan`."""
        if p.parts:  # one release: every target of the site, or none
            return _apply_release(self, p, dry_run=dry_run, trigger=trigger)
        for attempt in range(CONFLICT_RETRIES):
            if attempt:
                self.stopping.wait(self.conflict_pause(attempt - 1))
            if self.stopping.is_set():
                reason = "not applied: the reconciler is shutting down; the next sync will"
                return SiteResult(
                    replace(p, action=Action.SKIP, skip=Skip.SHUTTING_DOWN, reason=reason)
                )
            fenced = None if dry_run else self.fence()
            if fenced is not None:
                return SiteResult(_failed(p, f"not applied: {fenced}", ErrorKind.LEASE))
            try:
                result = self._send(p, dry_run=dry_run, trigger=trigger)
            except ReconcilerError as exc:  # an adapter bug must not sink the other sites
                return SiteResult(_failed(p, f"patch failed: {exc}", exc.kind))
            if result.ok:
                return _awaiting(p, result) or self._done(p, dry_run=dry_run)
            if not result.conflict:
                kind = result.error_kind or ErrorKind.KUBERNETES
                return SiteResult(_failed(p, result.reason, kind))
            p = (replan or self._replan)(p)
            if not _writes(p):
                return SiteResult(p)
        return SiteResult(
            _failed(p, "the Deployment kept changing under us (409 conflicts)", ErrorKind.CONFLICT)
        )

    def _send(self, p: SitePlan, *, dry_run: bool, trigger: str) -> ApplyResult:
        """The write, recording what triggered it in the same patch (copied onto the ReplicaSet)."""
        delivery = self.deliveries.of(p.site)
        if delivery is not None:
            return delivery.apply(p, dry_run=dry_run, trigger=trigger)
        if p.action is Action.UPDATE and p.write is None:
            notes = leadtime.update_notes(p)
            change = replace(planner.change_for(p), trigger=trigger, notes=notes)
            return self.cluster_of(p.site).apply(change, dry_run=dry_run)
        assert p.write is not None
        write = p.write
        if p.action is Action.ROLLED_BACK and write.image is not None:
            notes = {**write.annotations, ann.TRIGGER: f"rollback ({trigger})"[:100]}
            write = replace(write, annotations=notes)
        return self.cluster_of(p.site).patch(write, dry_run=dry_run)

    def _done(self, p: SitePlan, *, dry_run: bool) -> SiteResult:
        if p.note is not None and not dry_run:  # what let it through a window, on record
            result = self.cluster_of(p.site).patch(p.note, dry_run=False)
            if not result.ok:
                log.warning("%s: recording the window override: %s", p.site.name, result.reason)
        if p.action is Action.HELD:  # only the hold's branch head was recorded
            return SiteResult(p)
        if dry_run:
            return SiteResult(p, applied=True, dry_run=True)
        stamp = rollout.stamp(self.clock())
        if p.action is Action.ROLLED_BACK:
            back = p.write.annotations.get(ann.SHA) if p.write else p.running_sha
            return SiteResult(
                replace(p, changed_at=stamp, running_sha=back, rollout=Rollout.FAILED),
                applied=True,
            )
        was = (p.running_sha or "")[:7] or p.current_image
        p = replace(
            p,
            lead=leadtime.after_patch(p.lead, p.sha or "", self.clock(), delivery=p.site.delivery),
            changed_at=stamp,
            running_sha=p.sha,
            rollout=Rollout.PROGRESSING,
            reason=f"deployed {p.branch}@{(p.sha or '')[:7]} (was {was})"
            + (f"; {p.fallback}" if p.fallback else "")
            + (f"; {p.gated}" if p.gated else ""),
        )
        return SiteResult(p, applied=True)

    def _replan(self, p: SitePlan) -> SitePlan:
        """After a 409: read the Deployment again and plan this one site against it."""
        site = p.site
        heads: dict[RepoRef, HeadResult] = {}
        if p.sha and p.branch:
            heads[site.ref] = BranchHead(site.repo, p.branch, p.sha)
        if site.delivery != KUBERNETES:
            seen = self.deliveries.observe([site])
            fresh_plan = self.deliveries.verdict(site, heads.get(site.ref), seen, self.clock())
        else:
            try:
                fresh = _read(self, site)
            except ReconcilerError as exc:
                return _failed(p, f"re-reading after a conflict failed: {exc}", exc.kind)
            fresh_plan = _plan_one(self, site, heads, fresh)
        if fresh_plan.action is Action.UPDATE and p.action is Action.UPDATE and p.target_image:
            # same commit, same verified image: keep the digest the gate pinned (and, during a
            # fallback, the branch head and why an older commit goes out)
            fresh_plan = replace(
                fresh_plan,
                target_image=p.target_image,
                head_sha=p.head_sha,
                fallback=p.fallback,
                reason=p.reason,
                note=p.note,
                gated=p.gated,
                approved_by=p.approved_by,
            )
        return replace(fresh_plan, lead=p.lead)

    # -- following rollouts -------------------------------------------------------------------

    def follow(self, site: Site, *, act: bool = True) -> SiteResult:
        """Read one site's Deployment; roll back its rollout if it failed (unless `act` is
        False: then only say so). Needs no GitHub."""
        return self.follow_all([site], act=act)[0]

    def follow_all(
        self, sites: Sequence[Site], *, act: bool = True, observe_all: bool = False
    ) -> list[SiteResult]:
        """follow() for many sites: one LIST per namespace (of a cluster) holding several,
        else one GET; `observe_all` reads every namespace through observe() (a watch-fed
        cluster answers it from memory, so a lone site costs no GET either)."""
        views: dict[ClusterRef | None, Mapping[str, NamespaceView]] = {}
        for ref, in_cluster in group(s for s in sites if s.delivery == KUBERNETES).items():
            counts = Counter(s.namespace for s in in_cluster)
            shared = {ns for ns, n in counts.items() if n > 1 or observe_all}
            views[ref] = self.clusters.observe(ref, shared, _kinds(in_cluster)) if shared else {}
        seen = self.deliveries.observe(sites)
        results = [
            self._follow_one(site, views.get(site.cluster, {}), seen, act=act) for site in sites
        ]
        if act:  # the Events of any rollback are written before it reports
            self.clusters.settle_for(sites)
        return results

    def _follow_one(
        self,
        site: Site,
        views: Mapping[str, NamespaceView],
        seen: Mapping[str, object],
        *,
        act: bool,
    ) -> SiteResult:
        """The site's verdict without GitHub (its Deployment, or its delivery's records); a
        failed rollout is rolled back (through its delivery) when `act`."""
        if site.delivery != KUBERNETES:
            p = _follow_delivered(self, site, seen, act=act)
        else:
            view = views.get(site.namespace)
            try:
                if isinstance(view, NamespaceError):
                    raise ReconcilerError(view.reason, kind=view.kind)
                if view is not None:
                    fresh = view.get(view_key(site.targets[0].kind, site.deployment))
                else:
                    fresh = _read(self, site)
            except ReconcilerError as exc:
                error = SitePlan(site, Action.ERROR, reason=str(exc), error_kind=exc.kind)
                return SiteResult(error)
            p = _plan_one(self, site, {}, fresh)
            if act and fresh is not None:
                p = _stamp_available(self, site, fresh, p)
        if p.action is Action.ROLLED_BACK and act:
            result = self._apply_one(p, dry_run=False, trigger="follower")
            if result.applied:
                log.warning(
                    "%s: %s",
                    site.name,
                    result.plan.reason,
                    extra={"event": "rolled_back", "site": site.name},
                )
            return result
        return SiteResult(p)

    def wait(
        self,
        config: Config,
        names: Collection[str],
        *,
        timeout: float,
        interval: float = 1.0,
    ) -> dict[str, SiteResult]:
        """Follow the named sites until no rollout is progressing (or `timeout` seconds); one no
        controller has reported on yet is followed until one does."""
        pending = {s.name: s for s in config.select(names)}
        out: dict[str, SiteResult] = {}
        deadline = time.monotonic() + timeout
        while pending:
            for name, site in list(pending.items()):
                out[name] = result = self.follow(site)
                if not _following(result):
                    del pending[name]
            if not pending or time.monotonic() >= deadline or self.stopping.is_set():
                break
            self.stopping.wait(interval)
        return out


def _stamp(engine: Engine, config: Config, names: Collection[str] | None) -> None:
    """Record when the rollouts of the sources of followers became available (one that
    finished while nobody followed it), so that their soak can be judged."""
    selected = config.select(names)
    feeding = {s.promote_from for s in config.sites if s.promote_from}
    wanted = [s for s in (*selected, *gates.sources(config.by_name, selected)) if s.name in feeding]
    delivered = [s for s in wanted if s.delivery != KUBERNETES]
    if delivered:  # through its delivery's records (a git site's once its commit was applied)
        records = engine.deliveries.observe(delivered)
        for site in delivered:
            _follow_delivered(engine, site, records, act=True)
    wanted = [s for s in wanted if s.delivery == KUBERNETES]
    if not wanted:
        return
    for ref, in_cluster in group(wanted).items():  # each cluster's sites through its port
        observed = {ref: engine.clusters.observe(ref, {s.namespace for s in in_cluster})}
        seen = {s.name: d for s in in_cluster if (d := _deployment(observed, s)) is not None}
        for patch in gates.stamps(config.sites, seen, engine.clock()):
            try:
                result = engine.clusters.get(ref).patch(patch, dry_run=False)
            except ReconcilerError as exc:
                result = ApplyResult(False, str(exc))
            if not result.ok and not result.conflict:
                log.warning("recording availability of %s: %s", patch.deployment, result.reason)


def _root(config: Config, site: Site) -> Site:
    return gates.chain_root(config.by_name, site)


def _fall_back(
    verifier: ImageVerifier,
    result: Plan,
    heads: Mapping[RepoRef, HeadResult],
    replan: Callable[[Site, BranchHead], SitePlan],
) -> Plan:
    """Sites whose head is not ready deploy the newest older commit that is, forward only
    (reconciler.core.plan.fallback); one verification round for all their candidates."""
    options: dict[str, tuple[BranchHead, tuple[fallback.Candidate, ...]]] = {}
    for p in result.sites:
        head = heads.get(p.site.ref)
        if p.site.promote_from:
            continue  # a follower deploys what its source runs, or nothing
        if isinstance(head, BranchHead) and fallback.not_ready(p):
            found = fallback.candidates(p, head)
            if found:
                options[p.site.name] = (head, found)
    if not options:
        return result
    by_name = {p.site.name: p for p in result.sites}
    wanted = {
        c: VerifyRequest(c.image, head.repo, c.sha, site.verify, site.required_checks)
        for name, (head, found) in options.items()
        if (site := by_name[name].site).verify != "none"
        for c in found
    }
    statuses: Mapping[VerifyRequest, ImageStatus] = {}
    if wanted:
        try:
            statuses = verifier.verify(set(wanted.values()))
        except ReconcilerError:  # the heads stay as they are; the next sync tries again
            return result
    out = []
    for p in result.sites:
        head, found = options.get(p.site.name, (None, ()))
        ready = (c for c in found if c not in wanted or _passed(statuses.get(wanted[c])))
        chosen = next(ready, None)
        if head is None or chosen is None:
            out.append(p)
            continue
        alternative = replan(p.site, replace(head, sha=chosen.sha))
        if alternative.action is not Action.UPDATE:
            out.append(p)
            continue
        (pinned,) = planner.gate(Plan((alternative,)), statuses).sites
        why = fallback.reason(p, head, chosen)
        out.append(replace(pinned, reason=why, fallback=why, head_sha=head.sha))
    return Plan(tuple(out))


def _delivered(up: promoting.Upstream, site: Site) -> SitePlan:
    """A site of another delivery: its verdict against its branch head, or its promotion."""
    if site.promote_from:
        return up.plan(site)
    return up.deliveries.verdict(site, up.heads.get(site.ref), up.seen, up.now)


def _plan_sites(
    *,
    selected: Sequence[Site],
    observed: Observed,
    troubles: Mapping[str, tuple[str, ...]],
    upstream: promoting.Upstream,
) -> Plan:
    """The planner's verdict per site; a follower is planned against what its source (of any
    delivery) runs."""
    out = []
    heads, now = upstream.heads, upstream.now
    for site in selected:
        if not site.promote_from:
            trouble = troubles.get(release.key(site), ())
            seen = observed[site.cluster]
            out.append(
                planner.plan_site(
                    site, heads, seen, now=now, troubles=trouble, part_troubles=troubles
                )
            )
            continue
        verdict, seen_source, seen_here = upstream.verdict(site)
        head = gates.promoted_head(site, verdict, seen_here, seen_source)
        p = planner.plan_site(
            site,
            {site.ref: head},
            observed[site.cluster],
            now=now,
            troubles=troubles.get(release.key(site), ()),
        )
        out.append(gates.after_promotion(p, verdict))
    return Plan(tuple(out))


def _env_gates(
    config: Config,
    result: Plan,
    observed: Observed,
    now: float,
    *,
    override: str | None,
    by: str,
    at: Callable[[SitePlan], ObservedDeployment | None],
) -> Plan:
    """Approval, then deploy windows, on every update (core.gates); each list of windows is
    decided once per plan. A site of another delivery's approval is on the workload its
    delivery names (`at`)."""
    out = []
    seen: dict[tuple[str, ...], WindowVerdict] = {}
    for p in result.sites:
        if p.action is not Action.UPDATE:
            out.append(p)
            continue
        d = _deployment(observed, p.site) if p.site.delivery == KUBERNETES else at(p)
        approved = gates.approval_gate(p, gates.read_approval(d.annotations) if d else None)
        gated, record = gates.window_gate(
            approved, config.windows_of(p.site), now, override=override, by=by, seen=seen
        )
        out.append(replace(gated, note=gates.override_patch(gated, record)) if record else gated)
    return Plan(tuple(out))


def _lead(
    config: Config,
    result: Plan,
    *,
    heads: Mapping[RepoRef, HeadResult],
    observed: Observed,
    now: float,
    pushed: Callable[[str, str], float | None],
    workload: Callable[[SitePlan], ObservedDeployment | None],
) -> Plan:
    """Every verdict with its lead time, stage by stage (core.leadtime); a site of another
    delivery's records are on the workload it names (`workload`)."""
    out = []
    for p in result.sites:
        if p.site.delivery != KUBERNETES:  # a follower's head is no branch's
            head = None if p.site.promote_from else heads.get(p.site.ref)
            when = pushed(head.repo, head.sha) if isinstance(head, BranchHead) else None
            lead = leadtime.delivered(p, workload(p), head, pushed=when, now=now)
            out.append(replace(p, lead=lead))
            continue
        d = _deployment(observed, p.site)
        notes = d.annotations if d is not None else None
        source = config.site(p.site.promote_from) if p.site.promote_from else None
        if source is not None:  # its head: what its source runs, with the stages recorded there
            up = _deployment(observed, source)
            lead = leadtime.promoted(p, notes, up.annotations if up else None, now=now)
        else:
            head = heads.get(p.site.ref)
            when = pushed(head.repo, head.sha) if isinstance(head, BranchHead) else None
            lead = leadtime.lead_of(p, notes, head, pushed=when, now=now)
        out.append(replace(p, lead=lead))
    return Plan(tuple(out))


def _stamp_available(
    engine: Engine, site: Site, fresh: ObservedDeployment, p: SitePlan
) -> SitePlan:
    """Record when the rollout of the recorded commit became available (promotion's
    ``available-at``, guarded by the resourceVersion read). A conflict, most often the
    controller's own status update, is re-read and tried again a bounded number of times with
    the time first seen, so a soak and a lead time do not wait for the next look; a failure is
    left to the next look."""
    now = engine.clock()
    port = engine.clusters.port(site)
    for _ in attempts(engine):
        stamp = promotion.available_patch(fresh, now)
        done = port.patch(stamp, dry_run=False) if stamp and port else None
        if done is None or (not done.ok and not done.conflict):
            return p
        if done.ok:
            return replace(p, lead=leadtime.available(p.lead, now))
        try:
            again = _read(engine, site)
        except ReconcilerError:
            return p
        if again is None:
            return p
        fresh, p = again, _plan_one(engine, site, {}, again)
    return p


def _follow_delivered(
    engine: Engine, site: Site, seen: Mapping[str, object], *, act: bool
) -> SitePlan:
    """A followed verdict of another delivery, with its lead time (no branch head); with `act`,
    what following it saw is recorded on the workload of its records (core.leadtime.follow_patch:
    a git site's commit applied, the rollout available). A conflict is read again and tried
    again (bounded), with the time first seen; a failure is left to the next look."""
    now = engine.clock()
    for attempt in attempts(engine):
        if attempt:  # the workload moved since it was read (its controller's status update)
            seen = engine.deliveries.observe([site])
        p = engine.deliveries.verdict(site, None, seen, now)
        at = engine.deliveries.workload(p, seen)
        p = replace(p, lead=leadtime.delivered(p, at, None, pushed=None, now=now))
        write = leadtime.follow_patch(p, at, now) if act else None
        if write is None:
            return p
        try:
            result = engine.cluster_of(p.site).patch(write, dry_run=False)
        except ReconcilerError as exc:
            result = ApplyResult(False, str(exc))
        if result.ok:
            return replace(p, lead=leadtime.followed_up(p.lead, write, now))
        if not result.conflict:
            log.warning("%s: recording its rollout: %s", p.site.name, result.reason)
            return p
    return p


def _record_stages(engine: Engine, the_plan: Plan) -> None:
    """Record the stages of branch heads a sync does not deploy (core.leadtime); a conflict or
    a failure is left to the next sync (it finds the same thing to record)."""
    writes = [
        (p.site, w)
        for p in the_plan.sites
        if p.lead is not None and (w := p.lead.write) is not None and not _writes(p)
    ]
    if not writes or engine.fence() is not None:
        return

    def send(write: tuple[Site, DeploymentPatch]) -> None:
        site, w = write
        try:
            result = engine.cluster_of(site).patch(w, dry_run=False)  # in the site's cluster
        except ReconcilerError as exc:
            result = ApplyResult(False, str(exc))
        if not result.ok and not result.conflict:
            log.warning("recording the stages of %s: %s", w.deployment, result.reason)

    bounded_map(send, writes, limit=engine.apply_concurrency, name="apply")


def _following(r: SiteResult) -> bool:
    """Whether wait() goes on following a site: not once it rolled back; yes while its rollout
    is progressing, or while no controller has reported on its Deployment yet (just created)."""
    if r.applied:
        return False
    if r.plan.rollout is None:
        return r.plan.current_image is not None  # read, but no status: not when unreadable
    return r.plan.rollout is Rollout.PROGRESSING and not r.plan.waiting


def _deployment(observed: Observed, site: Site) -> ObservedDeployment | None:
    """The site's Deployment as its own cluster holds it (None: not seen)."""
    view = observed.get(site.cluster, {}).get(site.namespace)
    if view is None or isinstance(view, NamespaceError):
        return None
    return view.get(view_key(site.targets[0].kind, site.deployment))


def _troubles(engine: Engine, site: Site, d: ObservedDeployment, now: float) -> tuple[str, ...]:
    """Stuck pods of a rollout of ours that has run longer than the site's rollout_timeout."""
    container = planner.container_of(site, d)
    if container is None or not rollout.wants_pods(site, d, container, now):
        return ()
    image = d.image_of(container) or ""
    try:
        return engine.cluster_of(site).pod_troubles(d.namespace, d.selector, container, image)
    except ReconcilerError as exc:  # the progress deadline still catches it
        log.warning("cannot read the pods of %s/%s: %s", d.namespace, d.name, exc)
        return ()


def _apply_release(engine: Engine, p: SitePlan, *, dry_run: bool, trigger: str) -> SiteResult:
    """A release: its parts' writes one after the other (each guarded, retried on a conflict
    as any site's); a refused one puts back the parts this run already patched and fails the
    site with the reason."""
    done: list[SitePlan] = []
    for workload in _by_workload(p.parts):
        writing = [q for q in workload if _writes(q)]
        if not writing:
            continue
        part = writing[0]

        def again(_: SitePlan, parts: Sequence[SitePlan] = tuple(writing)) -> SitePlan:
            return _merged(engine, _replanned(engine, p, parts), trigger)

        merged = _merged(engine, writing, trigger)
        result = engine._apply_one(merged, dry_run=dry_run, trigger=trigger, replan=again)
        stopped = result.plan.skip is Skip.SHUTTING_DOWN
        if not result.ok or stopped:
            why = f"{release.label(part)}: {result.plan.reason}"
            undone = [_undo(engine, g, why, dry_run) for g in _by_workload(done)]
            if undone:
                why += f"; put back {', '.join(undone)}"
            if stopped:
                return SiteResult(
                    replace(p, action=Action.SKIP, skip=Skip.SHUTTING_DOWN, reason=why)
                )
            return SiteResult(_failed(p, why, result.plan.error_kind or ErrorKind.KUBERNETES))
        if result.applied:
            done.extend(q for q in writing if q.action is Action.UPDATE)
    if p.action is Action.HELD:
        return SiteResult(p)
    if dry_run:
        return SiteResult(p, applied=True, dry_run=True)
    if p.action is Action.ROLLED_BACK:
        back = next((q.write for q in p.parts if q.write is not None), None)
        sha = back.annotations.get(ann.SHA) if back else None
        stamped = rollout.stamp(engine.clock())
        changed = replace(p, changed_at=stamped, running_sha=sha, rollout=Rollout.FAILED)
        return SiteResult(changed, applied=True)
    return engine._done(p, dry_run=dry_run)


def _undo(engine: Engine, parts: Sequence[SitePlan], why: str, dry_run: bool) -> str:
    """Put back the parts of one workload in one write (release.undo_patch); how messages
    name them."""
    patch = rollout.merge([release.undo_patch(q, why, engine.clock()) for q in parts])
    result = engine.cluster_of(parts[0].site).patch(patch, dry_run=dry_run)
    names = ", ".join(release.label(q) for q in parts)
    return names + ("" if result.ok else f" (failed: {result.reason})")


def _replanned(engine: Engine, p: SitePlan, parts: Sequence[SitePlan]) -> list[SitePlan]:
    """After a conflict on the workload of `parts`: the whole release planned again (a part
    alone would not know that another one failed), its parts on that workload; an update to
    the same commit keeps the image the gate verified (and pinned)."""
    fresh = engine._replan(p)
    if not fresh.parts:
        return [fresh]  # the release could not be planned again: its error
    before = {release.key(q.site): q for q in parts}
    out = []
    for q in fresh.parts:
        old = before.get(release.key(q.site))
        if old is None:
            continue
        same = q.action is Action.UPDATE and old.action is Action.UPDATE and q.sha == old.sha
        out.append(replace(q, target_image=old.target_image) if same else q)
    return out or [fresh]


def _by_workload(parts: Sequence[SitePlan]) -> list[list[SitePlan]]:
    """A release's parts by the workload they are on, in the order the workloads come."""
    groups: dict[tuple[str, str], list[SitePlan]] = {}
    for q in parts:
        target = q.site.targets[0]
        groups.setdefault((target.kind, target.name), []).append(q)
    return list(groups.values())


def _merged(engine: Engine, parts: Sequence[SitePlan], trigger: str) -> SitePlan:
    """The parts of one workload that write, as one write (rollout.merge): one pod template
    change for its containers and init containers, their previous images each recorded. A
    part alone is itself; so are parts of which one no longer writes an image (replanned)."""
    moving = [q for q in parts if _writes(q)]
    if len(moving) < 2 or any(q.action not in (Action.UPDATE, Action.ROLLED_BACK) for q in moving):
        return moving[0] if moving else parts[0]
    now = engine.clock()
    patches = []
    for q in moving:
        if q.action is Action.UPDATE:
            change = replace(planner.change_for(q), trigger=trigger, notes=leadtime.update_notes(q))
            patches.append(rollout.update_patch(change, now))
        elif q.write is not None:
            patches.append(q.write)
    return replace(moving[0], write=rollout.merge(patches))


def _plan_one(
    engine: Engine,
    site: Site,
    heads: Mapping[RepoRef, HeadResult],
    fresh: ObservedDeployment | None,
) -> SitePlan:
    """One site planned against its workload read again (`fresh`; a release: all of them)."""
    if release.is_release(site):  # every target read again
        return _plan_release(engine, site, heads)
    now = engine.clock()
    view = {fresh.key: fresh} if fresh else {}
    troubles = _troubles(engine, site, fresh, now) if fresh else ()
    p = planner.plan_site(site, heads, {site.namespace: view}, now=now, troubles=troubles)
    notes = fresh.annotations if fresh else None
    lead = leadtime.lead_of(p, notes, heads.get(site.ref), pushed=None, now=now)
    return replace(p, lead=lead)


def _plan_release(engine: Engine, site: Site, heads: Mapping[RepoRef, HeadResult]) -> SitePlan:
    """A release planned against its targets read again (after a conflict; to follow it)."""
    now = engine.clock()
    view: dict[str, ObservedDeployment] = {}
    troubles: dict[str, tuple[str, ...]] = {}
    try:
        for part in release.parts_of(site):
            d = _read(engine, part)
            if d is not None:
                view[d.key] = d
                troubles[release.key(part)] = _troubles(engine, part, d, now)
    except ReconcilerError as exc:
        return SitePlan(site, Action.ERROR, reason=str(exc), error_kind=exc.kind)
    observed = {site.namespace: view}
    return planner.plan_site(site, heads, observed, now=now, part_troubles=troubles)


def _observe(
    clusters: Clusters, ref: ClusterRef | None, sites: Collection[Site]
) -> Mapping[str, NamespaceView]:
    """The namespaces of `sites` in one cluster: one LIST per kind their targets have."""
    return clusters.observe(ref, {s.namespace for s in sites}, _kinds(sites))


def _read(engine: Engine, site: Site) -> ObservedDeployment | None:
    """The site's workload, fresh, from its cluster."""
    return engine.cluster_of(site).read(site.namespace, site.deployment, site.targets[0].kind)


def _kinds(sites: Collection[Site]) -> dict[str, frozenset[str]] | None:
    """The workload kinds to list per namespace; None when every target is a Deployment."""
    kinds: dict[str, set[str]] = {}
    for site in sites:
        kinds.setdefault(site.namespace, set()).update(t.kind for t in site.targets)
    if all(k <= {DEPLOYMENT} for k in kinds.values()):
        return None
    return {ns: frozenset(k) for ns, k in kinds.items()}


def _writes(p: SitePlan) -> bool:
    if p.parts:  # a release: what its parts write
        return p.action in (Action.UPDATE, Action.ROLLED_BACK, Action.HELD) and any(
            _writes(q) for q in p.parts
        )
    return p.action is Action.UPDATE or p.write is not None or p.back_to is not None


def _passed(status: ImageStatus | None) -> bool:
    return status is not None and status.exists is True


def _open() -> str | None:
    return None


def _unknown(repo: str, sha: str) -> float | None:
    return None


def _awaiting(p: SitePlan, result: ApplyResult) -> SiteResult | None:
    """A delivery's write that the deploy still waits on (a pull request to be merged)."""
    if not result.pending:
        return None
    waits = replace(p, action=Action.SKIP, skip=Skip.AWAITING_APPLY, reason=result.pending)
    return SiteResult(replace(waits, lead=leadtime.proposed(p.lead)))


def _failed(p: SitePlan, reason: str, kind: ErrorKind) -> SitePlan:
    return replace(p, action=Action.ERROR, reason=reason, error_kind=kind)
