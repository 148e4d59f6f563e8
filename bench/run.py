"""What a sync costs at N sites, warm (serve) and cold (CLI), against the straightforward loop.

    .venv/bin/python -m bench.run [--sizes 30,300,1000] [--latency-ms 200]
                                  [--out bench/results/latest.json]

Starts a real kube-apiserver + etcd (with an audit log) and the GitHub stand-in (log-normal
latency), creates N Deployments across 10 namespaces and one repository per site, then for
each N measures three scenarios (cold: every site behind; steady: nothing changed; moved: 10%
of the branches moved) three ways: a warm `reconciler serve` (POST /sync), a whole
`reconciler sync` CLI run, and the baseline loop (bench/baseline.py). Prints a table and
writes JSON. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import kubernetes

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
from testkit.controlplane import (
    ControlPlane,
    kubeconfig_for_token,
    pinned_versions,
    serviceaccount_token,
    token_api_client,
)
from testkit.deployments import deployment_body
from testkit.github import GitHubStandIn, random_sha

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGE_TEMPLATE = "registry.bench.local/{owner}/{repo}:{sha}"
OWNER = "org"
BRANCH = "main"
CONTAINER = "app"
SA_NAMESPACE = "bench-system"
IDENTITIES = {"serve": "reconciler-serve", "cli": "reconciler-cli", "baseline": "baseline"}
TOKENS = {"serve": "ghp_bench_serve", "cli": "ghp_bench_cli", "baseline": "ghp_bench_baseline"}
TRIGGER_TOKEN = "bench-trigger-token-of-at-least-32-bytes"
# A schedule that does not fire during a run (29 February, midnight): only POST /sync syncs.
QUIET_SCHEDULE = "0 0 29 2 *"
SCENARIOS = ("cold", "steady", "moved")
MODES = ("serve", "cli", "baseline")
SETTLE_S = 0.3  # let the last audit lines reach the file

# Targets at the largest N (issue 6); checked and printed, never asserted by tests.
TARGET_N = 1000
TARGET_STEADY_SERVE_S = 2.0
TARGET_STEADY_CLI_S = 5.0
TARGET_STEADY_POINTS = 20
TARGET_MOVED_SERVE_S = 5.0
TARGET_COLD_SERVE_S = 15.0
TARGET_RSS_MB = 150.0
TARGET_STEADY_SPEEDUP = 50.0


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Options:
    sizes: tuple[int, ...] = (30, 300, 1000)
    latency_ms: float = 200.0
    latency_sigma: float = 0.5
    namespaces: int = 10
    moved_fraction: float = 0.1
    baseline_sample: int = 100  # sites the baseline runs on when N > baseline_full_up_to
    baseline_full_up_to: int = 300
    out: Path | None = REPO_ROOT / "bench" / "results" / "latest.json"
    seed: int = 6
    repeats: int = 5  # runs of each serve/CLI measurement; the median is reported
    validate: bool = False  # stand-in schema validation (costs CPU on the shared 2 cores)
    workdir: Path | None = None
    print_table: bool = True


@dataclass(frozen=True)
class BenchSite:
    index: int
    name: str
    repo: str
    namespace: str

    def image(self, sha: str) -> str:
        owner, repo = self.repo.split("/", 1)
        return IMAGE_TEMPLATE.format(owner=owner.lower(), repo=repo.lower(), sha=sha)


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


class Bench:
    """One control plane and one stand-in for the whole run; sites grow with N."""

    def __init__(self, cp: ControlPlane, gh: GitHubStandIn, workdir: Path, opts: Options) -> None:
        self.cp = cp
        self.gh = gh
        self.workdir = workdir
        self.opts = opts
        self.rng = random.Random(opts.seed)
        self.audit = AuditWindow(cp.audit_log or workdir / "audit.log")
        self.admin = self._admin_client()
        self.apps = kubernetes.client.AppsV1Api(self.admin)
        self.sites: list[BenchSite] = []
        self.heads: dict[int, str] = {}
        self.stale = 0
        self.users = {
            mode: f"system:serviceaccount:{SA_NAMESPACE}:{sa}" for mode, sa in IDENTITIES.items()
        }
        self.kube_tokens: dict[str, str] = {}
        self.kubeconfigs: dict[str, Path] = {}
        self.namespaces = [f"bench-{i:02d}" for i in range(opts.namespaces)]
        self.servers = {
            name: pid
            for pid in children(os.getpid())
            if (name := comm(pid)) in ("kube-apiserver", "etcd")
        }
        self._cpu_start: dict[str, float] = {}

    # -- setup ---------------------------------------------------------------------------------

    def _admin_client(self) -> kubernetes.client.ApiClient:
        cfg = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(self.cp.kubeconfig_path), client_configuration=cfg
        )
        cfg.connection_pool_maxsize = 32
        return kubernetes.client.ApiClient(cfg)

    def setup_cluster(self) -> None:
        core = kubernetes.client.CoreV1Api(self.admin)
        for ns in self.namespaces:
            core.create_namespace(
                kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=ns))
            )
        rbac = kubernetes.client.RbacAuthorizationV1Api(self.admin)
        rbac.create_cluster_role(
            cast(
                Any,
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRole",
                    "metadata": {"name": "bench-reconciler"},
                    "rules": [
                        {
                            "apiGroups": ["apps"],
                            "resources": ["deployments"],
                            "verbs": ["get", "list", "patch", "update"],
                        },
                        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
                    ],
                },
            )
        )
        for mode, sa in IDENTITIES.items():
            token = serviceaccount_token(self.cp, SA_NAMESPACE, sa, expiration_seconds=12 * 3600)
            self.kube_tokens[mode] = token
            self.kubeconfigs[mode] = kubeconfig_for_token(
                self.cp, token, self.workdir / f"{sa}.kubeconfig"
            )
        rbac.create_cluster_role_binding(
            cast(
                Any,
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRoleBinding",
                    "metadata": {"name": "bench-reconciler"},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": "bench-reconciler",
                    },
                    "subjects": [
                        {"kind": "ServiceAccount", "name": sa, "namespace": SA_NAMESPACE}
                        for sa in IDENTITIES.values()
                    ],
                },
            )
        )
        self._wait_rbac()

    def _wait_rbac(self, timeout: float = 15.0) -> None:
        """RBAC reaches the authorizer through an informer: wait until every identity may list."""
        for mode, token in self.kube_tokens.items():
            with token_api_client(self.cp, token) as api:
                apps = kubernetes.client.AppsV1Api(api)
                deadline = time.monotonic() + timeout
                while True:
                    try:
                        apps.list_namespaced_deployment(self.namespaces[0], limit=1)
                        break
                    except kubernetes.client.ApiException as e:
                        if e.status != 403 or time.monotonic() > deadline:
                            raise RuntimeError(f"RBAC for {mode} not effective: {e}") from e
                        time.sleep(0.1)

    def grow_to(self, n: int) -> None:
        """Sites 0..n-1: a repository each on the stand-in and a Deployment in the cluster."""
        new: list[BenchSite] = []
        for i in range(len(self.sites), n):
            name = f"site-{i:05d}"
            site = BenchSite(i, name, f"{OWNER}/{name}", self.namespaces[i % len(self.namespaces)])
            sha = random_sha()
            self.gh.add_repo(site.repo, branches={BRANCH: sha})
            self.heads[i] = sha
            new.append(site)
        started = time.monotonic()

        def create(site: BenchSite) -> None:
            body = deployment_body(site.name, site.image(self.heads[site.index]))
            self.apps.create_namespaced_deployment(site.namespace, cast(Any, body))

        self._parallel(create, new)
        self.sites.extend(new)
        log(f"created {len(new)} Deployments in {time.monotonic() - started:.1f}s (total {n})")

    def _parallel(self, fn: Callable[[BenchSite], None], sites: Iterable[BenchSite]) -> None:
        with ThreadPoolExecutor(16, thread_name_prefix="setup") as pool:
            for _ in pool.map(fn, sites):
                pass

    def make_stale(self, sites: Sequence[BenchSite]) -> None:
        """Set the sites' app image to one no branch points at (as admin): each is behind."""
        self.stale += 1
        tag = f"stale-{self.stale}"

        def patch(site: BenchSite) -> None:
            body = {
                "spec": {"template": {"spec": {"containers": [{"name": CONTAINER, "image": tag}]}}}
            }
            self.apps.patch_namespaced_deployment(site.name, site.namespace, body)

        self._parallel(patch, sites)

    def move(self, sites: Sequence[BenchSite]) -> None:
        for site in sites:
            self.heads[site.index] = self.gh.set_branch(site.repo, BRANCH)

    def write_config(self, n: int) -> Path:
        lines = [
            "# Generated by bench/run.py.",
            "[defaults]",
            f'branch = "{BRANCH}"',
            f'container = "{CONTAINER}"',
            f'image = "{IMAGE_TEMPLATE}"',
            "# No registry in the benchmark: roll out as soon as the branch moves.",
            'verify = "none"',
            "",
            "[service]",
            f'schedule = "{QUIET_SCHEDULE}"',
            "",
        ]
        for site in self.sites[:n]:
            lines += [
                f"[sites.{site.name}]",
                f'repo = "{site.repo}"',
                f'namespace = "{site.namespace}"',
                "",
            ]
        path = self.workdir / f"sites-{n}.toml"
        path.write_text("\n".join(lines))
        return path

    def env(self, mode: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("GITHUB_", "KUBERNETES_", "RECONCILER_", "PUBSUB_"))
        }
        env.update(
            GITHUB_API_URL=self.gh.url,
            GITHUB_TOKEN=TOKENS[mode],
            KUBECONFIG=str(self.kubeconfigs[mode]),
        )
        return env

    # -- measuring -----------------------------------------------------------------------------

    def _begin(self) -> None:
        self.gh.reset_stats()
        self.gh.reset_rate_limits()  # every measured sync starts with a full hour's budget
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
        per = self.gh.stats()["by_token"].get(TOKENS[mode])
        if per is None:
            return 0, 0, 0
        return per["requests"], sum(per["points"].values()), per["not_modified"]

    def _kube(self, mode: str) -> KubeCounts:
        time.sleep(SETTLE_S)
        return self.audit.count(self.users[mode])

    def measure_serve(
        self, serve: ServeProcess, n: int, scenario: str, expected: int
    ) -> Measurement:
        assert serve.worker_pid is not None
        hwm_reset = reset_hwm(serve.worker_pid)
        worker_cpu = cpu_seconds(serve.worker_pid) or 0.0
        self._begin()
        reply, wall = serve.sync()
        cpu = self._cpu_used(reconciler=(cpu_seconds(serve.worker_pid) or 0.0) - worker_cpu)
        kube = self._kube("serve")
        requests, points, not_modified = self._github("serve")
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
            },
        )

    def measure_cli(self, config: Path, n: int, scenario: str, expected: int) -> Measurement:
        argv = [*reconciler_command(), "-v", "sync", "--config", str(config), "--output", "json"]
        self._begin()
        run = run_measured(argv, self.env("cli"))
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
            "github_url": self.gh.url,
            "github_token": TOKENS["baseline"],
            "kube_host": self.cp.host,
            "kube_ca": str(self.cp.ca_path),
            "kube_token": self.kube_tokens["baseline"],
            "image_template": IMAGE_TEMPLATE,
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
        spec_path = self.workdir / f"baseline-{n}-{scenario}.json"
        spec_path.write_text(json.dumps(spec))
        argv = [sys.executable, "-m", "bench.baseline", "--spec", str(spec_path)]
        self._begin()
        run = run_measured(argv, self.env("baseline"), cwd=REPO_ROOT)
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

    # -- one N ---------------------------------------------------------------------------------

    def baseline_sample(self, n: int) -> list[BenchSite]:
        sites = self.sites[:n]
        k = self.opts.baseline_sample
        if n <= self.opts.baseline_full_up_to or k >= n:
            return sites
        return [sites[math.floor(j * n / k)] for j in range(k)]  # evenly spread over namespaces

    def moved_count(self, n: int) -> int:
        return max(1, round(n * self.opts.moved_fraction))

    def run_size(self, n: int) -> list[Measurement]:
        self.grow_to(n)
        config = self.write_config(n)
        sites = self.sites[:n]
        sample = self.baseline_sample(n)
        moved = self.rng.sample(sites, self.moved_count(n))
        moved_sample = (
            moved if len(sample) == n else self.rng.sample(sample, self.moved_count(len(sample)))
        )
        out: list[Measurement] = []
        serve = ServeProcess(
            config, self.env("serve"), self.workdir / f"serve-{n}.log", TRIGGER_TOKEN
        )
        started = time.monotonic()
        serve.start()
        log(f"N={n}: reconciler serve up, startup sync done ({time.monotonic() - started:.1f}s)")
        try:
            if not serve.ready():
                raise RuntimeError("reconciler serve is not ready:\n" + serve.log_tail())
            for scenario in SCENARIOS:
                for mode in MODES:
                    repeats = 1 if mode == "baseline" else max(1, self.opts.repeats)
                    runs: list[Measurement] = []
                    for _ in range(repeats):
                        if scenario == "cold":
                            self.make_stale(sample if mode == "baseline" else sites)
                            expected = len(sample) if mode == "baseline" else n
                        elif scenario == "moved":
                            chosen = moved_sample if mode == "baseline" else moved
                            self.move(chosen)
                            expected = len(chosen)
                        else:
                            expected = 0
                        if mode == "serve":
                            m = self.measure_serve(serve, n, scenario, expected)
                        elif mode == "cli":
                            m = self.measure_cli(config, n, scenario, expected)
                        else:
                            m = self.measure_baseline(sample, n, scenario, expected)
                        runs.append(m)
                    m = combine(runs)
                    log(f"N={n} {scenario:6} {mode:8} {_short(m)}")
                    out.append(m)
        finally:
            serve.stop()
        return out


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
    for k in ("reads", "writes", "deployment_writes", "event_creates"):
        worst_kube[k] = max(int(m.kube[k]) for m in runs)
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


