"""Smoke test of the benchmark (bench/run.py): N=30, ~5 ms GitHub latency, baseline on 3 sites.

Asserts the invariants that do not depend on the machine: what a sync reads and writes, what it
costs in GitHub points, and that the results JSON is written. Timing targets are the
benchmark's to print, never a test's to assert.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.run import Options, run_benchmark

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(300)]

N = 30
NAMESPACES = 10


def test_bench_smoke(tmp_path: Path, control_plane_binaries: Path) -> None:
    out = tmp_path / "results.json"
    run_benchmark(
        Options(
            sizes=(N,),
            latency_ms=5.0,
            namespaces=NAMESPACES,
            baseline_sample=3,
            baseline_full_up_to=0,
            repeats=2,
            out=out,
            validate=True,
            print_table=False,
        )
    )
    report = json.loads(out.read_text())
    assert report["stand_in"] == {"schema_violations": [], "internal_errors": []}
    rows: dict[tuple[str, str], dict[str, Any]] = {
        (r["scenario"], r["mode"]): r for r in report["results"]
    }
    assert set(rows) == {
        (s, m) for s in ("cold", "steady", "moved") for m in ("serve", "cli", "baseline")
    }
    moved = round(N * 0.1)
    for mode in ("serve", "cli"):
        cold, steady, after_move = rows["cold", mode], rows["steady", mode], rows["moved", mode]
        for r in (cold, steady, after_move):
            assert r["errors"] == [], (mode, r["scenario"], r["errors"])
            assert r["sites"] == N
            assert r["peak_rss_mb"] and r["peak_rss_mb"] > 0
            assert r["wall_s"] > 0
            assert r["repeats"] == 2 and len(r["samples"]) == 2

        assert cold["updated"] == cold["expected_updates"] == N
        assert cold["kube"]["deployment_writes"] == N

        # Steady state: nothing written, one LIST per namespace, one GraphQL point.
        assert steady["updated"] == 0
        assert steady["kube"]["writes"] == 0, steady["kube"]
        assert steady["kube"]["reads"] <= NAMESPACES, steady["kube"]
        assert steady["github"]["points"] <= 1, steady["github"]

        # 10% moved: exactly the moved Deployments are patched (each also gets an Event).
        assert after_move["expected_updates"] == moved
        assert after_move["updated"] == moved
        assert after_move["kube"]["deployment_writes"] == moved, after_move["kube"]
        assert after_move["kube"]["event_creates"] == moved, after_move["kube"]
        assert after_move["kube"]["writes"] == 2 * moved, after_move["kube"]
        assert after_move["kube"]["reads"] <= NAMESPACES, after_move["kube"]

    for scenario in ("cold", "steady", "moved"):
        base = rows[scenario, "baseline"]
        assert base["errors"] == []
        assert base["extrapolated_from"] == 3
        measured = base["measured"]
        assert measured["updated"] == base["measured_expected_updates"]
        # Two REST requests and one GET per site; a PUT only where the image changed.
        assert measured["github"]["requests"] == 2 * 3
        assert measured["kube"]["reads"] == 3
        assert measured["kube"]["deployment_writes"] == measured["updated"]

    assert report["ratios"], "baseline/reconciler ratios are computed"
    assert "| N | scenario |" in report["table_markdown"]
