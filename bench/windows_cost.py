"""What deciding deploy windows costs: milliseconds per `decide()` call, per set of windows.

A sync would call it once per site (or once per distinct list of windows); the clock moves
through a week in steps so that open, frozen and outside-allowed verdicts all occur.

    .venv/bin/python -m bench.windows_cost [--calls 500]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from reconciler.core.windows import Window, decide, parse_windows

TABLES = {
    "weekend-freeze": {
        "kind": "deny",
        "rrule": "FREQ=WEEKLY;BYDAY=FR;BYHOUR=16;BYMINUTE=0",
        "duration": "65h",
        "timezone": "Europe/Berlin",
    },
    "weekend-cron": {
        "kind": "deny",
        "cron": "0 16 * * fri",
        "duration": "65h",
        "timezone": "Europe/Berlin",
    },
    "business": {
        "kind": "allow",
        "cron": "0 8 * * 1-5",
        "duration": "9h",
        "timezone": "America/New_York",
    },
    "launch": {
        "kind": "deny",
        "start": "2026-12-21",
        "end": "2027-01-04",
        "timezone": "Europe/Berlin",
    },
    "first-monday": {
        "kind": "deny",
        "rrule": "FREQ=MONTHLY;BYDAY=1MO;BYHOUR=9",
        "duration": "2h",
        "timezone": "UTC",
    },
}
SETS = {
    "weekend freeze (rrule)": ["weekend-freeze"],
    "weekend freeze (cron)": ["weekend-cron"],
    "business hours (allow)": ["business"],
    "all five": list(TABLES),
}


def measure(windows: list[Window], calls: int) -> tuple[float, Counter[str]]:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    states: Counter[str] = Counter()
    times: list[float] = []
    for i in range(calls):
        now = start + timedelta(minutes=37 * i)  # about a week per 270 calls
        t0 = time.perf_counter()
        verdict = decide(windows, now)
        times.append(time.perf_counter() - t0)
        states[verdict.state.value] += 1
    return statistics.median(times) * 1000, states


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    windows = parse_windows({"windows": TABLES}, lambda where, msg, site: print(where, msg))
    for label, names in SETS.items():
        median_ms, states = measure([windows[n] for n in names], args.calls)
        seen = ", ".join(f"{k} {v}" for k, v in sorted(states.items()))
        print(f"{label:26} {median_ms:6.3f} ms median per decide()  ({seen})")


if __name__ == "__main__":
    main()
