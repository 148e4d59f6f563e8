"""Following rollouts in the background: re-read progressing sites, roll back failures.

With a watch-fed cache (serve), the follower reads the cache and wakes on its events: a change to
a managed site's Deployment is looked at at once (a person's `kubectl rollout undo` shows the
site held within the event's delivery, a rollout's progress as it is reported); progressing
sites are still looked at each second (a rollout_timeout is a matter of the clock). Without a
cache it re-reads the progressing sites each second.

Runs beside the runner (never inside a sync), so a failed rollout is rolled back within seconds
while other syncs and triggers go on. The rollback itself is planned from what the API server
says (level-triggered) and sent with the resourceVersion it was planned against, so two
replicas cannot both roll back; with a Lease, only the replica holding it rolls back.

Which rollouts to follow comes from each sync's report and, at start and whenever this replica
takes the Lease after another replica held it, from a sweep of every managed site's Deployment:
a rollout started by a replica that died is followed by the one that takes over.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from reconciler.core import leadtime
from reconciler.core.config.sites import Config
from reconciler.core.errors import ReconcilerError
from reconciler.core.model import (
    GIT,
    KUBERNETES,
    Action,
    ObservedDeployment,
    Rollout,
    Site,
    SiteResult,
    SyncReport,
    view_key,
)
from reconciler.core.ports import Lease, WorkloadCache
from reconciler.sync.engine import Engine

log = logging.getLogger(__name__)

FOLLOW_EVERY = 1.0
GATHER = 0.05  # after a cache event, seconds to gather the events of the same moment into one look


class SharedLease:
    """One Lease shared by the runner and the follower of a replica: the first to take it
    acquires it, the last to give it back releases it (so the follower never releases the
    Lease under a sync in flight)."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.on_taken_over: Callable[[], None] | None = None
        self._users = 0
        self._lock = threading.Lock()

    @property
    def held(self) -> bool:
        return self._users > 0

    def acquire(self) -> bool:
        """Take the Lease (if not held here already); True, after on_taken_over, when another
        replica may have held it since this one last did."""
        with self._lock:
            taken = self.lease.acquire() if self._users == 0 else False
            self._users += 1
        if taken and self.on_taken_over is not None:
            self.on_taken_over()
        return bool(taken)

    def renew(self) -> None:
        self.lease.renew()

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self.lease.release()


