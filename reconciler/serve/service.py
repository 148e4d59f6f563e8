"""The long-lived service: config reload, single-flight runner, schedule, lease, and site status."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from reconciler.core import config as config_mod
from reconciler.core.engine import Engine, SiteResult, SyncReport, SyncRequest
from reconciler.core.errors import ConfigError, ConfigUnavailable, ReconcilerError
from reconciler.core.model import Site, SiteState
from reconciler.core.notifier import Notifier
from reconciler.core.runner import Runner, ShuttingDown
from reconciler.serve.metrics import Metrics

log = logging.getLogger(__name__)

RUN_HISTORY = 200


class Lease(Protocol):
    """One replica at a time: acquire raises (LeaseBusy) while another holds it."""

    def acquire(self) -> None: ...

    def renew(self) -> None: ...

    def release(self) -> None: ...


@dataclass
class ConfigState:
    """The last good config and, when the file is broken now, what is wrong with it."""

    good: config_mod.Config | None = None
    error: str | None = None
    error_since: float | None = None
    loaded_at: float | None = None


@dataclass
class SiteRecord:
    """What the status page shows for one site: the last result that covered it."""

    result: SiteResult
    at: float
    run_id: str
    trigger: str


@dataclass
class RunRecord:
    """A submitted request, readable at /runs/<id>."""

    id: str
    request: SyncRequest
    future: Future[SyncReport]
    submitted: float
    sites: list[str] | None = field(default=None)


class Service:
    """Everything `serve` runs besides HTTP; every trigger goes through submit()."""

    def __init__(
        self,
        config_path: str,
        engine: Engine,
        *,
        lease: Lease | None = None,
        lease_wait: float = 30.0,
        clock: Callable[[], float] = time.time,
        web_url: str = "https://github.com",
        notifier: Notifier | None = None,
    ) -> None:
        self.config_path = config_path
        self.engine = engine
        self.lease = lease
        self.lease_wait = lease_wait
        self.clock = clock
        self.web_url = web_url.rstrip("/")
        self.metrics = Metrics()
        self.notifier = notifier
        if notifier is not None:
            notifier.outbox.on_result = self.metrics.notification
        self.config = ConfigState()
        self.sites: dict[str, SiteRecord] = {}
        self.runs: OrderedDict[str, RunRecord] = OrderedDict()
        self.last_report: SyncReport | None = None
        self.runner = Runner(self._run)
        self.scheduler: BackgroundScheduler | None = None
        self._schedule_key: tuple[str, str, int] | None = None
        self._lock = threading.Lock()
        self.started_at = clock()
        self.stopping = False
        self.extra_health: dict[str, Callable[[], str | None]] = {}
        self.reload()

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
            for gone in set(self.sites) - set(fresh.names):
                del self.sites[gone]
        if recovered:
            log.info("sites.toml is valid again", extra={"event": "config_valid"})
        self.metrics.config_valid.set(1)
        self._reschedule(fresh)
        return fresh

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
            return {n: s.result.plan.sha for n, s in self.sites.items() if s.result.plan.sha}

    # -- triggers ----------------------------------------------------------------------------

    def submit(self, request: SyncRequest) -> RunRecord:
        """The one entry point of every trigger; raises ShuttingDown once stopping."""
        record_id = uuid.uuid4().hex[:12]
        future = self.runner.submit(request)
        record = RunRecord(
            record_id,
            request,
            future,
            self.clock(),
            sorted(request.sites) if request.sites is not None else None,
        )
        with self._lock:
            self.runs[record_id] = record
            while len(self.runs) > RUN_HISTORY:
                self.runs.popitem(last=False)
        return record

    def submit_future(self, request: SyncRequest) -> Future[SyncReport]:
        """submit() for callers that only want the Future (the Pub/Sub trigger)."""
        return self.submit(request).future

    def _run(self, request: SyncRequest) -> SyncReport:
        cfg = self.reload()
        if cfg is None:
            self.metrics.trigger_failures.labels(request.trigger).inc()
            raise ConfigUnavailable(f"no valid sites.toml yet: {self.config.error}")
        if request.sites is not None:
            known = request.sites & set(cfg.names)
            request = replace(request, sites=frozenset(known))
        renewer = self._hold_lease(request)
        try:
            report = self.engine.run(cfg, request)
            self._notify(cfg, report)  # under the Lease: one replica decides at a time
        finally:
            if renewer is not None:
                renewer.set()
                assert self.lease is not None
                self.lease.release()
        self._record(report)
        return report

    def _notify(self, cfg: config_mod.Config, report: SyncReport) -> None:
        if self.notifier is None:
            return
        try:
            self.notifier.observe(cfg, report)
        except Exception:  # a notification bug must never fail the sync that triggered it
            log.exception("deciding notifications failed")

    def _hold_lease(self, request: SyncRequest) -> threading.Event | None:
        """Take the Lease (waiting a little for another replica), and renew it while we sync."""
        if self.lease is None:
            return None
        lease = self.lease
        deadline = time.monotonic() + self.lease_wait
        while True:
            try:
                lease.acquire()
                break
            except ReconcilerError as exc:
                if time.monotonic() >= deadline or self.stopping:
                    self.metrics.trigger_failures.labels(request.trigger).inc()
                    raise
                log.info("waiting for the Lease: %s", exc)
                time.sleep(1.0)
        done = threading.Event()

        def renew() -> None:
            while not done.wait(15):
                try:
                    lease.renew()
                except ReconcilerError as exc:
                    log.warning("could not renew the Lease: %s", exc)

        threading.Thread(target=renew, name="lease", daemon=True).start()
        return done

    def _record(self, report: SyncReport) -> None:
        self.metrics.record(report, self.engine.heads.rate_limits())
        with self._lock:
            self.last_report = report
            if not report.plan_only and not report.dry_run:
                for result in report.results:
                    self.sites[result.plan.site.name] = SiteRecord(
                        result, report.finished_at, report.run_id, report.trigger
                    )
            states: dict[SiteState, int] = {}
            for state in self.sites.values():
                key = state.result.state
                states[key] = states.get(key, 0) + 1
        for key in (SiteState.IN_SYNC, SiteState.BEHIND, SiteState.FAILING, SiteState.PAUSED):
            self.metrics.sites.labels(key.value).set(states.get(key, 0))

    # -- schedule ----------------------------------------------------------------------------

    def start_schedule(self) -> None:
        """Start APScheduler with the cron from sites.toml (missed runs coalesce into one)."""
        self.scheduler = BackgroundScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
            timezone="UTC",
        )
        self.scheduler.start()
        if self.config.good is not None:
            self._reschedule(self.config.good, force=True)

    def _reschedule(self, cfg: config_mod.Config, *, force: bool = False) -> None:
        scheduler = self.scheduler
        if scheduler is None:
            return
        s = cfg.service
        key = (s.schedule, s.timezone, s.jitter)
        if key == self._schedule_key and not force:
            return
        trigger = CronTrigger.from_crontab(s.schedule, timezone=s.timezone)
        if s.jitter:
            trigger.jitter = s.jitter
        scheduler.add_job(
            self._scheduled, trigger, id="sync", replace_existing=True, name="hourly sync"
        )
        self._schedule_key = key
        log.info("schedule: %s (%s), jitter %ss", s.schedule, s.timezone, s.jitter)

    def _scheduled(self) -> None:
        with contextlib.suppress(ShuttingDown):
            self.submit(SyncRequest(trigger="schedule"))

    def next_run(self) -> float | None:
        if self.scheduler is None:
            return None
        job = self.scheduler.get_job("sync")
        if job is None or job.next_run_time is None:
            return None
        return float(job.next_run_time.timestamp())

    # -- health and status -------------------------------------------------------------------

    def readiness(self) -> dict[str, Any]:
        checks: dict[str, str | None] = {
            "config": None if self.config.good else f"no valid sites.toml: {self.config.error}",
            "scheduler": None
            if self.scheduler is not None and self.scheduler.running
            else "scheduler not running",
        }
        for name, check in self.extra_health.items():
            checks[name] = check()
        if self.stopping:
            checks["shutdown"] = "shutting down"
        ready = all(v is None for v in checks.values())
        detail = {k: (v or "ok") for k, v in checks.items()}
        if self.config.error:
            detail["config_warning"] = self.config.error
        return {"ready": ready, "checks": detail}

    def status(self) -> dict[str, Any]:
        with self._lock:
            cfg = self.config.good
            sites = []
            for site in cfg.sites if cfg else ():
                state = self.sites.get(site.name)
                sites.append(self._site_status(site.name, site.repo, state))
            last = self.last_report
        return {
            "config": {
                "path": self.config_path,
                "valid": self.config.error is None,
                "error": self.config.error,
                "loaded_at": self.config.loaded_at,
            },
            "schedule": cfg.service.schedule if cfg else None,
            "next_run": self.next_run(),
            "syncing": self.runner.busy,
            "last_sync": None
            if last is None
            else {
                "run_id": last.run_id,
                "trigger": last.trigger,
                "finished_at": last.finished_at,
                "duration_s": round(last.duration, 3),
                "summary": last.summary(),
                "ok": last.ok,
            },
            "sites": sites,
            "notifications": self._notifications(),
        }

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

    def _site_status(self, name: str, repo: str, state: SiteRecord | None) -> dict[str, Any]:
        if state is None:
            return {
                "site": name,
                "repo": repo,
                "state": SiteState.UNKNOWN.value,
                "reason": "not synced yet",
            }
        data = state.result.as_dict()
        sha = data.get("sha")
        running = data.get("running_sha")
        data.update(
            state=state.result.state.value,
            checked_at=state.at,
            run_id=state.run_id,
            trigger=state.trigger,
            head_url=f"{self.web_url}/{repo}/commit/{sha}" if sha else None,
            running_url=f"{self.web_url}/{repo}/commit/{running}" if running else None,
            branch_url=f"{self.web_url}/{repo}/tree/{data['branch']}"
            if data.get("branch")
            else None,
        )
        return data

    def run_status(self, run_id: str) -> dict[str, Any] | None:
        with self._lock:
            record = self.runs.get(run_id)
        if record is None:
            return None
        out: dict[str, Any] = {
            "id": record.id,
            "sites": record.sites,
            "submitted": record.submitted,
        }
        future = record.future
        if not future.done():
            out["state"] = "running" if future.running() else "queued"
            return out
        exc = future.exception()
        if exc is not None:
            out.update(state="failed", error=str(exc))
            return out
        out.update(report_dict(future.result()))
        out["state"] = "done"
        return out

    # -- lifecycle ---------------------------------------------------------------------------

    def shutdown(self, timeout: float = 20.0) -> bool:
        """Stop taking triggers, let the patch in flight finish, fail what is queued, and wait
        up to `timeout` for the sync in flight. Safe to call again (to wait longer); returns
        False while a sync is still running."""
        if not self.stopping:
            self.stopping = True
            self.engine.stopping.set()
            if self.scheduler is not None and self.scheduler.running:
                self.scheduler.shutdown(wait=False)
        done = self.runner.close(timeout)
        if done and self.notifier is not None:
            self.notifier.outbox.close(min(timeout, 5.0))
        return done


def report_dict(report: SyncReport) -> dict[str, Any]:
    return {
        "run_id": report.run_id,
        "trigger": report.trigger,
        "ok": report.ok,
        "summary": report.summary(),
        "started_at": report.started_at,
        "finished_at": report.finished_at,
        "duration_s": round(report.duration, 3),
        "results": [r.as_dict() for r in report.results],
    }
