"""Rendering: the results table (text and Markdown), the targets table, the README section."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from bench.measure import Measurement
from bench.stats import ratios


def _fmt(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "-"
    if math.isinf(x):
        return "inf"
    if isinstance(x, int) or (float(x).is_integer() and abs(x) >= 100):
        return str(int(x))
    return f"{x:.{digits}f}"


def _ratio_cell(x: float | None) -> str:
    if x is None:
        return "-"
    if math.isinf(x):
        return "inf"
    return f"{x:.1f}x" if x < 100 else f"{x:.0f}x"


HEADER = [
    "N",
    "scenario",
    "mode",
    "sync s",
    "wall s",
    "GH req",
    "GH pts",
    "kube reads",
    "kube writes",
    "deploy writes",
    "events",
    "peak RSS MB",
    "CPU s: client / apiserver+etcd / stand-in",
    "updated",
]


def _cpu_cell(m: Measurement) -> str:
    """CPU seconds used during the run (measured, not extrapolated): the reconciler or baseline
    process, the API server + etcd, the bench process (the GitHub stand-in)."""
    cpu: dict[str, float] = m.extra.get("cpu_s") or (m.measured or {}).get("cpu_s") or {}
    if not cpu:
        return "-"
    client = cpu.get("reconciler", cpu.get("baseline"))
    servers = cpu.get("kube-apiserver", 0.0) + cpu.get("etcd", 0.0)
    standin = cpu.get("stand-in (bench process)")
    return " / ".join(_fmt(x) for x in (client, servers, standin))


def table_rows(results: Sequence[Measurement]) -> list[list[str]]:
    rows: list[list[str]] = []
    rat = {(r["n"], r["scenario"], r["versus"]): r for r in ratios(results)}
    for m in results:
        mode = m.mode
        if m.extrapolated_from:
            mode += f" (extrapolated from {m.extrapolated_from} sites)"
        rows.append(
            [
                str(m.n),
                m.scenario,
                mode,
                _fmt(m.sync_s),
                _fmt(m.wall_s),
                str(m.gh_requests),
                str(m.gh_points),
                str(m.reads)
                + (f" (+{m.kube['follow_reads']} follow)" if m.kube.get("follow_reads") else ""),
                str(m.writes),
                str(m.kube["deployment_writes"]),
                str(m.kube["event_creates"]),
                _fmt(m.rss_mb, 0),
                _cpu_cell(m),
                f"{m.updated}/{m.expected_updates}"
                + (f" ({len(m.errors)} errors)" if m.errors else ""),
            ]
        )
        if m.mode == "baseline":
            for versus in ("serve", "cli"):
                r = rat.get((m.n, m.scenario, versus))
                if r is None:
                    continue
                rows.append(
                    [
                        str(m.n),
                        m.scenario,
                        f"ratio baseline/{versus}",
                        _ratio_cell(r["sync_s"]),
                        _ratio_cell(r["wall_s"]),
                        _ratio_cell(r["github_requests"]),
                        _ratio_cell(r["github_points"]),
                        _ratio_cell(r["kube_reads"]),
                        _ratio_cell(r["kube_writes"]),
                        _ratio_cell(r["deployment_writes"]),
                        "",
                        _ratio_cell(r["peak_rss_mb"]),
                        "",
                        "",
                    ]
                )
    return rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def target_rows(checks: Sequence[dict[str, Any]]) -> list[list[str]]:
    return [[c["target"], _fmt(c["value"]), c["limit"], c["result"]] for c in checks]


TARGET_HEADER = ["target (N=1000)", "value", "limit", "result"]


def render_markdown(report: dict[str, Any]) -> str:
    """The README's results section from a results JSON."""
    m, p, tree = report["machine"], report["params"], report.get("tree", {})
    changes = tree.get("reconciler_changes") or []
    free = "\n".join("    " + line for line in str(m["free_h"]).splitlines())
    parts = [
        f"Run on {m['date']}: `nproc` = {m['nproc']}, CPU {m['cpu_model']}, Python "
        f"{m['python']}, Linux {m['kernel']}, kube-apiserver {m['kube_apiserver']}, etcd "
        f"{m['etcd']}; commit {tree.get('commit', '?')}"
        + (f" (uncommitted under reconciler/: {', '.join(changes)})" if changes else "")
        + ". `free -h`:",
        "",
        free,
        "",
        f"Parameters: N = {', '.join(map(str, p['sizes']))}; GitHub latency log-normal, median "
        f"{p['latency_median_ms']:g} ms, sigma {p['latency_sigma']:g}; {p['namespaces']} "
        f"namespaces; {p['moved_fraction']:.0%} moved; serve and CLI figures are the median of "
        f"{p.get('repeats', 1)} runs (counts and peak RSS: the largest of them); baseline on "
        f"every site up to N = {p['baseline_full_up_to']}, else on {p['baseline_sample']} sites "
        f"extrapolated to N. Whole run: {report['total_s'] / 60:.0f} min.",
        "",
        '"sync s": time inside the process (serve: `duration_s`; CLI: the engine\'s log line; '
        'baseline: its loop). "wall s": serve: POST /sync round trip; CLI and baseline: '
        'the whole process. Ratio rows: baseline / reconciler ("-": both zero; "inf": '
        "the reconciler's figure is zero).",
        "",
        report["table_markdown"],
        "",
        report["targets_markdown"],
    ]
    return "\n".join(parts) + "\n"
