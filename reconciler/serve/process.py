"""What runs inside the serve process: the Service, its background triggers and the WSGI app."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from reconciler.core.model import SyncRequest
from reconciler.core.ports import BackgroundTrigger
from reconciler.serve.service import Service

log = logging.getLogger(__name__)

GRACEFUL_TIMEOUT = 25  # the pod's terminationGracePeriodSeconds (60) leaves room for this


class Process:
    """Starts and stops the service and its triggers in the right order."""

    def __init__(self, service: Service, app: Any, triggers: list[BackgroundTrigger]) -> None:
        self.service = service
        self.app = app
        self.triggers = triggers

    def start(self) -> None:
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


def cached(check: Callable[[], str | None], ttl: float) -> Callable[[], str | None]:
    """A health check asked at most once per `ttl` seconds (readiness probes come often)."""
    state: dict[str, Any] = {"at": 0.0, "value": None}

    def run() -> str | None:
        now = time.monotonic()
        if now - state["at"] > ttl:
            state["value"], state["at"] = check(), now
        return state["value"]  # type: ignore[no-any-return]

    return run
