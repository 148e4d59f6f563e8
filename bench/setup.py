"""Setup: the cluster, its identities, the sites (repositories and Deployments) and sites.toml."""

from __future__ import annotations

import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import kubernetes

from reconciler.core.rollout.state import FIELD_MANAGER
from testkit.controlplane import (
    ControlPlane,
    kubeconfig_for_token,
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
    memo_answers: bool = False  # the stand-in gives a remembered answer while nothing changed
    workdir: Path | None = None
    print_table: bool = True
    scenarios: tuple[str, ...] = SCENARIOS  # a subset, in this order (cold first: it stales)
    modes: tuple[str, ...] = MODES
    lookback: int | None = None  # RECONCILER_LOOKBACK for serve and the CLI (None: the default)
    setup_concurrency: int = 16  # the admin's requests at once when creating Deployments
    serve_env: tuple[tuple[str, str], ...] = ()  # more environment for serve and the CLI


@dataclass(frozen=True)
class BenchSite:
    index: int
    name: str
    repo: str
    namespace: str

    def image(self, sha: str) -> str:
        owner, repo = self.repo.split("/", 1)
        return IMAGE_TEMPLATE.format(owner=owner.lower(), repo=repo.lower(), sha=sha)


class World:
    """One control plane and one stand-in for the whole run; sites grow with N."""

    def __init__(self, cp: ControlPlane, gh: GitHubStandIn, workdir: Path, opts: Options) -> None:
        self.cp = cp
        self.gh = gh
        self.workdir = workdir
        self.opts = opts
        self.rng = random.Random(opts.seed)
        self.admin = self._admin_client()
        self.apps = kubernetes.client.AppsV1Api(self.admin)
        self.sites: list[BenchSite] = []
        self.heads: dict[int, str] = {}
        self.stale = 0
        self.kube_tokens: dict[str, str] = {}
        self.kubeconfigs: dict[str, Path] = {}
        width = max(2, len(str(opts.namespaces - 1)))
        self.namespaces = [f"bench-{i:0{width}d}" for i in range(opts.namespaces)]

    def _admin_client(self) -> kubernetes.client.ApiClient:
        cfg = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(self.cp.kubeconfig_path), client_configuration=cfg
        )
        cfg.connection_pool_maxsize = max(32, self.opts.setup_concurrency + 2)
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
                            "verbs": ["get", "list", "watch", "patch", "update"],
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
        with ThreadPoolExecutor(self.opts.setup_concurrency, thread_name_prefix="setup") as pool:
            for _ in pool.map(fn, sites):
                pass

    def make_stale(self, sites: Sequence[BenchSite]) -> None:
        """Set the sites' app image to one no branch points at: each is behind.

        Written under the reconciler's field manager, as an older rollout of its own would be:
        an image another manager set is a person's change, which the reconciler holds
        (reconciler.core.rollout.state.hold_of) instead of updating."""
        self.stale += 1
        tag = f"stale-{self.stale}"

        def patch(site: BenchSite) -> None:
            body = {
                "spec": {"template": {"spec": {"containers": [{"name": CONTAINER, "image": tag}]}}}
            }
            self.apps.patch_namespaced_deployment(
                site.name, site.namespace, body, field_manager=FIELD_MANAGER
            )

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
        if self.opts.lookback is not None:
            env["RECONCILER_LOOKBACK"] = str(self.opts.lookback)
        env.update(self.opts.serve_env)
        return env

    def baseline_sample(self, n: int) -> list[BenchSite]:
        sites = self.sites[:n]
        k = self.opts.baseline_sample
        if n <= self.opts.baseline_full_up_to or k >= n:
            return sites
        return [sites[math.floor(j * n / k)] for j in range(k)]  # evenly spread over namespaces

    def moved_count(self, n: int) -> int:
        return max(1, round(n * self.opts.moved_fraction))
