"""What the lead time costs a sync: milliseconds of `core.leadtime.lead_of` over N sites, the
planning step every sync adds (pure CPU; the reads and writes are the sync's own).

Three fleets, each planned three times in a row (a steady `serve` plans the same workloads
again and again, so the second and later passes are what a steady sync pays):

- in sync: every site runs its head, recorded (stages, updated-at, available-at);
- waiting: every head waits for its image since it was pushed, its record already written
  (what a steady sync sees while checks run: nothing to write);
- new heads: every head is new (what the first sync after N pushes pays; it writes N records).

    .venv/bin/python -m bench.leadtime_cost [--sites 10000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping, Sequence

from reconciler.core import annotations as ann
from reconciler.core import leadtime
from reconciler.core.model import (
    Action,
    BranchHead,
    CommitState,
    Rollout,
    Site,
    SitePlan,
    Skip,
    Stages,
)
from reconciler.core.rollout.state import stamp

T0 = 1_796_652_120.0  # 2026-12-07T14:02:00Z
COMMITTED = "2026-12-07T14:01:00Z"


def fleet(n: int, kind: str) -> Sequence[tuple[SitePlan, Mapping[str, str], BranchHead]]:
    out: list[tuple[SitePlan, Mapping[str, str], BranchHead]] = []
    for i in range(n):
        sha, running = f"{i:040x}", f"{i + n:040x}"
        site = Site(f"s{i}", f"acme/r{i}", "main", f"ns{i % 100}", f"d{i}", "app", "r/{sha}")
        head = BranchHead(site.repo, "main", sha, (CommitState(sha, "SUCCESS", COMMITTED),))
        head = BranchHead(site.repo, "main", sha, head.history, COMMITTED)
        if kind == "in sync":
            notes = {
                ann.SHA: sha,
                ann.STAGES: leadtime.dumps(Stages(sha, T0, T0 + 250, T0 + 280, seen=T0 + 60)),
                ann.UPDATED_AT: stamp(T0 + 281 + i % 60),
                ann.AVAILABLE_AT: stamp(T0 + 303 + i % 60),
            }
            p = SitePlan(site, Action.IN_SYNC, sha=sha, head_sha=sha, rollout=Rollout.AVAILABLE)
        else:
            notes = {ann.SHA: running, ann.UPDATED_AT: stamp(T0 - 3600)}
            if kind == "waiting":
                waiting = Stages(sha, T0, T0 + 250, seen=T0 + 60)
                notes[ann.HEAD_STAGES] = leadtime.dumps(waiting)
            p = SitePlan(
                site,
                Action.SKIP,
                sha=sha,
                head_sha=sha,
                skip=Skip.IMAGE_MISSING,
                resource_version="7",
                running_sha=running,
            )
        out.append((p, notes, head))
    return out


def passes(n: int, kind: str, times: int = 3) -> tuple[list[float], int]:
    """CPU seconds of each pass (process time: what the sync's thread spends, less disturbed by
    other processes on a shared machine than the wall clock), and the records to write."""
    sites = fleet(n, kind)
    seconds, writes = [], 0
    for _ in range(times):
        start = time.process_time()
        leads = [leadtime.lead_of(p, notes, h, pushed=None, now=T0 + 600) for p, notes, h in sites]
        seconds.append(time.process_time() - start)
        writes = sum(1 for lead in leads if lead.write is not None)
    return seconds, writes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=10_000)
    args = parser.parse_args()
    print(f"core.leadtime.lead_of over {args.sites} sites, three passes (CPU ms):")
    for kind in ("in sync", "waiting", "new heads"):
        seconds, writes = passes(args.sites, kind)
        shown = " / ".join(f"{s * 1000:.0f}" for s in seconds)
        print(f"  {kind:<10} {shown}   records to write per pass: {writes}")


if __name__ == "__main__":
    main()