class Follower:
    """Tracks the sites whose rollout is progressing and follows each until it ends."""

    def __init__(
        self,
        engine: Engine,
        config: Callable[[], Config | None],
        *,
        on_result: Callable[[SiteResult, Rollout | None], None],
        lease: Lease | None = None,
        interval: float = FOLLOW_EVERY,
        cache: WorkloadCache | None = None,
    ) -> None:
        self.engine = engine
        self.cache = cache
        self._changed: set[tuple[str, str]] = set()  # (namespace, name) the cache saw change
        self._unsubscribe: Callable[[], None] | None = None
        self.config = config
        self.on_result = on_result
        self.lease = lease
        self.interval = interval
        self.tracked: dict[str, Rollout | None] = {}
        self._sweep = threading.Event()  # look at every managed site's rollout
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def track_report(self, report: SyncReport) -> None:
        """Follow every site a sync saw (or left) progressing; forget the others."""
        if report.plan_only or report.dry_run:
            return
        progressing = [r.plan.site.name for r in report.results if _moving(r)]
        self.track(progressing)

    def track(self, names: Iterable[str]) -> None:
        with self._lock:
            for name in names:
                self.tracked.setdefault(name, Rollout.PROGRESSING)
        self._wake.set()

    def discover(self) -> None:
        """Look at every managed site's Deployment soon (on the follower's thread) and follow
        each rollout in progress, whoever started it."""
        self._sweep.set()
        self._wake.set()

    def start(self) -> None:
        """Follow rollouts in the background, starting with a sweep of every managed site."""
        self.discover()
        if self.cache is not None:
            self._unsubscribe = self.cache.subscribe(self._on_change)
        self._thread = threading.Thread(target=self._loop, name="follow", daemon=True)
        self._thread.start()

    def _on_change(self, namespace: str, name: str, value: ObservedDeployment | None) -> None:
        """A cache event (on the cache's thread): note it and wake the follower's thread."""
        with self._lock:
            self._changed.add((namespace, name))
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self._sweep.is_set():
                self._sweep.clear()
                try:
                    self._discover()
                except Exception:  # a bug here must not end the following for good
                    log.exception("looking for rollouts in progress failed")
            with self._lock:
                names = list(self.tracked)
                changed = bool(self._changed)
            if not names and not changed:  # a sweep that failed is tried again after a pause
                self._wake.wait(self.interval if self._sweep.is_set() else None)
                self._wake.clear()
                continue
            try:
                self._look_at_changes()
                self.tick(names)
            except Exception:  # a bug here must not end the following for good
                log.exception("following rollouts failed; trying again")
            self._pause()

    def _pause(self) -> None:
        """Until the next look: a second; with a cache, until its next event (or a second)."""
        if self.cache is None:
            self._stop.wait(self.interval)
            return
        if self._wake.wait(self.interval) and not self._stop.is_set():
            self._stop.wait(GATHER)
        self._wake.clear()

    def _look_at_changes(self) -> None:
        """The sites whose Deployment the cache saw change: a hold a person made shows now, a
        rollout someone else started is followed (the rest waits for the next sync)."""
        with self._lock:
            changed, self._changed = self._changed, set()
        cfg = self.config()
        if not changed or cfg is None:
            return
        sites = [
            s
            for s in cfg.sites
            # a git site's Deployment is where its GitOps tool applies the reconciler's commit
            if s.delivery in (KUBERNETES, GIT)
            and any((s.namespace, view_key(t.kind, t.name)) in changed for t in s.targets)
        ]
        with self._lock:
            sites = [s for s in sites if s.name not in self.tracked]
        if not sites:
            return
        try:
            seen = self.engine.follow_all(sites, act=False, observe_all=True)
        except ReconcilerError as exc:
            log.warning("looking at changed Deployments: %s", exc)
            return
        for result in seen:
            if result.action is Action.HELD:
                self.on_result(result, None)
            if _moving(result) or result.action is Action.ROLLED_BACK:
                self.track([result.plan.site.name])

    def _discover(self) -> None:
        """Track every managed site whose rollout is in progress or failed, as the cluster says
        (one LIST per namespace holding several sites); a failed read is tried at the next."""
        cfg = self.config()
        if cfg is None or not cfg.sites:
            return
        try:
            seen = self.engine.follow_all(cfg.sites, act=False, observe_all=self.cache is not None)
        except ReconcilerError as exc:
            log.warning("looking for rollouts in progress: %s", exc)
            self._sweep.set()
            return
        found = [r.plan.site.name for r in seen if _moving(r) or r.action is Action.ROLLED_BACK]
        if found:
            log.info(
                "following the rollouts in progress of %s",
                ", ".join(sorted(found)),
                extra={"event": "rollouts_found", "sites": sorted(found)},
            )
            self.track(found)

    def tick(self, names: Iterable[str] | None = None) -> None:
        """Follow the tracked sites once (the loop calls this each second)."""
        cfg = self.config()
        if cfg is None:
            return
        with self._lock:
            wanted = set(self.tracked if names is None else names) & set(self.tracked)
        sites = [s for s in cfg.sites if s.name in wanted]
        try:
            seen = (
                self.engine.follow_all(sites, act=False, observe_all=self.cache is not None)
                if sites
                else []
            )
        except ReconcilerError as exc:
            log.warning("following rollouts: %s", exc)
            return
        feeding = {s.promote_from for s in cfg.sites if s.promote_from}
        for result in seen:
            if self._stop.is_set():
                return
            final = self._settle(result)
            if final is not None and _became_available(final, feeding) and _unrecorded(final):
                # its soak starts now: the Lease-holding follow writes available-at
                self._settle_available(final.plan.site)
            if final is None:
                continue
            name = final.plan.site.name
            with self._lock:
                before = self.tracked.get(name)
                if not _moving(final) or final.applied:
                    self.tracked.pop(name, None)
            self.on_result(final, before)
        with self._lock:
            for gone in set(self.tracked) - set(cfg.names):
                del self.tracked[gone]

    def _settle(self, seen: SiteResult) -> SiteResult | None:
        """What was seen, or the rollback it calls for (None: not ours to do, or it failed); a
        rollout seen available is recorded so (reconciler.dev/available-at: its lead time)."""
        if seen.action is not Action.ROLLED_BACK:
            if not _unrecorded(seen):
                return seen
            try:
                return self._roll_back(seen.plan.site) or seen
            except ReconcilerError as exc:
                log.warning("recording the rollout of %s available: %s", seen.plan.site.name, exc)
                return seen
        try:
            return self._roll_back(seen.plan.site)
        except ReconcilerError as exc:  # one site's trouble is that site's
            log.warning("rolling back %s: %s", seen.plan.site.name, exc)
            return None

    def _settle_available(self, site: Site) -> None:
        try:
            self._roll_back(site)
        except ReconcilerError as exc:  # the next sync records it
            log.warning("recording that %s is available: %s", site.name, exc)

    def _roll_back(self, site: Site) -> SiteResult | None:
        """Re-read and roll back (or record a rollout available), holding the Lease when there
        is one (None: another has it)."""
        if self.lease is None:
            return self.engine.follow(site)
        try:
            self.lease.acquire()
        except ReconcilerError as exc:  # another replica holds it: it rolls back, not us
            log.info("not rolling back %s: %s", site.name, exc)
            return None
        try:
            return self.engine.follow(site)
        finally:
            self.lease.release()


def _unrecorded(seen: SiteResult) -> bool:
    """A rollout of a commit the reconciler deployed, available, not recorded so yet (or a git
    site's commit applied by its GitOps tool: core.leadtime.follow_notes)."""
    return leadtime.follow_notes(seen.plan, 0.0) is not None


def _became_available(r: SiteResult, feeding: set[str]) -> bool:
    """A followed rollout of a site other sites promote from is available now."""
    return r.plan.site.name in feeding and r.plan.rollout is Rollout.AVAILABLE and not r.applied


def _moving(r: SiteResult) -> bool:
    """A rollout to follow: progressing, and not waiting on a person or the schedule (a
    CronJob before its next run, OnDelete): those are looked at by the next sync or sweep."""
    return r.plan.rollout is Rollout.PROGRESSING and not r.plan.waiting
