"""Holding the Lease for one sync: take it (waiting a little for another replica), renew it."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Protocol

from reconciler.core.errors import ReconcilerError

log = logging.getLogger(__name__)

RENEW_EVERY = 15.0


class Lease(Protocol):
    """One replica at a time: acquire raises (LeaseBusy) while another holds it."""

    def acquire(self) -> None: ...

    def renew(self) -> None: ...

    def release(self) -> None: ...


class LeaseHolder:
    """Takes the Lease for the span of one sync and renews it meanwhile."""

    def __init__(self, lease: Lease, *, wait: float, renew_every: float = RENEW_EVERY) -> None:
        self.lease = lease
        self.wait = wait
        self.renew_every = renew_every
        self.stopping = threading.Event()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the Lease inside the block; raises the last acquire error when it stays busy."""
        self._acquire()
        done = threading.Event()
        thread = threading.Thread(target=self._renew, args=(done,), name="lease", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
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
        while not done.wait(self.renew_every):
            try:
                self.lease.renew()
            except ReconcilerError as exc:
                log.warning("could not renew the Lease: %s", exc)
