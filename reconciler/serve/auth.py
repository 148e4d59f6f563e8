"""Who may use which endpoint: the trigger token, the read token, and rate-limited 401 logs."""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

UNAUTHORIZED_LOG_INTERVAL = 60.0  # at most one "rejected" line per kind per minute


class RateLimitedLog:
    """Logs the first event, then at most one per `interval` saying how many were not logged."""

    def __init__(
        self,
        interval: float = UNAUTHORIZED_LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._last: float | None = None
        self._suppressed = 0

    def warning(self, message: str, **extra: object) -> None:
        now = self.clock()
        with self._lock:
            if self._last is not None and now - self._last < self.interval:
                self._suppressed += 1
                return
            suppressed, self._suppressed, self._last = self._suppressed, 0, now
        if suppressed:
            message += f" ({suppressed} more since the last such line, not logged)"
        log.warning(message, extra={**extra, "suppressed": suppressed})


def presented_token(authorization: str) -> str | None:
    """The token of `Authorization: Bearer T`, or the password of `Basic base64(user:T)` (what a
    browser sends for the status page after asking)."""
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


def matches(given: str | None, *tokens: str | None) -> bool:
    """Whether `given` equals one of the configured tokens (constant time for each)."""
    if not given:
        return False
    found = False
    for token in tokens:
        if token and hmac.compare_digest(given.encode(), token.encode()):
            found = True
    return found


class Access:
    """The trigger token guards the triggers and site commands; reads (the page, /status,
    /readyz details, /metrics, /runs) need the read token or the trigger token unless reads are
    open: with neither token configured, or RECONCILER_READ_TOKEN=open."""

    def __init__(self, trigger_token: str | None, read_token: str | None, reads_open: bool):
        self.trigger_token = trigger_token
        self.read_token = read_token
        self.reads_open = reads_open or not (trigger_token or read_token)
        self.trigger_log = RateLimitedLog()
        self.read_log = RateLimitedLog()

    def may_trigger(self, authorization: str, remote: str | None) -> bool:
        """Whether the Authorization header carries the trigger token (a 401 is logged)."""
        if matches(presented_token(authorization), self.trigger_token):
            return True
        self.trigger_log.warning(
            "rejected a trigger with a missing or wrong token",
            event="trigger_unauthorized",
            remote=remote,
        )
        return False

    def may_read(self, authorization: str, remote: str | None, *, quiet: bool = False) -> bool:
        """Whether reads are open or the header carries the read or trigger token."""
        given = presented_token(authorization)
        if self.reads_open or matches(given, self.read_token, self.trigger_token):
            return True
        if not quiet:
            self.read_log.warning(
                "rejected a read with a missing or wrong token",
                event="read_unauthorized",
                remote=remote,
            )
        return False
