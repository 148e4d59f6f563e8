"""What runs inside the serve process: the Service, its background triggers and the WSGI app."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from reconciler.core.model import SyncRequest
from reconciler.core.ports import BackgroundTrigger
from reconciler.serve.service import Service

log = logging.getLogger(__name__)

GRACEFUL_TIMEOUT = 25  # the pod's terminationGracePeriodSeconds (60) leaves room for this
CACHE_STOP_TIMEOUT = 3.0  # its watches are shut down at once; a request being sent may not be
FIRST_CHECK_WAIT = 2.0  # seconds the first /readyz waits for a health check's first verdict


class Process:
    """Starts and stops the service and its triggers in the right order."""

    def __init__(
        self,
        service: Service,
        app: Any,
        triggers: list[BackgroundTrigger],
        *,
        cache: BackgroundTrigger | None = None,
    ) -> None:
        self.service = service
        self.app = app
        self.triggers = triggers
        self.cache = cache  # the watch-fed workload cache: first to start, last to stop

    def start(self) -> None:
        if self.cache is not None:
            self.cache.start()
        self.service.start_schedule()
        self.service.start_following()
        for trigger in self.triggers:
            trigger.start()
        self.service.submit(SyncRequest(trigger="startup"))
        log.info("reconciler serving", extra={"event": "started", "pid": os.getpid()})

    def begin_shutdown(self) -> None:
        """On SIGTERM: no new triggers; the patch in flight finishes, nothing new starts."""
        log.info("shutting down", extra={"event": "shutdown"})
        for trigger in self.triggers:
            trigger.stop(timeout=5.0)
        self.service.shutdown(timeout=0)

    def finish(self) -> None:
        if not self.service.shutdown(timeout=GRACEFUL_TIMEOUT - 5):
            log.warning("exiting with a sync still running", extra={"event": "shutdown_late"})
        if self.cache is not None:
            try:
                self.cache.stop(timeout=CACHE_STOP_TIMEOUT)
            except RuntimeError as exc:  # its threads are daemons: the process ends anyway
                log.warning("stopping the workload cache: %s", exc)


def cached(
    check: Callable[[], str | None], ttl: float, *, first_wait: float = FIRST_CHECK_WAIT
) -> Callable[[], str | None]:
    """A health check run at most once per `ttl` seconds, in the background, one run at a time:
    asking never waits for it (only the very first ask waits, at most `first_wait` seconds, for
    a first verdict). Run in the request, a check of an API server that does not answer held
    each /readyz for as long as the client's timeouts and retries (12 s), and as many probes
    as there are threads held every thread: then no request at all was answered."""
    lock = threading.Lock()
    state: dict[str, Any] = {
        "at": -math.inf,
        "value": "not checked yet",
        "running": False,
        "waited": False,  # the first wait is over: nobody waits again
    }
    first = threading.Event()

    def refresh() -> None:
        try:
            value = check()
        except Exception as exc:  # a check that breaks is a failing check
            value = f"health check failed: {type(exc).__name__}: {exc}"
        with lock:
            state.update(value=value, at=time.monotonic(), running=False)
        first.set()

    def run() -> str | None:
        with lock:
            start = not state["running"] and time.monotonic() - state["at"] > ttl
            state["running"] = state["running"] or start
        if start:
            threading.Thread(target=refresh, name="health-check", daemon=True).start()
        if not state["waited"]:
            first.wait(first_wait)
            state["waited"] = True
        return state["value"]  # type: ignore[no-any-return]

    return run
