"""What a site of two targets costs next to a site of one (#19), same run: N sites whose one
target is a Deployment, then the same N sites with a CronJob target next to their Deployment
(one release each), synced by the real CLI against a real kube-apiserver (audit log: requests
by verb) and the GitHub stand-in (requests, GraphQL points; a simulated latency per request).

Per scenario: a sync that moves every site to a new commit (cold), then a sync with nothing to
do (steady). Expected: the same GitHub requests and points for both (one lookup per repository,
whatever its targets), one LIST per namespace per kind (Jobs too where there are CronJobs),
one PATCH per target moved.

    .venv/bin/python -m bench.kinds_cost [--sites 1000] [--namespaces 10] [--latency-ms 200]
"""

from __future__ import annotations

import argparse
import collections
import io
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kubernetes

from reconciler.cli.main import main as cli
from testkit.controlplane import ControlPlane, find_binaries
from testkit.controlplane.audit import audit_verb_counts
from testkit.deployments import deployment_body
from testkit.github import GitHubStandIn, random_sha

TOKEN = "ghp_bench"


def _cronjob(name: str, image: str) -> dict[str, Any]:
    pod = {"restartPolicy": "Never", "containers": [{"name": "app", "image": image}]}
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name},
        "spec": {
            "schedule": "0 3 * * *",
            "jobTemplate": {"spec": {"template": {"spec": pod}}},
        },
    }


def _sites(n: int, namespaces: int, *, two: bool) -> str:
    out = ['[defaults]\nverify = "none"\nbranch = "main"\n']
    for i in range(n):
        ns = f"kinds-{i % namespaces:02d}"
        head = f'\n[sites.s{i}]\nrepo = "acme/s{i}"\nnamespace = "{ns}"\n'
        head += 'image = "gcr.io/p/s:{sha}"\n'
        if two:
            head += f'[[sites.s{i}.targets]]\nname = "web-{i}"\ncontainers = ["app"]\n'
            head += f'[[sites.s{i}.targets]]\nkind = "CronJob"\nname = "job-{i}"\n'
        else:
            head += f'deployment = "web-{i}"\ncontainer = "app"\n'
        out.append(head)
    return "".join(out)


def _create(api: Any, n: int, namespaces: int) -> None:
    core: Any = kubernetes.client.CoreV1Api(api)  # plain dicts as bodies (the client sends them)
    for k in range(namespaces):
        core.create_namespace({"metadata": {"name": f"kinds-{k:02d}"}})
    apps: Any = kubernetes.client.AppsV1Api(api)
    batch: Any = kubernetes.client.BatchV1Api(api)

    def one(i: int) -> None:
        ns = f"kinds-{i % namespaces:02d}"
        body = deployment_body(f"web-{i}", "gcr.io/p/s:before", sidecar=False)
        apps.create_namespaced_deployment(ns, body)
        batch.create_namespaced_cron_job(ns, _cronjob(f"job-{i}", "gcr.io/p/s:before"))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(n)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=1000)
    ap.add_argument("--namespaces", type=int, default=10)
    ap.add_argument("--latency-ms", type=float, default=200.0, help="median per GitHub request")
    args = ap.parse_args()
    n = args.sites
    with (
        tempfile.TemporaryDirectory() as tmp,
        ControlPlane(bin_dir=find_binaries(), audit_log=Path(tmp) / "audit.log") as plane,
        GitHubStandIn(tokens=[TOKEN], latency_median_ms=args.latency_ms, seed=1) as gh,
    ):
        audit = Path(tmp) / "audit.log"
        with plane.api_client() as api:
            _create(api, n, args.namespaces)
        for i in range(n):
            gh.add_repo(f"acme/s{i}", {"main": random_sha()})
        env = {"GITHUB_API_URL": gh.url, "GITHUB_TOKEN": TOKEN}
        env["KUBECONFIG"] = str(plane.kubeconfig_path)
        where = f"{args.namespaces} namespaces"
        print(f"N = {n} sites over {where}, GitHub median {args.latency_ms:.0f} ms per request")
        print(f"{'scenario':34} {'time':>7} {'GitHub':>7} {'points':>7}  Kubernetes by verb")
        for two in (False, True):
            sites = Path(tmp) / f"sites-{int(two)}.toml"
            sites.write_text(_sites(n, args.namespaces, two=two))
            for i in range(n):
                gh.set_branch(f"acme/s{i}", "main", random_sha())
            what = "Deployment + CronJob" if two else "one Deployment"
            for step in ("cold (all move)", "steady"):
                took, requests, points, verbs = _sync(gh, audit, sites, env)
                kube = ", ".join(f"{c} {v}" for v, c in sorted(verbs.items()))
                label = f"{what}: {step}"
                print(f"{label:34} {took:6.2f}s {requests:7} {points:7}  {kube}")
    return 0


def _sync(
    gh: GitHubStandIn, audit: Path, sites: Path, env: dict[str, str]
) -> tuple[float, int, int, collections.Counter[str]]:
    before_stats, before_verbs = gh.stats(), audit_verb_counts(audit)
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    code = cli(
        ["sync", "--config", str(sites), "--output", "json"], env=env, stdout=out, stderr=err
    )
    took = time.perf_counter() - start
    assert code == 0, err.getvalue()[-2000:]
    after = gh.stats()
    requests = after["requests"] - before_stats["requests"]
    points = sum(after["points"].values()) - sum(before_stats["points"].values())
    return took, requests, points, audit_verb_counts(audit) - before_verbs


if __name__ == "__main__":
    sys.exit(main())
