"""Holding the Lease for one sync: take it (waiting for a replica), renew it, fence patches."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

from reconciler.core.errors import ReconcilerError
from reconciler.core.ports import Lease

log = logging.getLogger(__name__)

LEASE_SECONDS = 60.0


class LeaseHolder:
    """Takes the Lease for the span of one sync, renews it meanwhile, and fences patches.

    Like client-go's leader election, the holder stops leading the moment a renewal fails (the
    Lease was taken over, deleted, or the API server did not answer) or when no renewal has
    succeeded for `renew_deadline` seconds of the local monotonic clock: fence() then says why,
    and the engine starts no further patch until the next sync holds the Lease again.
    """

    def __init__(
        self,
        lease: Lease,
        *,
        wait: float,
        renew_every: float = LEASE_SECONDS / 4,
        renew_deadline: float = LEASE_SECONDS * 2 / 3,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lease = lease
        self.wait = wait
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
        deadline = time.monotonic() + self.wait
        while True:
            try:
                self.lease.acquire()
                return
            except ReconcilerError as exc:
                if time.monotonic() >= deadline or self.stopping.is_set():
                    raise
                log.info("waiting for the Lease: %s", exc)
                self.stopping.wait(1.0)

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
