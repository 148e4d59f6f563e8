"""Measurement: one sync (serve, CLI or baseline): times, requests, points, CPU and peak RSS."""

from __future__ import annotations

import collections
import json
import os
import re
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.audit import AuditWindow, KubeCounts
from bench.procs import (
    ServeProcess,
    children,
    comm,
    cpu_seconds,
    reconciler_command,
    reset_hwm,
    run_measured,
    vm_hwm_mb,
)
from bench.setup import (
    BRANCH,
    CONTAINER,
    IDENTITIES,
    IMAGE_TEMPLATE,
    REPO_ROOT,
    SA_NAMESPACE,
    TOKENS,
    BenchSite,
    World,
)
from reconciler.core.rollout.state import FIELD_MANAGER

SETTLE_S = 0.3  # let the last audit lines reach the file
FOLLOW_WAIT_S = 30.0  # at most, for serve's follower to read the rollouts a sync started
COMPARE_ROUTE = "rest:compare"  # serve's status page: commits behind, fetched in the background


@dataclass
class Measurement:
    """One measured sync: the figures of the issue, for one (N, scenario, mode)."""

    n: int
    scenario: str
    mode: str
    sites: int  # sites this run covered (the baseline's sample when sampled)
    expected_updates: int
    updated: int
    errors: list[str]
    sync_s: float | None  # in-process sync time
    wall_s: float  # client-side wall (serve: POST /sync round trip; CLI/baseline: whole process)
    gh_requests: int
    gh_points: int
    gh_not_modified: int
    kube: dict[str, Any]
    rss_mb: float | None
    extrapolated_from: int | None = None  # baseline: measured on this many sites
    measured: dict[str, Any] | None = None  # baseline: the raw figures before extrapolation
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def reads(self) -> int:
        return int(self.kube["reads"])

    @property
    def writes(self) -> int:
        return int(self.kube["writes"])

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "scenario": self.scenario,
            "mode": self.mode,
            "sites": self.sites,
            "expected_updates": self.expected_updates,
            "updated": self.updated,
            "errors": self.errors[:20],
            "sync_s": None if self.sync_s is None else round(self.sync_s, 3),
            "wall_s": round(self.wall_s, 3),
            "github": {
                "requests": self.gh_requests,
                "points": self.gh_points,
                "not_modified": self.gh_not_modified,
            },
            "kube": self.kube,
            "peak_rss_mb": None if self.rss_mb is None else round(self.rss_mb, 1),
            "extrapolated_from": self.extrapolated_from,
            "measured": self.measured,
            **self.extra,
        }


