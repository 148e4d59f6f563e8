"""How many requests to GitHub may be in flight (pure): adaptive, inside GitHub's secondary limits.

GitHub allows at most 100 concurrent requests per caller and answers more (or a burst it does not
like) with a secondary-limit answer carrying `retry-after` (../shared/README.md). The pace grows
by one request per answer that was not limited (so it doubles each round trip, as TCP's slow
start does, up to `ceiling`), halves on a secondary-limit answer, and nothing is sent before the
`retry-after` of the last such answer has passed. The adapter (adapters/github/client.py) owns
the lock and the waiting; everything it decides is decided here, on plain values.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

GITHUB_MAX_CONCURRENT = 100  # GitHub's secondary limit: concurrent requests per caller


@dataclass(frozen=True, slots=True)
class Pace:
    """The number of requests that may be in flight, and the time before which none may start."""

    limit: int = 8
    floor: int = 1
    ceiling: int = GITHUB_MAX_CONCURRENT
    paused_until: float = 0.0  # a clock value: no request starts before it

    def __post_init__(self) -> None:
        if not 1 <= self.floor <= self.ceiling <= GITHUB_MAX_CONCURRENT:
            raise ValueError(
                f"the pace must keep 1 <= floor ({self.floor}) <= ceiling ({self.ceiling}) "
                f"<= {GITHUB_MAX_CONCURRENT}"
            )

    def start(self, in_flight: int, now: float) -> bool:
        """Whether one more request may start now."""
        return now >= self.paused_until and in_flight < self.bounded

    @property
    def bounded(self) -> int:
        return max(self.floor, min(self.ceiling, self.limit))

    def answered(self) -> Pace:
        """An answer that was not limited: one more may be in flight."""
        return replace(self, limit=min(self.ceiling, self.bounded + 1))

    def limited(self, retry_after: float, now: float) -> Pace:
        """A secondary-limit answer: half as many in flight, and none before retry-after."""
        return replace(
            self,
            limit=max(self.floor, self.bounded // 2),
            paused_until=max(self.paused_until, now + max(0.0, retry_after)),
        )

    def wait(self, now: float) -> float:
        """Seconds until a request may start for time's sake (0: only the in-flight count)."""
        return max(0.0, self.paused_until - now)
