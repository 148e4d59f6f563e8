"""Holding the Lease for one sync: take it (waiting for a replica), renew it, fence patches."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from reconciler.core.errors import LeaseBusy, ReconcilerError, ShuttingDown
from reconciler.core.ports import Lease
from reconciler.settings import LEASE_WAIT_MARGIN

log = logging.getLogger(__name__)

LEASE_SECONDS = 60.0
DEFAULT_WAIT = LEASE_SECONDS + LEASE_WAIT_MARGIN


@dataclass(frozen=True, slots=True)
class LeaseWait:
    """A sync waiting for the Lease another replica holds (it stays queued meanwhile)."""

    holder: str | None
    since: float  # Unix time the wait began
    until: float | None  # Unix time this replica takes the Lease over unless it is renewed
    answer_by: float  # monotonic: a trigger that has waited past this is answered "queued"

    def as_dict(self) -> dict[str, Any]:
        return {"holder": self.holder, "waiting_since": self.since, "until": self.until}

    def describe(self) -> str:
        who = f"replica {self.holder}" if self.holder else "another replica"
        until = ""
        if self.until is not None:
            until = " until " + time.strftime("%H:%M:%S UTC", time.gmtime(self.until))
        return f"{who} holds the Lease{until}; this sync runs as soon as it is free"


class LeaseHolder:
    """Takes the Lease for the span of one sync, renews it meanwhile, and fences patches.

    Like client-go's leader election, the holder stops leading the moment a renewal fails (the
    Lease was taken over, deleted, or the API server did not answer) or when no renewal has
    succeeded for `renew_deadline` seconds of the local monotonic clock: fence() then says why,
    and the engine starts no further patch until the next sync holds the Lease again.

    While another replica holds the Lease, a sync waits for it as long as it takes (queued,
    never dropped; `waiting` says for whom and until when): a live holder gives it back after
    its sync, a dead one's Lease runs out. Other errors (the API server refuses or does not
    answer) fail the sync after `wait` seconds.
    """

    def __init__(
        self,
        lease: Lease,
        *,
        wait: float = DEFAULT_WAIT,
        renew_every: float = LEASE_SECONDS / 4,
        renew_deadline: float = LEASE_SECONDS * 2 / 3,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lease = lease
        self.wait = wait
        self.clock = clock
        self.waiting: LeaseWait | None = None
        self.renew_every = renew_every
        self.renew_deadline = renew_deadline
        self.monotonic = monotonic
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._holding = False
        self._lost: str | None = None
        self._renewed_at = 0.0

    def fence(self) -> str | None:
        """Why this replica may not patch now, or None while it holds the Lease (or holds none:
        outside a sync the Lease does not guard anything here)."""
        with self._lock:
            if not self._holding:
                return None
            if self._lost is not None:
                return self._lost
            silent = self.monotonic() - self._renewed_at
            if silent > self.renew_deadline:
                return f"this replica has not renewed the Lease for {silent:.0f}s"
            return None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the Lease inside the block; raises the last acquire error when it stays busy."""
        self._acquire()
        with self._lock:
            self._holding, self._lost, self._renewed_at = True, None, self.monotonic()
        done = threading.Event()
        thread = threading.Thread(target=self._renew, args=(done,), name="lease", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            with self._lock:
                self._holding = False
            self.lease.release()

    def _acquire(self) -> None:
        started, since, said = self.monotonic(), self.clock(), ""
        try:
            while True:
                try:
                    self.lease.acquire()
                    return
                except LeaseBusy as exc:  # queued until it is free: never given up
                    self._busy(exc, started, since)
                    error: ReconcilerError = exc
                except ReconcilerError as exc:
                    if self.monotonic() - started >= self.wait:
                        raise
                    error = exc
                if self.stopping.is_set():
                    raise ShuttingDown(f"shut down while waiting for the Lease: {error}") from error
                if str(error) != said:
                    said = str(error)
                    log.info("waiting for the Lease: %s", error, extra={"event": "lease_wait"})
                self.stopping.wait(1.0)
        finally:
            self.waiting = None

    def _busy(self, exc: LeaseBusy, started: float, since: float) -> None:
        """Say who holds the Lease and until when; a trigger waits until the Lease runs out
        and the margin, at most `wait` seconds from the start, then is answered "queued"."""
        now = self.monotonic()
        remaining = max(exc.remaining, 0.0) if exc.remaining is not None else self.wait
        until = self.clock() + remaining if exc.remaining is not None else None
        answer_by = min(started + self.wait, now + remaining + LEASE_WAIT_MARGIN)
        self.waiting = LeaseWait(exc.holder, since, until, answer_by)

    def _renew(self, done: threading.Event) -> None:
        """Renew until the sync ends; the first failure ends leading for this sync."""
        while not done.wait(self.renew_every):
            try:
                self.lease.renew()
            except Exception as exc:  # whatever it is, we may no longer hold the Lease
                why = f"this replica lost the Lease ({exc}); the replica holding it syncs"
                with self._lock:
                    self._lost = why
                log.error(
                    "lost the Lease: no further patch until it is held again: %s",
                    exc,
                    extra={"event": "lease_lost", "error": str(exc)},
                )
                return
            with self._lock:
                self._renewed_at = self.monotonic()
