"""Smoke test of the scale scenarios of bench/run.py: many namespaces, serve only, with and without
the newest-ready-commit lookback (the N = 10,000 steady run and the cold run, at a small N).

Invariants only (counts, writes, points), never timing: the figures are the benchmark's to print.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench.run import Options, run_benchmark

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(300)]

N = 200
NAMESPACES = 20
BATCH = 100  # repositories per GraphQL query (reconciler.adapters.github.heads.BATCH_SIZE)


def run(tmp_path: Path, scenarios: tuple[str, ...], lookback: int) -> dict[str, dict[str, Any]]:
    out = tmp_path / f"scale-{lookback}.json"
    run_benchmark(
        Options(
            sizes=(N,),
            latency_ms=5.0,
            namespaces=NAMESPACES,
            scenarios=scenarios,
            modes=("serve",),
            lookback=lookback,
            repeats=1,
            out=out,
            validate=True,
            print_table=False,
        )
    )
    report = json.loads(out.read_text())
    assert report["stand_in"] == {"schema_violations": [], "internal_errors": []}
    assert {(r["scenario"], r["mode"]) for r in report["results"]} == {
        (s, "serve") for s in scenarios
    }
    return {r["scenario"]: r for r in report["results"]}


def assert_steady(steady: dict[str, Any], points_per_query: int) -> None:
    assert steady["errors"] == [] and steady["sites"] == N and steady["updated"] == 0
    assert steady["kube"]["writes"] == 0, steady["kube"]
    assert steady["kube"]["reads"] == 0, steady["kube"]  # serve reads its watch-fed cache (#22)
    assert steady["github"]["requests"] == math.ceil(N / BATCH), steady["github"]
    assert steady["github"]["points"] == points_per_query * math.ceil(N / BATCH)
    assert steady["peak_rss_mb"] > 0


def test_cold_then_steady_with_the_lookback(tmp_path: Path, control_plane_binaries: Path) -> None:
    rows = run(tmp_path, ("cold", "steady"), lookback=20)
    cold = rows["cold"]
    assert cold["errors"] == [] and cold["updated"] == cold["expected_updates"] == N
    # Each site: one guarded PATCH and its Event (created off the patch's path, still created).
    assert cold["kube"]["deployment_writes"] == N, cold["kube"]
    assert cold["kube"]["event_creates"] == N, cold["kube"]
    assert cold["kube"]["writes"] == 2 * N, cold["kube"]
    assert cold["kube"]["reads"] == 0, cold["kube"]  # the cache had heard the stale images
    assert_steady(rows["steady"], points_per_query=2)  # history(first: 20) doubles the cost


def test_steady_without_the_lookback(tmp_path: Path, control_plane_binaries: Path) -> None:
    assert_steady(run(tmp_path, ("steady",), lookback=0)["steady"], points_per_query=1)
