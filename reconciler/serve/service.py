"""The thin service: wires config reload, the runner, the Lease, the schedule and the state."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Collection
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from typing import Any

from reconciler.core import commands, history
from reconciler.core import config as config_mod
from reconciler.core.engine import Engine, SiteResult, SyncReport, SyncRequest
from reconciler.core.errors import ConfigError, ConfigUnavailable, ReconcilerError
from reconciler.core.messages import Commit
from reconciler.core.model import LeaseRecord, Rollout, Site
from reconciler.core.notifier import Notifier
from reconciler.core.runner import Runner
from reconciler.serve import state
from reconciler.serve.commitinfo import CommitInfo
from reconciler.serve.follower import Follower, SharedLease
from reconciler.serve.leader import DEFAULT_WAIT, LEASE_SECONDS, Lease, LeaseHolder, LeaseWait
from reconciler.serve.metrics import Metrics
from reconciler.serve.schedule import Schedule
from reconciler.serve.site_metrics import SiteMetrics
from reconciler.serve.state import Board, ConfigState, Notice, RunRecord

__all__ = ["Lease", "LeaseWait", "RunRecord", "Service"]

log = logging.getLogger(__name__)

LEASE_VIEW_TTL = 2.0  # the page and probes read the Lease record at most this often
HISTORY_WAIT = 5.0  # seconds GET /sites/<site> waits for the cluster's answer


class Service:
    """Everything `serve` runs besides HTTP; every trigger comes in through submit()."""

    def __init__(
        self,
        config_path: str,
        engine: Engine,
        *,
        lease: Lease | None = None,
        lease_record: Callable[[], LeaseRecord] | None = None,
        identity: str = "",
        lease_wait: float = DEFAULT_WAIT,
        lease_renew_every: float = LEASE_SECONDS / 4,
        lease_renew_deadline: float = LEASE_SECONDS * 2 / 3,
        clock: Callable[[], float] = time.time,
        web_url: str = "https://github.com",
        notifier: Notifier | None = None,
        commit_info: CommitInfo | None = None,
        cli_name: str = "reconciler",
    ) -> None:
        self.config_path = config_path
        self.engine = engine
        self.cli_name = cli_name  # how the page's hints name the CLI (`reconciler resume blog`)
        self.lease = SharedLease(lease) if lease is not None else None  # runner and follower
        self.leader: LeaseHolder | None = None
        if self.lease is not None:
            self.leader = LeaseHolder(
                self.lease,
                wait=lease_wait,
                renew_every=lease_renew_every,
                renew_deadline=lease_renew_deadline,
            )
            engine.fence = self.leader.fence  # a lost Lease stops this replica's patches
        self.identity = identity
        self.lease_record = lease_record
        self._lease_seen: tuple[float, LeaseRecord | str] | None = None
        self.clock = clock
        self.web_url = web_url.rstrip("/")
        self.metrics = Metrics()
        self.site_metrics = SiteMetrics(clock)
        self.commit_info = commit_info
        self.metrics.register(self.site_metrics)
        self.notifier = notifier
        if notifier is not None:
            notifier.outbox.on_result = self.metrics.notification
        self.config = ConfigState()
        self.board = Board()
        self.runner = Runner(self._run)
        self.schedule = Schedule(self.submit)
        self._lock = threading.Lock()
        self.started_at = clock()
        self.stopping = False
        self.extra_health: dict[str, Callable[[], str | None]] = {}
        self._history_reads: dict[str, Future[list[history.Deploy]]] = {}
        self.follower = Follower(
            engine, lambda: self.config.good, on_result=self._followed, lease=self.lease
        )
        if self.lease is not None:
            self.lease.on_taken_over = self._taken_over
        self.metrics.leader.labels(identity).set_function(lambda: float(self.leading()))
        self.reload()

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

    def lease_wait(self) -> LeaseWait | None:
        """Whom the sync in flight waits for (every queued request waits behind it)."""
        return self.leader.waiting if self.leader is not None else None

    # -- config ------------------------------------------------------------------------------

    def reload(self) -> config_mod.Config | None:
        """Re-read sites.toml; a broken file keeps the last good config and is reported."""
        try:
            fresh = config_mod.load(self.config_path)
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

    def current_sites(self) -> tuple[Site, ...]:
        """The sites of the last good config (what events are matched against)."""
        good = self.config.good
        return good.sites if good else ()

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

    def _run(self, request: SyncRequest) -> SyncReport:
        cfg = self.reload()
        if cfg is None:
            self.metrics.trigger_failures.labels(request.trigger).inc()
            raise ConfigUnavailable(f"no valid sites.toml yet: {self.config.error}")
        if request.sites is not None:
            request = replace(request, sites=request.sites & frozenset(cfg.names))
        held = self.leader.held() if self.leader is not None else contextlib.nullcontext()
        try:
            with held:
                report = self.engine.run(cfg, request)
                self._notify(cfg, report)  # under the Lease: one replica decides at a time
        except Exception:
            self.metrics.trigger_failures.labels(request.trigger).inc()
            raise
        self._record(report)
        return report

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
        with self._lock:
            counts = self.board.record(report)
        for site_state, count in counts.items():
            self.metrics.sites.labels(site_state.value).set(count)

    # -- rollouts ----------------------------------------------------------------------------

    def _taken_over(self) -> None:
        """This replica holds the Lease after another did: follow what that one left running."""
        log.info(
            "took the Lease after another replica: looking for rollouts in progress",
            extra={"event": "lease_taken_over"},
        )
        self.follower.discover()

    def start_following(self) -> None:
        """Follow rollouts in the background (each sync's report says which)."""
        self.follower.start()

    def _followed(self, result: SiteResult, before: Rollout | None) -> None:
        """What following a rollout saw: the site's state, and the rollout's outcome."""
        self.metrics.followed(result, before)
        self.site_metrics.followed(result, before)
        cfg = self.config.good
        if self.notifier is not None and cfg is not None:
            try:
                self.notifier.observe_followed(cfg, result)
            except Exception:  # never let a notification bug stop the follower
                log.exception("deciding notifications failed")
        with self._lock:
            counts = self.board.followed(result, self.clock())
        for site_state, count in counts.items():
            self.metrics.sites.labels(site_state.value).set(count)

    def command(
        self, name: str, action: str, *, by: str, reason: str = "", to: str | None = None
    ) -> dict[str, Any]:
        """hold / resume / rollback one site, then sync it so the page shows the outcome."""
        cfg = self.config.good
        if cfg is None:
            raise ConfigUnavailable(f"no valid sites.toml yet: {self.config.error}")
        site = cfg.select([name])[0]
        if action == "hold":
            done = commands.hold(self.engine, site, by=by, reason=reason)
        elif action == "resume":
            done = commands.resume(self.engine, site, by=by)
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

    def next_run(self) -> float | None:
        return self.schedule.next_run()

    # -- views -------------------------------------------------------------------------------

    @property
    def runs(self) -> dict[str, RunRecord]:
        return self.board.runs

    def readiness(self) -> dict[str, Any]:
        checks: dict[str, str | None] = {
            "scheduler": None if self.schedule.running else "scheduler not running"
        }
        checks.update({name: check() for name, check in self.extra_health.items()})
        return state.readiness_view(self.config, checks, stopping=self.stopping)

    def leading(self) -> bool:
        """True while this replica holds the Lease (for a sync or a rollback)."""
        if self.lease is None or not self.lease.held:
            return False
        return self.leader is None or self.leader.fence() is None

    def leadership(self) -> dict[str, Any]:
        """This replica, the Lease's holder and since when, and what a sync waits for."""
        waiting = self.lease_wait()
        view: dict[str, Any] = {
            "identity": self.identity,
            "lease": self.lease is not None,
            "leading": self.leading(),
            "waiting": waiting.as_dict() if waiting is not None else None,
        }
        if self.lease is None:
            return view
        seen = self._read_lease()
        if isinstance(seen, str):
            return view | {"holder": None, "error": seen}
        return view | {
            "holder": seen.holder,
            "held_since": seen.acquired_at if seen.holder else None,
            "until": seen.expires_at,
            "error": None,
        }

    def _read_lease(self) -> LeaseRecord | str:
        """The Lease record (read at most every LEASE_VIEW_TTL seconds), or why it cannot be."""
        if self.lease_record is None:
            return LeaseRecord(holder=None)
        now = time.monotonic()
        if self._lease_seen is None or now - self._lease_seen[0] > LEASE_VIEW_TTL:
            try:
                seen: LeaseRecord | str = self.lease_record()
            except ReconcilerError as exc:
                seen = f"cannot read the Lease: {exc}"
            self._lease_seen = (now, seen)
        return self._lease_seen[1]

    def status(self) -> dict[str, Any]:
        next_run, syncing = self.next_run(), self.runner.busy
        with self._lock:
            view = state.status_view(
                self.board,
                self.config,
                self.config_path,
                next_run=next_run,
                syncing=syncing,
                web_url=self.web_url,
            )
        view["notifications"] = self._notifications()
        view["leader"] = self.leadership()
        self._add_commits(view["sites"])
        if self.cli_name != state.CLI:
            for site in view["sites"]:
                site["reason"] = state.hint(site.get("reason") or "", self.cli_name)
        return view

    def site_history(self, name: str) -> dict[str, Any]:
        """GET /sites/<name>: the site as on the page and its deploys, read from the
        cluster's ReplicaSets like `reconciler history` (an error says why there are none).
        The read runs beside the request, one per site at a time; the page waits for it at
        most HISTORY_WAIT seconds (the client's timeouts and retries allow minutes)."""
        site = next(s for s in self.current_sites() if s.name == name)
        view = next(s for s in self.status()["sites"] if s["site"] == name)
        try:
            found = self._history_read(site).result(timeout=HISTORY_WAIT)
        except FutureTimeout:
            error = f"the API server has not answered in {HISTORY_WAIT:.0f} s; reload to retry"
            return {"site": view, "deploys": [], "error": error}
        except ReconcilerError as exc:
            return {"site": view, "deploys": [], "error": str(exc)}
        deploys = [d.as_dict() for d in found]
        for d in deploys:
            if d["sha"]:
                d["url"] = f"{self.web_url}/{site.repo}/commit/{d['sha']}"
        return {"site": view, "deploys": deploys, "error": None}

    def _history_read(self, site: Site) -> Future[list[history.Deploy]]:
        """The read of `site`'s history in flight, or a new one."""
        with self._lock:
            reading = self._history_reads.get(site.name)
            if reading is not None and not reading.done():
                return reading
            future: Future[list[history.Deploy]] = Future()
            self._history_reads[site.name] = future

        def read() -> None:
            try:
                future.set_result(history.of_site(self.engine.cluster, site))
            except Exception as exc:  # ReconcilerError; anything else is the page's to show
                future.set_exception(exc)

        threading.Thread(target=read, name=f"history-{site.name}", daemon=True).start()
        return future

    def _add_commits(self, sites: list[dict[str, Any]]) -> None:
        """Subject and author of what runs and of the head, and the commits in between."""
        if self.commit_info is None:
            return
        with self._lock:
            results = {name: record.result for name, record in self.board.sites.items()}
        for site in sites:
            result = results.get(site["site"])
            key = CommitInfo.key(result) if result is not None else None
            found = self.commit_info.get(key)
            if key is None or found is None:
                continue
            repo, running, head = key
            site["running_commit"] = _commit_view(found.base)
            site["head_commit"] = _commit_view(found.head)
            site["commits_behind"] = found.total
            site["behind_commits"] = [_commit_view(c) for c in found.commits[-5:]]
            if running != head:
                site["compare_url"] = f"{self.web_url}/{repo}/compare/{running}...{head}"
            self.site_metrics.commits_behind(site["site"], found.total)

    def _notifications(self) -> dict[str, Any] | None:
        """Delivery counts and the last undelivered messages (None: notifications are off)."""
        if self.notifier is None:
            return None
        box = self.notifier.outbox
        return {
            "delivered": box.delivered,
            "undelivered": box.undelivered,
            "pending": box.pending,
            "recent_failures": [
                {
                    "at": f.at,
                    "channel": f.channel,
                    "event": f.event,
                    "site": f.site,
                    "error": f.error,
                }
                for f in reversed(box.failures)
            ],
        }

    def run_status(self, run_id: str) -> dict[str, Any] | None:
        with self._lock:
            record = self.board.runs.get(run_id)
        if record is None:
            return None
        waiting = None if record.future.done() else self.lease_wait()
        return state.run_view(record, waiting.as_dict() if waiting is not None else None)

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


def _commit_view(c: Commit | None) -> dict[str, str] | None:
    if c is None:
        return None
    return {"sha": c.sha, "subject": c.subject, "author": c.author, "url": c.url}
