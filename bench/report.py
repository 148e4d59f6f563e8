"""The results JSON: the machine and commit measured, parameters, rows, ratios and targets."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.measure import Measurement
from bench.render import HEADER, TARGET_HEADER, markdown_table, table_rows, target_rows
from bench.setup import REPO_ROOT, Options
from bench.stats import ratios, targets
from testkit.controlplane import pinned_versions


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        free = subprocess.run(["free", "-h"], capture_output=True, text=True, check=False).stdout
    except OSError:
        free = ""
    try:
        apiserver, etcd = pinned_versions()
    except Exception:
        apiserver, etcd = "?", "?"
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu,
        "free_h": free.strip("\n"),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "kube_apiserver": apiserver,
        "etcd": etcd,
    }


def tree_state() -> dict[str, Any]:
    """The commit measured, and whether reconciler/ had uncommitted changes at the time."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
            ).stdout.strip()
        except OSError:
            return ""

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "reconciler_changes": git("status", "--porcelain", "--", "reconciler").splitlines(),
    }


def build_report(
    opts: Options,
    results: Sequence[Measurement],
    *,
    started: float,
    machine: dict[str, Any],
    tree: dict[str, Any],
    standin: dict[str, Any],
    complete: bool,
) -> dict[str, Any]:
    checks = targets(results, namespaces=opts.namespaces)
    return {
        "complete": complete,
        "machine": machine,
        "tree": tree,
        "params": {
            "sizes": sorted(opts.sizes),
            "latency_median_ms": opts.latency_ms,
            "latency_sigma": opts.latency_sigma,
            "namespaces": opts.namespaces,
            "moved_fraction": opts.moved_fraction,
            "baseline_sample": opts.baseline_sample,
            "baseline_full_up_to": opts.baseline_full_up_to,
            "seed": opts.seed,
            "repeats": opts.repeats,
            "stand_in_validation": opts.validate,
            "stand_in_memo_answers": opts.memo_answers,
        },
        "total_s": round(time.monotonic() - started, 1),
        "results": [m.as_dict() for m in results],
        "ratios": ratios(results),
        "targets": checks,
        "stand_in": standin,
        "table_markdown": markdown_table(HEADER, table_rows(results)),
        "targets_markdown": markdown_table(TARGET_HEADER, target_rows(checks)),
    }


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_finite(report), indent=2, allow_nan=False) + "\n")
    tmp.replace(path)


def _finite(x: Any) -> Any:
    """JSON has no infinity: a ratio over zero is written as the string "inf"."""
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x
