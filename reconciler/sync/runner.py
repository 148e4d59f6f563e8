"""One sync at a time: every trigger submits here; requests during a run join one follow-up."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from reconciler.core.errors import ShuttingDown
from reconciler.core.model import SyncReport, SyncRequest

__all__ = ["Runner", "ShuttingDown"]

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    """A follow-up run being gathered: requests of one kind (dry run, plan only) only."""

    dry_run: bool
    plan_only: bool
    override_window: str | None = None  # an override joins only the same override
    by: str = ""
    sites: set[str] | None = field(default_factory=set)  # None = every site
    triggers: list[str] = field(default_factory=list)
    futures: list[Future[SyncReport]] = field(default_factory=list)

    def takes(self, request: SyncRequest) -> bool:
        mine = (self.dry_run, self.plan_only, self.override_window, self.by)
        return (request.dry_run, request.plan_only, request.override_window, request.by) == mine

    def add(self, request: SyncRequest, future: Future[SyncReport]) -> None:
        if request.sites is None or self.sites is None:
            self.sites = None
        else:
            self.sites |= request.sites
        if request.trigger not in self.triggers:
            self.triggers.append(request.trigger)
        self.futures.append(future)

    def request(self) -> SyncRequest:
        sites = None if self.sites is None else frozenset(self.sites)
        return SyncRequest(
            sites=sites,
            dry_run=self.dry_run,
            plan_only=self.plan_only,
            trigger="+".join(self.triggers),
            override_window=self.override_window,
            by=self.by,
        )


class Runner:
    """Serialises syncs. submit() returns a Future resolved with the report of the run covering it.

    While a run is in flight, every new request joins the pending follow-up run of its kind
    (real, dry run, plan only), which covers the union of the sites asked for; requests of
    different kinds never share a run. Follow-ups run in the order their first request came;
    nothing is dropped and nothing piles up (at most one pending run per kind).
    """

    def __init__(self, run: Callable[[SyncRequest], SyncReport]) -> None:
        self._run = run
        self._lock = threading.Lock()
        self._pending: list[_Pending] = []
        self._busy = False
        self._closed = False
        self._idle = threading.Condition(self._lock)
        self.current: SyncRequest | None = None

    def submit(self, request: SyncRequest) -> Future[SyncReport]:
        future: Future[SyncReport] = Future()
        with self._lock:
            if self._closed:
                raise ShuttingDown("the reconciler is shutting down")
            batch = next((b for b in self._pending if b.takes(request)), None)
            if batch is None:
                batch = _Pending(
                    request.dry_run, request.plan_only, request.override_window, request.by
                )
                self._pending.append(batch)
            batch.add(request, future)
            start = not self._busy
            self._busy = True
        if start:
            threading.Thread(target=self._drain, name="sync", daemon=True).start()
        return future

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._busy = False
                    self.current = None
                    self._idle.notify_all()
                    return
                batch = self._pending.pop(0)
                request = batch.request()
                self.current = request
            for f in batch.futures:
                f.set_running_or_notify_cancel()
            try:
                report = self._run(request)
            except BaseException as exc:  # the run itself broke: every waiter learns it
                log.exception("sync failed: %s", exc)
                for f in batch.futures:
                    if not f.done():
                        f.set_exception(exc)
                continue
            for f in batch.futures:
                if not f.done():
                    f.set_result(report)

    @property
    def busy(self) -> bool:
        return self._busy

    def close(self, timeout: float | None = None) -> bool:
        """Refuse new requests, fail the queued follow-ups with ShuttingDown (so Pub/Sub messages
        are nacked and redelivered), and wait for the run in flight; False if it did not end in
        time."""
        with self._lock:
            self._closed = True
            batches, self._pending = self._pending, []
        for batch in batches:
            for f in batch.futures:
                if f.set_running_or_notify_cancel():
                    f.set_exception(ShuttingDown("the reconciler shut down before this sync ran"))
        with self._lock:
            return self._idle.wait_for(lambda: not self._busy, timeout)
