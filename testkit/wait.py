"""Waiting on conditions, never sleeping for synchronisation: until one holds, or while it must."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """Poll `condition` until it is true; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def stays(condition: Callable[[], object], seconds: float, what: str) -> None:
    """Check, for `seconds`, that `condition` keeps holding (something that must not happen, such
    as a redelivery, does not); AssertionError naming `what` as soon as it fails."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert condition(), what
        time.sleep(0.02)
    assert condition(), what