def _short(m: Measurement) -> str:
    sync = "-" if m.sync_s is None else f"{m.sync_s:.2f}s"
    spread = m.extra.get("sync_s_min_max") or m.extra.get("wall_s_min_max")
    if spread:
        sync += f" (median of {m.extra['repeats']}, {spread[0]:.2f}-{spread[1]:.2f})"
    ext = f" (extrapolated from {m.extrapolated_from})" if m.extrapolated_from else ""
    return (
        f"sync {sync} wall {m.wall_s:.2f}s, GitHub {m.gh_requests} req/{m.gh_points} pts, "
        f"kube {m.reads} reads/{m.writes} writes, updated {m.updated}/{m.expected_updates}"
        f"{', ERRORS ' + str(len(m.errors)) if m.errors else ''}"
        f"{'' if m.rss_mb is None else f', RSS {m.rss_mb:.0f} MB'}{ext}"
    )


# --------------------------------------------------------------------------------------------
# Ratios, targets, table


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
                str(m.reads),
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


# --------------------------------------------------------------------------------------------
# Machine and entry point


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
        },
        "total_s": round(time.monotonic() - started, 1),
        "results": [m.as_dict() for m in results],
        "ratios": ratios(results),
        "targets": checks,
        "stand_in": standin,
        "table_markdown": markdown_table(HEADER, table_rows(results)),
        "targets_markdown": markdown_table(TARGET_HEADER, target_rows(checks)),
    }


