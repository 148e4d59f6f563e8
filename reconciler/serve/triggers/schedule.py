"""The schedule trigger: APScheduler fires the cron from sites.toml into the one submit door."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger

from reconciler.core.config.sites import ServiceSettings, shown
from reconciler.core.errors import ShuttingDown
from reconciler.core.model import SyncRequest

log = logging.getLogger(__name__)

JOB_ID = "sync"
WAKE_ID = "gate:"  # + a site's name: its one-off sync when a soak or a window ends


def cron_problem(schedule: str, timezone: str) -> str | None:
    """Why a crontab expression or time zone is unusable, or None."""
    try:
        CronTrigger.from_crontab(schedule, timezone=timezone)
    except (ValueError, LookupError) as exc:
        return f'"schedule" {shown(schedule)} (timezone {timezone!r}) is not valid: {exc}'
    return None


class Schedule:
    """Submits SyncRequest(trigger="schedule") at the cron's times; follows config reloads."""

    def __init__(self, submit: Callable[[SyncRequest], object]) -> None:
        self._submit = submit
        self.scheduler: BackgroundScheduler | None = None
        self._key: tuple[str, str, int] | None = None
        self._wanted: ServiceSettings | None = None

    @property
    def running(self) -> bool:
        return self.scheduler is not None and bool(self.scheduler.running)

    def start(self) -> None:
        """Start APScheduler (missed runs coalesce into one) with the last schedule followed."""
        self.scheduler = BackgroundScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
            timezone="UTC",
        )
        self.scheduler.start()
        if self._wanted is not None:
            self.follow(self._wanted, force=True)

    def follow(self, settings: ServiceSettings, *, force: bool = False) -> None:
        """Use this cron from now on (a no-op when it did not change)."""
        self._wanted = settings
        scheduler = self.scheduler
        if scheduler is None:
            return
        key = (settings.schedule, settings.timezone, settings.jitter)
        if key == self._key and not force:
            return
        trigger = CronTrigger.from_crontab(settings.schedule, timezone=settings.timezone)
        if settings.jitter:
            trigger.jitter = settings.jitter
        name = f"scheduled sync ({settings.schedule})"  # the log names the cron, not "hourly"
        scheduler.add_job(self.fire, trigger, id=JOB_ID, replace_existing=True, name=name)
        self._key = key
        log.info(
            "schedule: %s (%s), jitter %ss", settings.schedule, settings.timezone, settings.jitter
        )

    def fire(self) -> None:
        """What APScheduler calls at the cron time."""
        with contextlib.suppress(ShuttingDown):
            self._submit(SyncRequest(trigger="schedule"))

    def wake(self, site: str, at: float) -> None:
        """Sync `site` once at `at` (seconds since the epoch): when a gate opens by itself (a
        soak's end, a deploy window's). One such job per site: a later call moves it."""
        scheduler = self.scheduler
        if scheduler is None:
            return
        when = datetime.fromtimestamp(at + 1, UTC)  # a second past the edge: surely open
        scheduler.add_job(
            self._wake,
            DateTrigger(run_date=when),
            args=(site,),
            id=f"{WAKE_ID}{site}",
            replace_existing=True,
            name=f"sync {site} when its gate opens",
        )

    def _wake(self, site: str) -> None:
        with contextlib.suppress(ShuttingDown):
            self._submit(SyncRequest(sites=frozenset({site}), trigger="gate"))

    def next_run(self) -> float | None:
        if self.scheduler is None:
            return None
        job = self.scheduler.get_job(JOB_ID)
        if job is None or job.next_run_time is None:
            return None
        return float(job.next_run_time.timestamp())

    def stop(self) -> None:
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