class Meter:
    """Measures syncs against one World: resets the counters, runs, reads them back."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.audit = AuditWindow(world.cp.audit_log or world.workdir / "audit.log")
        self.users = {
            mode: f"system:serviceaccount:{SA_NAMESPACE}:{sa}" for mode, sa in IDENTITIES.items()
        }
        self.servers = {
            name: pid
            for pid in children(os.getpid())
            if (name := comm(pid)) in ("kube-apiserver", "etcd")
        }
        self._cpu_start: dict[str, float] = {}

    def _begin(self) -> None:
        self.world.gh.reset_stats()
        self.world.gh.reset_rate_limits()  # every measured sync starts with a full hour's budget
        self.audit.mark()
        self._cpu_start = self._cpu_now()

    def _cpu_now(self) -> dict[str, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        now = {"stand-in (bench process)": usage.ru_utime + usage.ru_stime}
        for name, pid in self.servers.items():
            cpu = cpu_seconds(pid)
            if cpu is not None:
                now[name] = cpu
        return now

    def _cpu_used(self, **more: float | None) -> dict[str, float]:
        """CPU seconds each party used during the measured run (all share the same cores)."""
        end = self._cpu_now()
        used = {k: round(end[k] - v, 2) for k, v in self._cpu_start.items() if k in end}
        used.update({k: round(v, 2) for k, v in more.items() if v is not None})
        return used

    def _github(self, mode: str) -> tuple[int, int, int]:
        per = self.world.gh.stats()["by_token"].get(TOKENS[mode])
        if per is None:
            return 0, 0, 0
        return per["requests"], sum(per["points"].values()), per["not_modified"]

    def _kube(self, mode: str) -> KubeCounts:
        time.sleep(SETTLE_S)
        return self.audit.count(self.users[mode])

    def _kube_serve(self, reply: dict[str, Any]) -> KubeCounts:
        """serve's requests: the sync's, then the reads of the follower it woke. Each rollout the
        sync started is followed: on this control plane (no controller reports a rollout) one
        read tells it so and it stops: a LIST of each namespace with several such sites, else a
        GET of the site. Waits for those reads so that none falls into a later window."""
        started = collections.Counter(
            r["namespace"] for r in reply.get("results", []) if r.get("rollout") == "progressing"
        )
        expected = len(started)
        end = float(reply["finished_at"])
        deadline = time.monotonic() + FOLLOW_WAIT_S
        while True:
            time.sleep(SETTLE_S)
            counts = self.audit.count(self.users["serve"], sync_end=end)
            if counts.follow_reads >= expected or time.monotonic() > deadline:
                return counts

    def measure_serve(
        self, serve: ServeProcess, n: int, scenario: str, expected: int
    ) -> Measurement:
        assert serve.worker_pid is not None
        hwm_reset = reset_hwm(serve.worker_pid)
        worker_cpu = cpu_seconds(serve.worker_pid) or 0.0
        self._begin()
        reply, wall = serve.sync()
        cpu = self._cpu_used(reconciler=(cpu_seconds(serve.worker_pid) or 0.0) - worker_cpu)
        kube = self._kube_serve(reply)
        requests, points, not_modified = self._github("serve")
        # Compares are the status page's, in the background after a sync (the sync itself asks
        # GitHub nothing else over REST): counted apart, each 1 REST point.
        compares = self.world.gh.stats()["by_route"].get(COMPARE_ROUTE, 0)
        requests, points = requests - compares, points - compares
        results = reply.get("results", [])
        return Measurement(
            n=n,
            scenario=scenario,
            mode="serve",
            sites=len(results),
            expected_updates=expected,
            updated=sum(1 for r in results if r.get("applied")),
            errors=[f"{r['site']}: {r['reason']}" for r in results if r.get("action") == "error"],
            sync_s=float(reply["duration_s"]),
            wall_s=wall,
            gh_requests=requests,
            gh_points=points,
            gh_not_modified=not_modified,
            kube=kube.as_dict(),
            rss_mb=vm_hwm_mb(serve.worker_pid),
            extra={
                "peak_rss_scope": "this sync" if hwm_reset else "worker lifetime",
                "cpu_s": cpu,
                "github_compares_in_window": compares,
            },
        )

    def measure_cli(self, config: Path, n: int, scenario: str, expected: int) -> Measurement:
        argv = [*reconciler_command(), "-v", "sync", "--config", str(config), "--output", "json"]
        self._begin()
        run = run_measured(argv, self.world.env("cli"))
        cpu = self._cpu_used(reconciler=run.cpu_s)
        kube = self._kube("cli")
        requests, points, not_modified = self._github("cli")
        try:
            results: list[dict[str, Any]] = json.loads(run.stdout)
        except ValueError:
            results = []
        errors = [f"{r['site']}: {r['reason']}" for r in results if r.get("action") == "error"]
        if run.returncode != 0 and not errors:
            errors.append(f"exit {run.returncode}: {run.stderr[-500:]}")
        # `-v` logs the engine's own "sync <id> (cli): ... in 1.23s" line.
        timed = re.search(r"sync \w+ \(cli\): .* in (\d+(?:\.\d+)?)s", run.stderr)
        return Measurement(
            n=n,
            scenario=scenario,
            mode="cli",
            sites=len(results),
            expected_updates=expected,
            updated=sum(1 for r in results if r.get("applied")),
            errors=errors,
            sync_s=float(timed.group(1)) if timed else None,
            wall_s=run.wall_s,
            gh_requests=requests,
            gh_points=points,
            gh_not_modified=not_modified,
            kube=kube.as_dict(),
            rss_mb=run.max_rss_mb,
            extra={"cpu_s": cpu},
        )

    def measure_baseline(
        self, sample: Sequence[BenchSite], n: int, scenario: str, expected: int
    ) -> Measurement:
        spec = {
            "github_url": self.world.gh.url,
            "github_token": TOKENS["baseline"],
            "kube_host": self.world.cp.host,
            "kube_ca": str(self.world.cp.ca_path),
            "kube_token": self.world.kube_tokens["baseline"],
            "image_template": IMAGE_TEMPLATE,
            "field_manager": FIELD_MANAGER,
            "sites": [
                {
                    "repo": s.repo,
                    "branch": BRANCH,
                    "namespace": s.namespace,
                    "deployment": s.name,
                    "container": CONTAINER,
                }
                for s in sample
            ],
        }
        spec_path = self.world.workdir / f"baseline-{n}-{scenario}.json"
        spec_path.write_text(json.dumps(spec))
        argv = [sys.executable, "-m", "bench.baseline", "--spec", str(spec_path)]
        self._begin()
        run = run_measured(argv, self.world.env("baseline"), cwd=REPO_ROOT)
        cpu = self._cpu_used(baseline=run.cpu_s)
        kube = self._kube("baseline")
        requests, points, not_modified = self._github("baseline")
        try:
            out = json.loads(run.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            out = {"loop_s": run.wall_s, "updated": 0, "errors": [run.stderr[-500:]]}
        k = len(sample)
        measured = {
            "sites": k,
            "updated": out["updated"],
            "sync_s": round(out["loop_s"], 3),
            "wall_s": round(run.wall_s, 3),
            "github": {"requests": requests, "points": points, "not_modified": not_modified},
            "kube": kube.as_dict(),
            "peak_rss_mb": round(run.max_rss_mb, 1),
            "cpu_s": cpu,
        }
        f = n / k
        startup = run.wall_s - out["loop_s"]

        def scale(x: int) -> int:
            return round(x * f)

        kube_ext = {
            "reads": scale(kube.reads),
            "writes": scale(kube.writes),
            "deployment_writes": scale(kube.deployment_writes),
            "event_creates": scale(kube.event_creates),
        }
        return Measurement(
            n=n,
            scenario=scenario,
            mode="baseline",
            sites=n,
            expected_updates=scale(expected),
            updated=scale(out["updated"]),
            errors=list(out.get("errors", [])),
            sync_s=out["loop_s"] * f,
            wall_s=startup + out["loop_s"] * f,
            gh_requests=scale(requests),
            gh_points=scale(points),
            gh_not_modified=scale(not_modified),
            kube=kube_ext if k != n else kube.as_dict(),
            rss_mb=run.max_rss_mb,
            extrapolated_from=k if k != n else None,
            measured=measured,
            extra={"measured_expected_updates": expected},
        )


def summary(m: Measurement) -> str:
    sync = "-" if m.sync_s is None else f"{m.sync_s:.2f}s"
    spread = m.extra.get("sync_s_min_max") or m.extra.get("wall_s_min_max")
    if spread:
        sync += f" (median of {m.extra['repeats']}, {spread[0]:.2f}-{spread[1]:.2f})"
    ext = f" (extrapolated from {m.extrapolated_from})" if m.extrapolated_from else ""
    follow = m.kube.get("follow_reads")
    return (
        f"sync {sync} wall {m.wall_s:.2f}s, GitHub {m.gh_requests} req/{m.gh_points} pts, "
        f"kube {m.reads} reads/{m.writes} writes{f' (+{follow} follow reads)' if follow else ''}"
        f", updated {m.updated}/{m.expected_updates}"
        f"{', ERRORS ' + str(len(m.errors)) if m.errors else ''}"
        f"{'' if m.rss_mb is None else f', RSS {m.rss_mb:.0f} MB'}{ext}"
    )
