"""What one Helm deploy costs: helm runs, Kubernetes API requests and wall time, per step.

The real adapter (reconciler/adapters/helm.py) and the real helm on a LocalCluster whose API
server audits every request: the requests of each step are the audit log's new entries by
users other than the cluster's own components (helm's discovery requests included).

    .venv/bin/python -m bench.helm_cost [--runs 5]
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from reconciler.adapters.helm import HelmCLI
from reconciler.core.helmrelease import (
    deploy_description,
    release_image,
    rollback_description,
    set_pairs,
    wanted,
)
from reconciler.core.writeback import HelmValues, ImageRef
from testkit.controlplane import LocalCluster, find_binaries, find_cluster_binaries, find_helm
from testkit.controlplane.audit import audit_verb_counts
from testkit.helm import Helm

CHART = Path(__file__).resolve().parent.parent / "testkit" / "charts" / "web"
KEYS = HelmValues(tag="image.tag", repository="image.repository")
NS = "bench"


Step = tuple[float, int, collections.Counter[str]]  # wall time, helm runs, requests by verb


class Runs:
    """Counts the helm runs of a HelmCLI (wraps its `run`)."""

    def __init__(self, cli: HelmCLI) -> None:
        self.count = 0
        inner = cli.run

        def counted(where: str, *argv: str, timeout: float | None = None) -> str:
            self.count += 1
            return inner(where, *argv, timeout=timeout)

        cli.run = counted  # type: ignore[method-assign]


def step(audit: Path, runs: Runs, fn: Callable[[], object]) -> Step:
    before, n = audit_verb_counts(audit, resources_only=False), runs.count
    start = time.perf_counter()
    fn()
    took = time.perf_counter() - start
    return took, runs.count - n, audit_verb_counts(audit, resources_only=False) - before


def one_deploy(cli: HelmCLI, audit: Path, runs: Runs, sha: str) -> dict[str, Step]:
    """Each step of one deploy of `sha`, as the sync would run them, measured."""
    rel = cli.read(NS, "web")
    image = ImageRef.parse(f"registry.example/web:main-{sha[:7]}")
    pairs = set_pairs(KEYS, release_image(rel.values, KEYS), wanted(KEYS, image))
    desc = deploy_description("main", sha)
    back = rollback_description("main", sha, 1, "bench")
    return {
        "read (history, values, manifest)": step(audit, runs, lambda: cli.read(NS, "web")),
        "plan: upgrade --dry-run=server": step(
            audit, runs, lambda: cli.upgrade(NS, "web", pairs, description=desc, dry_run=True)
        ),
        "deploy: upgrade": step(
            audit, runs, lambda: cli.upgrade(NS, "web", pairs, description=desc)
        ),
        "rollback": step(audit, runs, lambda: cli.rollback(NS, "web", 1, description=back)),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    helm = find_helm()
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalCluster(
            bin_dir=find_binaries(),
            cluster_bin_dir=find_cluster_binaries(),
            audit_log=Path(tmp) / "audit.log",
        ) as cluster,
    ):
        audit = Path(tmp) / "audit.log"
        person = Helm(helm, home=Path(tmp) / "person", kubeconfig=cluster.kubeconfig_path)
        person.ok("install", "web", CHART, "-n", NS, "--create-namespace")
        (Path(tmp) / "rec").mkdir()
        cli = HelmCLI(helm, home=Path(tmp) / "rec", kubeconfig=cluster.kubeconfig_path)
        runs = Runs(cli)
        rows: dict[str, list[Step]] = {}
        for i in range(args.runs):
            for name, measured in one_deploy(cli, audit, runs, f"{i:07x}" + "0" * 33).items():
                rows.setdefault(name, []).append(measured)
        print(f"helm {helm}, {args.runs} runs, median wall time; API requests of the last run")
        for name, got in rows.items():
            wall = statistics.median(t for t, _, _ in got)
            _, helm_runs, verbs = got[-1]
            total = sum(verbs.values())
            detail = ", ".join(f"{v} {k}" for k, v in sorted(verbs.items()))
            print(f"{name:34} {wall:6.2f} s  {helm_runs} helm runs  {total:3} requests ({detail})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
