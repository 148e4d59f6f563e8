"""The thin service: the one door submit(), config reload, a run under the Lease, the views."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Collection
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from typing import Any

from reconciler.core.config import sites as config_mod
from reconciler.core.errors import ConfigError, ConfigUnavailable, ShuttingDown
from reconciler.core.model import LeaseRecord, Rollout, SiteResult, SyncReport, SyncRequest
from reconciler.core.rollout.history import Deploy
from reconciler.serve.commitinfo import CommitInfo
from reconciler.serve.follower import Follower, SharedLease
from reconciler.serve.leader import LeaseHolder, LeaseWait
from reconciler.serve.metrics import Metrics
from reconciler.serve.site_metrics import SiteMetrics
from reconciler.serve.state import Board, ConfigState, Notice, RunRecord
from reconciler.serve.triggers.schedule import Schedule, cron_problem
from reconciler.serve.views import ServiceViews
from reconciler.sync import commands, config_file
from reconciler.sync.engine import Engine
from reconciler.sync.notifier import Notifier
from reconciler.sync.runner import Runner

__all__ = ["RunRecord", "Service"]

log = logging.getLogger(__name__)
REMEMBERED_PUSHES = 4096  # push webhook times kept for the lead time (commit: when pushed)


class Service(ServiceViews):
    """Everything `serve` runs besides HTTP; every trigger comes in through submit()."""

    def __init__(
        self,
        config_path: str,
        engine: Engine,
        *,
        metrics: Metrics,
        site_metrics: SiteMetrics,
        leader: LeaseHolder | None = None,
        lease: SharedLease | None = None,
        lease_record: Callable[[], LeaseRecord] | None = None,
        identity: str = "",
        clock: Callable[[], float] = time.time,
        web_url: str = "https://github.com",
        notifier: Notifier | None = None,
        commit_info: CommitInfo | None = None,
        cli_name: str = "reconciler",
    ) -> None:
        """The parts come built from the composition root (wiring.build_service), which then
        attaches the runner, the schedule and the follower (they call this Service back)."""
        self.config_path = config_path
        self.engine = engine
        self.runner: Runner
        self.schedule: Schedule
        self.follower: Follower
        self.metrics = metrics
        self.site_metrics = site_metrics
        self.leader = leader
        self.lease = lease  # shared by the runner and the follower
        self.identity = identity
        self.lease_record = lease_record
        self._lease_seen: tuple[float, LeaseRecord | str] | None = None
        self.cli_name = cli_name  # how the page's hints name the CLI (`reconciler resume blog`)
        self.clock = clock
        self.web_url = web_url.rstrip("/")
        self.notifier = notifier
        self.commit_info = commit_info
        self.config = ConfigState()
        self.board = Board()
        self._lock = threading.Lock()
        self.started_at = clock()
        self.stopping = False
        self.extra_health: dict[str, Callable[[], str | None]] = {}
        # called with every valid sites.toml read (the watch-fed cache follows its namespaces)
        self.on_config: list[Callable[[config_mod.Config], None]] = []
        self._history_reads: dict[str, Future[list[Deploy]]] = {}
        self._pushes: OrderedDict[tuple[str, str], float] = OrderedDict()  # (repo, sha): time

    def note_push(self, repo: str, sha: str, at: float) -> None:
        """A push webhook's time for a commit (the first delivery's), kept for the next syncs'
        lead time; the oldest are forgotten past REMEMBERED_PUSHES."""
        with self._lock:
            self._pushes.setdefault((repo.lower(), sha), at)
            while len(self._pushes) > REMEMBERED_PUSHES:
                self._pushes.popitem(last=False)

    def pushed_at(self, repo: str, sha: str) -> float | None:
        """When a push webhook said ``sha`` was pushed to ``repo`` (None: no delivery said)."""
        with self._lock:
            return self._pushes.get((repo.lower(), sha))

    def attach(self, runner: Runner, schedule: Schedule, follower: Follower) -> None:
        """The parts bound to this Service's run(), submit() and followed(); then the first
        read of sites.toml (which sets the schedule's cron)."""
        self.runner, self.schedule, self.follower = runner, schedule, follower
        self.reload()

    def good_config(self) -> config_mod.Config | None:
        """The last valid sites.toml (what the follower follows)."""
        return self.config.good

    # -- the one door ------------------------------------------------------------------------

    def submit(self, request: SyncRequest) -> RunRecord:
        """The one entry point of every trigger; raises ShuttingDown once stopping."""
        future = self.runner.submit(request)
        record = RunRecord(
            uuid.uuid4().hex[:12],
            request,
            future,
            self.clock(),
            sorted(request.sites) if request.sites is not None else None,
        )
        with self._lock:
            self.board.add_run(record)
        return record

    def submit_future(self, request: SyncRequest) -> Future[SyncReport]:
        """submit() for callers that only want the Future (the Pub/Sub trigger)."""
        return self.submit(request).future

    def await_run(self, record: RunRecord, limit: float) -> SyncReport | LeaseWait | None:
        """The report of the run covering `record` within `limit` seconds; what it waits for
        once it has waited for another replica's Lease as long as the Lease wait allows (it
        stays queued); None when `limit` passed. Raises what the run raised."""
        deadline = time.monotonic() + limit
        while (left := deadline - time.monotonic()) > 0:
            try:
                return record.future.result(timeout=min(left, 0.5))
            except FutureTimeout:
                waiting = self.lease_wait()
                if waiting is not None and time.monotonic() >= waiting.answer_by:
                    return waiting
        return None

    # -- config ------------------------------------------------------------------------------

    def reload(self) -> config_mod.Config | None:
        """Re-read sites.toml; a broken file keeps the last good config and is reported."""
        try:
            fresh = config_file.load(self.config_path, schedule_problem=cron_problem)
        except ConfigError as exc:
            message = str(exc)
            with self._lock:
                changed = message != self.config.error
                self.config.error = message
                if changed:
                    self.config.error_since = self.clock()
            if changed:
                log.error(
                    "sites.toml is invalid; keeping the last good config: %s",
                    message,
                    extra={"event": "config_invalid", "problems": message},
                )
            self.metrics.config_valid.set(0)
            return self.config.good
        with self._lock:
            recovered = self.config.error is not None
            self.config = ConfigState(good=fresh, loaded_at=self.clock())
            self.board.keep_only(fresh.names)
        self.site_metrics.keep_only(set(fresh.names))
        if recovered:
            log.info("sites.toml is valid again", extra={"event": "config_valid"})
        self.metrics.config_valid.set(1)
        self.schedule.follow(fresh.service)
        for hook in self.on_config:
            hook(fresh)
        return fresh

    def retry_after(self) -> int:
        """Whole seconds until GitHub's exhausted rate limit resets (60 when none is known:
        a secondary limit, whose retry-after the source keeps to itself)."""
        now = self.clock()
        resets = [
            limit.reset_epoch - now
            for limit in self.engine.heads.rate_limits().values()
            if limit.remaining <= 0 and limit.reset_epoch > now
        ]
        return max(1, math.ceil(min(resets))) if resets else 60

    def site_names(self) -> tuple[str, ...]:
        good = self.config.good
        return good.names if good else ()

    def known_heads(self) -> dict[str, str]:
        """Each site's branch head (SHA) as the last sync that covered it saw it."""
        with self._lock:
            return {n: s.result.plan.sha for n, s in self.board.sites.items() if s.result.plan.sha}

    def report_event(self, sites: Collection[str], event: str, reason: str) -> None:
        """Show an event that deploys nothing (a deleted branch or image) on its sites."""
        notice = Notice(self.clock(), event, reason)
        with self._lock:
            for name in sites:
                self.board.notices[name] = notice

    # -- a run -------------------------------------------------------------------------------

    def run(self, request: SyncRequest) -> SyncReport:
        """One sync under the Lease (the runner calls it, one at a time)."""
        cfg = self.reload()
        if cfg is None:
            self.metrics.trigger_failures.labels(request.trigger).inc()
            raise ConfigUnavailable(f"no valid sites.toml yet: {self.config.error}")
        if request.sites is not None:
            request = replace(request, sites=request.sites & frozenset(cfg.names))
        held = self.leader.held() if self.leader is not None else contextlib.nullcontext()
        try:
            with held, self._reads(request):
                report = self.engine.run(cfg, request)
                with self._lock:  # what equals the last results is held once (RUN_HISTORY)
                    report = self.board.shared(report)
                self._notify(cfg, report)  # under the Lease: one replica decides at a time
        except Exception:
            self.metrics.trigger_failures.labels(request.trigger).inc()
            raise
        self._record(report)
        return report

    def _reads(self, request: SyncRequest) -> contextlib.AbstractContextManager[None]:
        """A sync of named sites (a command, a webhook, POST /sync/<site>) reads them from the API
        server: someone may have just changed them. A sync of every site (the schedule, POST
        /sync, the startup sync) reads a watch-fed cache when the cluster has one."""
        if request.sites is not None:  # every cluster's, named ones too
            return self.engine.clusters.fresh()
        return contextlib.nullcontext()

    def _notify(self, cfg: config_mod.Config, report: SyncReport) -> None:
        if self.notifier is None:
            return
        try:
            self.notifier.observe(cfg, report)
        except Exception:  # a notification bug must never fail the sync that triggered it
            log.exception("deciding notifications failed")

    def _record(self, report: SyncReport) -> None:
        self.metrics.record(report, self.engine.heads.rate_limits())
        self.site_metrics.record(report)
        if self.commit_info is not None and not (report.dry_run or report.plan_only):
            self.commit_info.refresh(report.results)
        self.follower.track_report(report)
        if not (report.dry_run or report.plan_only):
            for r in report.results:  # a soak or a deploy window that ends by itself
                if r.plan.retry_at is not None:
                    self.schedule.wake(r.plan.site.name, r.plan.retry_at)
        with self._lock:
            counts = self.board.record(report)
        for site_state, count in counts.items():
            self.metrics.sites.labels(site_state.value).set(count)

    # -- rollouts ----------------------------------------------------------------------------

    def taken_over(self) -> None:
        """This replica holds the Lease after another did: follow what that one left running."""
        log.info(
            "took the Lease after another replica: looking for rollouts in progress",
            extra={"event": "lease_taken_over"},
        )
        self.follower.discover()

    def start_following(self) -> None:
        """Follow rollouts in the background (each sync's report says which)."""
        self.follower.start()

    def followed(self, result: SiteResult, before: Rollout | None) -> None:
        """What following a rollout saw: the site's state, and the rollout's outcome."""
        self.metrics.followed(result, before)
        self.site_metrics.followed(result, before)
        cfg = self.config.good
        if self.notifier is not None and cfg is not None:
            try:
                self.notifier.observe_followed(cfg, result)
            except Exception:  # never let a notification bug stop the follower
                log.exception("deciding notifications failed")
        self._promote_after(result, before)
        with self._lock:
            counts = self.board.followed(result, self.clock())
        for site_state, count in counts.items():
            self.metrics.sites.labels(site_state.value).set(count)

    def _promote_after(self, result: SiteResult, before: Rollout | None) -> None:
        """A rollout of a site others promote from became available: sync its followers, so
        that they start soaking (or deploy, without a soak) without waiting for the schedule."""
        cfg = self.config.good
        done = result.plan.rollout is Rollout.AVAILABLE and before is Rollout.PROGRESSING
        if cfg is None or not done:
            return
        name = result.plan.site.name
        followers = frozenset(s.name for s in cfg.sites if s.promote_from == name)
        if followers:
            with contextlib.suppress(ShuttingDown):
                self.submit(SyncRequest(sites=followers, trigger="promotion"))

    def command(
        self, name: str, action: str, *, by: str, reason: str = "", to: str | None = None
    ) -> dict[str, Any]:
        """hold / resume / rollback / approve one site (`to`: the rollback's or the approval's
        commit), then sync it so the page shows the outcome."""
        cfg = self.config.good
        if cfg is None:
            raise ConfigUnavailable(f"no valid sites.toml yet: {self.config.error}")
        site = cfg.select([name])[0]
        if action == "hold":
            done = commands.hold(self.engine, site, by=by, reason=reason)
        elif action == "resume":
            done = commands.resume(self.engine, site, by=by)
        elif action == "approve":
            done = commands.approve(self.engine, cfg, site, by=by, sha=to)
        else:
            done = commands.rollback(self.engine, site, by=by, to=to)
        log.info(done.message, extra={"event": action, "site": name, "by": by})
        record = self.submit(SyncRequest(sites=frozenset({name}), trigger=action))
        return {**done.as_dict(), "run": record.id, "status_url": f"/runs/{record.id}"}

    # -- schedule ----------------------------------------------------------------------------

    @property
    def scheduler(self) -> Any:
        """The APScheduler behind the schedule trigger (None until started)."""
        return self.schedule.scheduler

    def start_schedule(self) -> None:
        self.schedule.start()

    def _scheduled(self) -> None:
        self.schedule.fire()

    # -- views -------------------------------------------------------------------------------

    @property
    def runs(self) -> dict[str, RunRecord]:
        return self.board.runs

    # -- lifecycle ---------------------------------------------------------------------------

    def shutdown(self, timeout: float = 20.0) -> bool:
        """Stop taking triggers, let the patch in flight finish, fail what is queued, and wait
        up to `timeout` for the sync in flight. Safe to call again (to wait longer); returns
        False while a sync is still running."""
        if not self.stopping:
            self.stopping = True
            self.follower.stop(timeout=min(timeout, 5.0))
            self.engine.stopping.set()
            if self.leader is not None:
                self.leader.stopping.set()
            self.schedule.stop()
        done = self.runner.close(timeout)
        if done and self.notifier is not None:
            self.notifier.outbox.close(min(timeout, 5.0))
        return done
