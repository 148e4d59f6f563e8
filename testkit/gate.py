"""A gate a test closes to keep requests in flight, and waits on until they provably are."""

from __future__ import annotations

import threading


class Gate:
    """Open by default. While held, every pass_through() waits (counted) until release()."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._holding = False
        self._held = 0
        self.passed = 0  # calls that went through (after waiting, if held)

    def hold(self) -> None:
        """From now on, every caller of pass_through() waits until release()."""
        with self._cond:
            self._holding = True

    def release(self) -> None:
        """Let held callers (and later ones) through."""
        with self._cond:
            self._holding = False
            self._cond.notify_all()

    def wait_held(self, n: int = 1, timeout: float = 30.0) -> None:
        """Wait until at least n callers are held: their requests are provably in flight."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._held >= n, timeout):
                raise TimeoutError(f"{self._held} request(s) held after {timeout}s, wanted {n}")

    def wait_passed(self, n: int, timeout: float = 30.0) -> None:
        """Wait until at least n callers have gone through."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.passed >= n, timeout):
                raise TimeoutError(f"{self.passed} request(s) passed after {timeout}s, wanted {n}")

    def pass_through(self) -> None:
        """Called by the server for each request: returns at once unless held."""
        with self._cond:
            if self._holding:
                self._held += 1
                self._cond.notify_all()
                try:
                    self._cond.wait_for(lambda: not self._holding)
                finally:
                    self._held -= 1
            self.passed += 1
            self._cond.notify_all()
