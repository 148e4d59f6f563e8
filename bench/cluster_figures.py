"""Local cluster figures: start time once built, a first rollout, a crash loop showing, and the
resident memory of each component (testkit/controlplane/cluster.py).

    .venv/bin/python -m bench.cluster_figures [--runs 3] [--nodes 1] [--workload-controllers]

``--workload-controllers`` also runs the statefulset, daemonset, job and cronjob controllers
(WORKLOAD_CONTROLLERS) in kube-controller-manager, to compare the start time and memory.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import kubernetes  # noqa: E402

from testkit.controlplane import (  # noqa: E402
    DEFAULT_CONTROLLERS,
    WORKLOAD_CONTROLLERS,
    LocalCluster,
    crashloop_sha,
    find_binaries,
    find_cluster_binaries,
    wait_for,
)
from testkit.deployments import deployment_body  # noqa: E402


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _available(apps: Any, ns: str) -> bool:
    d = apps.read_namespaced_deployment("web", ns)
    s = d.status
    return bool(
        (s.observed_generation or 0) >= d.metadata.generation
        and s.updated_replicas == s.available_replicas == d.spec.replicas
    )


def _crashing(core: Any, ns: str, image: str) -> bool:
    for pod in core.list_namespaced_pod(ns, label_selector="app=web").items:
        for cs in pod.status.container_statuses or []:
            waiting = cs.state.waiting if cs.state else None
            if cs.image == image and waiting and waiting.reason == "CrashLoopBackOff":
                return True
    return False


def one_run(
    bin_dir: Path,
    cluster_bin_dir: Path,
    nodes: int = 1,
    controllers: tuple[str, ...] = DEFAULT_CONTROLLERS,
) -> dict[str, float]:
    with LocalCluster(
        bin_dir=bin_dir, cluster_bin_dir=cluster_bin_dir, nodes=nodes, controllers=controllers
    ) as cluster:
        figures = {
            "control plane ready s": cluster.startup_seconds,
            "cluster ready s": cluster.cluster_startup_seconds,
        }
        with cluster.api_client() as api:
            core: Any = kubernetes.client.CoreV1Api(api)
            apps: Any = kubernetes.client.AppsV1Api(api)
            core.create_namespace({"metadata": {"name": "bench"}})
            t0 = time.monotonic()
            apps.create_namespaced_deployment("bench", deployment_body("web", "gcr.io/p/web:v1"))
            wait_for(lambda: _available(apps, "bench"), what="the first rollout")
            figures["create → Available (2 pods) s"] = time.monotonic() - t0
            bad = f"gcr.io/p/web:{crashloop_sha()}"
            t0 = time.monotonic()
            apps.patch_namespaced_deployment(
                "web",
                "bench",
                {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": bad}]}}}},
            )
            wait_for(lambda: _crashing(core, "bench", bad), what="a crash loop")
            figures["image change → CrashLoopBackOff s"] = time.monotonic() - t0
        for name, proc in cluster.component_pids().items():
            figures[f"{name} RSS MiB"] = _rss_mib(proc)
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--workload-controllers", action="store_true")
    args = parser.parse_args()
    controllers = WORKLOAD_CONTROLLERS if args.workload_controllers else DEFAULT_CONTROLLERS
    bin_dir, cluster_bin_dir = find_binaries(), find_cluster_binaries()
    runs = []
    for i in range(args.runs):
        runs.append(one_run(bin_dir, cluster_bin_dir, args.nodes, controllers))
        print(f"run {i + 1}/{args.runs} done", file=sys.stderr)
    width = max(len(k) for k in runs[0])
    print(f"{'figure':<{width}}  {'median':>8}  {'min':>8}  {'max':>8}   ({args.runs} runs)")
    for key in runs[0]:
        values = [r[key] for r in runs]
        print(
            f"{key:<{width}}  {statistics.median(values):8.2f}  {min(values):8.2f}  "
            f"{max(values):8.2f}"
        )


if __name__ == "__main__":
    main()
