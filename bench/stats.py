"""Statistics: the median of repeated runs, baseline/reconciler ratios, the targets at N."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from bench.measure import Measurement

# Targets at the largest N (issue 6); checked and printed, never asserted by tests.
TARGET_N = 1000
TARGET_STEADY_SERVE_S = 2.0
TARGET_STEADY_CLI_S = 5.0
TARGET_STEADY_POINTS = 20
TARGET_MOVED_SERVE_S = 5.0
TARGET_COLD_SERVE_S = 15.0
TARGET_RSS_MB = 150.0
TARGET_STEADY_SPEEDUP = 50.0


def combine(runs: Sequence[Measurement]) -> Measurement:
    """Repeated runs of one (N, scenario, mode) as one row: the run with the median time
    (serve: sync time; CLI: wall time), the largest peak RSS and the worst counts of all runs;
    every run's figures stay in ``samples``."""
    if len(runs) == 1:
        return runs[0]

    def key(m: Measurement) -> float:
        return m.sync_s if m.mode == "serve" and m.sync_s is not None else m.wall_s

    ordered = sorted(runs, key=key)
    median = ordered[(len(ordered) - 1) // 2]
    samples = [
        {
            "sync_s": None if m.sync_s is None else round(m.sync_s, 3),
            "wall_s": round(m.wall_s, 3),
            "github": {"requests": m.gh_requests, "points": m.gh_points},
            "kube": {k: v for k, v in m.kube.items() if k != "by_verb"},
            "peak_rss_mb": None if m.rss_mb is None else round(m.rss_mb, 1),
            "updated": m.updated,
        }
        for m in runs
    ]
    worst_kube = dict(median.kube)
    for k in ("reads", "writes", "deployment_writes", "event_creates", "follow_reads"):
        if k in median.kube:
            worst_kube[k] = max(int(m.kube.get(k, 0)) for m in runs)
    rss = [m.rss_mb for m in runs if m.rss_mb is not None]
    syncs = [m.sync_s for m in runs if m.sync_s is not None]
    return replace(
        median,
        gh_requests=max(m.gh_requests for m in runs),
        gh_points=max(m.gh_points for m in runs),
        kube=worst_kube,
        rss_mb=max(rss) if rss else None,
        updated=min(m.updated for m in runs),
        errors=[e for m in runs for e in m.errors],
        extra={
            **median.extra,
            "repeats": len(runs),
            "sync_s_min_max": [round(min(syncs), 3), round(max(syncs), 3)] if syncs else None,
            "wall_s_min_max": [
                round(min(m.wall_s for m in runs), 3),
                round(max(m.wall_s for m in runs), 3),
            ],
            "samples": samples,
        },
    )


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    if b == 0:
        return None if a == 0 else math.inf
    return a / b


def ratios(results: Sequence[Measurement]) -> list[dict[str, Any]]:
    """baseline / reconciler for every figure, per (N, scenario), against serve and against CLI."""
    by_key = {(m.n, m.scenario, m.mode): m for m in results}
    out = []
    for n, scenario in dict.fromkeys((m.n, m.scenario) for m in results):
        base = by_key.get((n, scenario, "baseline"))
        if base is None:
            continue
        for mode in ("serve", "cli"):
            ours = by_key.get((n, scenario, mode))
            if ours is None:
                continue
            out.append(
                {
                    "n": n,
                    "scenario": scenario,
                    "versus": mode,
                    "sync_s": _ratio(base.sync_s, ours.sync_s),
                    "wall_s": _ratio(base.wall_s, ours.wall_s),
                    "github_requests": _ratio(base.gh_requests, ours.gh_requests),
                    "github_points": _ratio(base.gh_points, ours.gh_points),
                    "kube_reads": _ratio(base.reads, ours.reads),
                    "kube_writes": _ratio(base.writes, ours.writes),
                    "deployment_writes": _ratio(
                        base.kube["deployment_writes"], ours.kube["deployment_writes"]
                    ),
                    "peak_rss_mb": _ratio(base.rss_mb, ours.rss_mb),
                }
            )
    return out


def targets(
    results: Sequence[Measurement], n: int = TARGET_N, namespaces: int = 10
) -> list[dict[str, Any]]:
    """The issue's targets at N (PASS/MISS); empty when N was not run."""
    by_key = {(m.scenario, m.mode): m for m in results if m.n == n}
    if not by_key:
        return []
    out: list[dict[str, Any]] = []

    def check(name: str, value: float | None, limit: str, ok: bool) -> None:
        out.append(
            {"target": name, "value": value, "limit": limit, "result": "PASS" if ok else "MISS"}
        )

    def get(scenario: str, mode: str) -> Measurement | None:
        return by_key.get((scenario, mode))

    steady_s, steady_c = get("steady", "serve"), get("steady", "cli")
    steady_b = get("steady", "baseline")
    if steady_s and steady_s.sync_s is not None:
        check(
            "steady: serve sync s",
            steady_s.sync_s,
            f"<= {TARGET_STEADY_SERVE_S}",
            steady_s.sync_s <= TARGET_STEADY_SERVE_S,
        )
    if steady_c:
        check(
            "steady: CLI run wall s",
            steady_c.wall_s,
            f"<= {TARGET_STEADY_CLI_S}",
            steady_c.wall_s <= TARGET_STEADY_CLI_S,
        )
    for m in (steady_s, steady_c):
        if m is None:
            continue
        check(
            f"steady: GitHub points ({m.mode})",
            m.gh_points,
            f"<= {TARGET_STEADY_POINTS}",
            m.gh_points <= TARGET_STEADY_POINTS,
        )
        check(f"steady: API-server writes ({m.mode})", m.writes, "== 0", m.writes == 0)
        check(
            f"steady: API-server reads ({m.mode})",
            m.reads,
            f"<= {namespaces} (one per namespace)",
            m.reads <= namespaces,
        )
    moved_s, moved_c = get("moved", "serve"), get("moved", "cli")
    if moved_s and moved_s.sync_s is not None:
        check(
            "10% moved: serve sync s",
            moved_s.sync_s,
            f"<= {TARGET_MOVED_SERVE_S}",
            moved_s.sync_s <= TARGET_MOVED_SERVE_S,
        )
    for m in (moved_s, moved_c):
        if m is None:
            continue
        dw = int(m.kube["deployment_writes"])
        check(
            f"10% moved: Deployment writes ({m.mode}); events "
            f"{m.kube['event_creates']} reported apart",
            dw,
            f"== {m.expected_updates} moved",
            dw == m.expected_updates,
        )
    cold_s = get("cold", "serve")
    if cold_s and cold_s.sync_s is not None:
        check(
            "cold: serve sync s",
            cold_s.sync_s,
            f"<= {TARGET_COLD_SERVE_S}",
            cold_s.sync_s <= TARGET_COLD_SERVE_S,
        )
    for mode in ("serve", "cli"):
        peaks = [m.rss_mb for (_, md), m in by_key.items() if md == mode and m.rss_mb is not None]
        if peaks:
            check(
                f"peak RSS MB ({mode}, max over scenarios)",
                max(peaks),
                f"<= {TARGET_RSS_MB:.0f}",
                max(peaks) <= TARGET_RSS_MB,
            )
    if steady_s and steady_b and steady_s.sync_s:
        speedup = _ratio(steady_b.sync_s, steady_s.sync_s)
        label = "steady: baseline / serve sync time"
        if steady_b.extrapolated_from:
            label += f" (baseline extrapolated from {steady_b.extrapolated_from} sites)"
        check(
            label,
            speedup,
            f">= {TARGET_STEADY_SPEEDUP:.0f}x",
            speedup is not None and speedup >= TARGET_STEADY_SPEEDUP,
        )
    return out
