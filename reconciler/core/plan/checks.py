"""verify = "checks": whether a commit's statuses and check runs let its image roll out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.core.errors import ErrorKind
from reconciler.core.model import ImageStatus

FAILED = frozenset(
    {"failure", "error", "timed_out", "cancelled", "action_required", "startup_failure", "stale"}
)


@dataclass(frozen=True, slots=True)
class Check:
    """A commit status or check run reduced to its name and state (pending, success, ...)."""

    name: str
    state: str


def checks_verdict(checks: Sequence[Check], sha: str, required: tuple[str, ...]) -> ImageStatus:
    """Passed (True), waiting (False: pending or not reported yet) or failed (None).

    Without `required`, every check counts, at least one must have succeeded, and neutral or
    skipped ones are ignored. With `required`, only the named checks count and each must have
    succeeded: a named check that was skipped or neutral did not pass.
    """
    short = sha[:7]
    if required:
        by_name: dict[str, list[str]] = {}
        for c in checks:
            by_name.setdefault(c.name, []).append(c.state)
        missing = [n for n in required if n not in by_name]
        failed = [
            f"{n} ({s})"
            for n in required
            for s in by_name.get(n, ())
            if s not in ("success", "pending")
        ]
        pending = [n for n in required if "pending" in by_name.get(n, ())]
    else:
        if not checks:
            return ImageStatus(
                False,
                f"waiting: no checks have reported on {short} yet, so its image may not exist",
            )
        missing = []
        failed = [f"{c.name} ({c.state})" for c in checks if c.state in FAILED]
        pending = [c.name for c in checks if c.state == "pending"]
        if not failed and not pending and not any(c.state == "success" for c in checks):
            return ImageStatus(
                None,
                f"no check succeeded on {short} (all neutral or skipped)",
                kind=ErrorKind.CHECKS_FAILED,
            )
    if failed:
        return ImageStatus(
            None,
            f"checks failed on {short}: {', '.join(sorted(failed))}",
            kind=ErrorKind.CHECKS_FAILED,
        )
    if pending or missing:
        waiting = [*(f"{n} (running)" for n in pending), *(f"{n} (not reported)" for n in missing)]
        return ImageStatus(False, f"waiting for checks on {short}: {', '.join(waiting)}")
    return ImageStatus(True)
