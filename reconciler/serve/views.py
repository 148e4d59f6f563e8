"""What serve shows of its state (the page, /status, /readyz, /runs, a site's history, who
leads): read-only views of the Service, which inherits them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from reconciler.core.errors import ReconcilerError
from reconciler.core.model import LeaseRecord, Site
from reconciler.core.notify.render import Commit
from reconciler.core.rollout.history import Deploy
from reconciler.serve import state
from reconciler.serve.commitinfo import CommitInfo
from reconciler.serve.follower import SharedLease
from reconciler.serve.leader import LeaseHolder, LeaseWait
from reconciler.serve.metrics import Metrics
from reconciler.serve.site_metrics import SiteMetrics
from reconciler.serve.state import Board, ConfigState
from reconciler.serve.triggers.schedule import Schedule
from reconciler.sync import history
from reconciler.sync.engine import Engine
from reconciler.sync.notifier import Notifier
from reconciler.sync.runner import Runner

LEASE_VIEW_TTL = 2.0  # the page and probes read the Lease record at most this often
HISTORY_WAIT = 5.0  # seconds GET /sites/<site> waits for the cluster's answer


class ServiceViews:
    """The views; the Service holds the state they read."""

    config_path: str
    engine: Engine
    runner: Runner
    schedule: Schedule
    metrics: Metrics
    site_metrics: SiteMetrics
    leader: LeaseHolder | None
    lease: SharedLease | None
    identity: str
    lease_record: Callable[[], LeaseRecord] | None
    _lease_seen: tuple[float, LeaseRecord | str] | None
    clock: Callable[[], float]
    web_url: str
    notifier: Notifier | None
    commit_info: CommitInfo | None
    config: ConfigState
    board: Board
    _lock: threading.Lock
    stopping: bool
    extra_health: dict[str, Callable[[], str | None]]
    _history_reads: dict[str, Future[list[Deploy]]]
    cli_name: str

    def next_run(self) -> float | None:
        return self.schedule.next_run()

    def current_sites(self) -> tuple[Site, ...]:
        """The sites of the last good config (what events are matched against)."""
        good = self.config.good
        return good.sites if good else ()

    def lease_wait(self) -> LeaseWait | None:
        """Whom the sync in flight waits for (every queued request waits behind it)."""
        return self.leader.waiting if self.leader is not None else None

    def leading(self) -> bool:
        """True while this replica holds the Lease (for a sync or a rollback)."""
        if self.lease is None or not self.lease.held:
            return False
        return self.leader is None or self.leader.fence() is None

    def readiness(self) -> dict[str, Any]:
        checks: dict[str, str | None] = {
            "scheduler": None if self.schedule.running else "scheduler not running"
        }
        checks.update({name: check() for name, check in self.extra_health.items()})
        return state.readiness_view(self.config, checks, stopping=self.stopping)

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
                now=self.clock(),
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

    def _history_read(self, site: Site) -> Future[list[Deploy]]:
        """The read of `site`'s history in flight, or a new one."""
        with self._lock:
            reading = self._history_reads.get(site.name)
            if reading is not None and not reading.done():
                return reading
            future: Future[list[Deploy]] = Future()
            self._history_reads[site.name] = future

        def read() -> None:
            try:
                future.set_result(
                    history.of_site(self.engine.cluster_of(site), site, self.engine.deliveries)
                )
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


def _commit_view(c: Commit | None) -> dict[str, str] | None:
    if c is None:
        return None
    return {"sha": c.sha, "subject": c.subject, "author": c.author, "url": c.url}