TARGET_HEADER = ["target (N=1000)", "value", "limit", "result"]


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_finite(report), indent=2, allow_nan=False) + "\n")
    tmp.replace(path)


def run_benchmark(opts: Options) -> dict[str, Any]:
    """The whole benchmark; returns (and writes to opts.out) the JSON report.

    The JSON is also written after each N (``"complete": false``), so a failure late in a long
    run keeps what was measured.
    """
    own_workdir = opts.workdir is None
    workdir = opts.workdir or Path(tempfile.mkdtemp(prefix="reconciler-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    log(f"work dir {workdir}")
    started = time.monotonic()
    machine, tree = machine_info(), tree_state()
    results: list[Measurement] = []
    with (
        ControlPlane(audit_log=workdir / "audit.log") as cp,
        GitHubStandIn(
            latency_median_ms=opts.latency_ms,
            latency_sigma=opts.latency_sigma,
            max_concurrent=100,
            validate=opts.validate,
            tokens=TOKENS.values(),
            preload_schemas=True,
        ) as gh,
    ):
        log(f"control plane up in {cp.startup_seconds:.1f}s at {cp.host}; GitHub stand-in {gh.url}")

        def standin() -> dict[str, Any]:
            return {
                "schema_violations": gh.schema_violations[:20],
                "internal_errors": gh.internal_errors[:20],
            }

        bench = Bench(cp, gh, workdir, opts)
        bench.setup_cluster()
        for n in sorted(opts.sizes):
            results += bench.run_size(n)
            if opts.out is not None:
                partial = build_report(
                    opts,
                    results,
                    started=started,
                    machine=machine,
                    tree=tree,
                    standin=standin(),
                    complete=False,
                )
                write_report(opts.out, partial)
        final_standin = standin()
    if own_workdir:  # kept for a look when the run failed (the exception skips this)
        shutil.rmtree(workdir, ignore_errors=True)
    report = build_report(
        opts,
        results,
        started=started,
        machine=machine,
        tree=tree,
        standin=final_standin,
        complete=True,
    )
    if opts.out is not None:
        write_report(opts.out, report)
    if opts.print_table:
        print(text_table(HEADER, table_rows(results)))
        if report["targets"]:
            print()
            print(text_table(TARGET_HEADER, target_rows(report["targets"])))
        print(f"\n{len(results)} measurements in {report['total_s']:.0f}s; JSON: {opts.out}")
    return report


def _finite(x: Any) -> Any:
    """JSON has no infinity: a ratio over zero is written as the string "inf"."""
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def _parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--sizes", default="30,300,1000", help="comma-separated N (30,300,1000)")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="median GitHub latency")
    parser.add_argument("--latency-sigma", type=float, default=0.5, help="log-normal sigma")
    parser.add_argument(
        "--baseline-sample",
        type=int,
        default=100,
        help="sites the baseline runs on when N > --baseline-full-up-to (then extrapolated)",
    )
    parser.add_argument("--baseline-full-up-to", type=int, default=300)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench/results/latest.json")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="runs of each serve and CLI measurement (median reported; the baseline runs once)",
    )
    parser.add_argument("--validate", action="store_true", help="stand-in schema validation")
    parser.add_argument("--workdir", type=Path, help="keep kubeconfigs, logs, audit log here")
    args = parser.parse_args(argv)
    return Options(
        sizes=tuple(int(s) for s in args.sizes.split(",") if s.strip()),
        latency_ms=args.latency_ms,
        latency_sigma=args.latency_sigma,
        baseline_sample=args.baseline_sample,
        baseline_full_up_to=args.baseline_full_up_to,
        out=args.out,
        seed=args.seed,
        repeats=args.repeats,
        validate=args.validate,
        workdir=args.workdir,
    )


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


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if len(argv) == 2 and argv[0] == "--render":
        print(render_markdown(json.loads(Path(argv[1]).read_text())), end="")
        return 0
    run_benchmark(_parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
