"""What one Helm deploy costs: helm runs, Kubernetes API requests and wall time, per step.

The real adapter (reconciler/adapters/helm.py) and the real helm on a LocalCluster whose API
server audits every request: the requests of each step are the audit log's new entries by
users other than the cluster's own components (helm's discovery requests included).

Then the same through the product (#21): `reconciler sync` of one Helm-delivered site, run as a
ServiceAccount with the shipped Roles (k8s/rbac, k8s/rbac-helm) so the audit log's requests of
that user are exactly the reconciler's and helm's, against the GitHub stand-in (its request
count): a deploy, a sync with nothing to do, a dry run, and a crash-looping commit followed and
rolled back (`sync --wait`).

    .venv/bin/python -m bench.helm_cost [--runs 5]
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from reconciler.adapters.helm import HelmCLI
from reconciler.cli.main import main as main_cli
from reconciler.core.helmrelease import (
    deploy_description,
    release_image,
    rollback_description,
    set_pairs,
    wanted,
)
from reconciler.core.writeback import HelmValues, ImageRef
from testkit.controlplane import (
    LocalCluster,
    crashloop_sha,
    find_binaries,
    find_cluster_binaries,
    find_helm,
    kubeconfig_for_token,
    serviceaccount_token,
)
from testkit.controlplane.audit import audit_verb_counts
from testkit.github import GitHubStandIn, random_sha
from testkit.helm import Helm

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "testkit" / "charts" / "web"
TOKEN = "ghp_bench"
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
        sync_costs(cluster, helm, audit, Path(tmp), args.runs)
    return 0


SA_NS = "bench-sync"


def _as_serviceaccount(cluster: LocalCluster, tmp: Path) -> Path:
    """A kubeconfig of ServiceAccount reconciler with Roles reconciler and reconciler-helm."""
    for role in ("rbac", "rbac-helm"):
        cluster.kubectl("apply", "-n", SA_NS, "-f", str(REPO / "k8s" / role / "role.yaml"))
    for role in ("reconciler", "reconciler-helm"):
        cluster.kubectl(
            "create", "rolebinding", role, "-n", SA_NS, f"--role={role}",
            f"--serviceaccount={SA_NS}:reconciler",
        )  # fmt: skip
    token = serviceaccount_token(cluster, SA_NS, "reconciler")
    return kubeconfig_for_token(cluster, token, tmp / "sa.kubeconfig")


def sync_costs(cluster: LocalCluster, helm: Path, audit: Path, tmp: Path, runs: int) -> None:
    """One Helm-delivered site through `reconciler sync`: each case's wall time, GitHub
    requests, helm runs and the ServiceAccount's API requests (median time, last run's counts),
    and what `helm history` shows at the end."""
    person = Helm(helm, home=tmp / "person-sync", kubeconfig=cluster.kubeconfig_path)
    person.ok("install", "web", CHART, "-n", SA_NS, "--create-namespace", "--set", "image.tag=v1")
    kubeconfig = _as_serviceaccount(cluster, tmp)
    user = f"system:serviceaccount:{SA_NS}:reconciler"
    sites = tmp / "sites.toml"
    sites.write_text(
        f'[sites.web]\nrepo = "acme/web"\nbranch = "main"\nnamespace = "{SA_NS}"\n'
        'image = "registry.example/web:{sha}"\nverify = "none"\nrollout_timeout = 1\n'
        '\n[sites.web.helm]\nrelease = "web"\n'
    )
    counted = {"helm": 0}
    inner = HelmCLI.run

    def run(self: HelmCLI, where: str, *argv: str, timeout: float | None = None) -> str:
        counted["helm"] += 1
        return inner(self, where, *argv, timeout=timeout)

    HelmCLI.run = run  # type: ignore[method-assign]
    rows: dict[str, list[tuple[float, int, int, collections.Counter[str]]]] = {}
    with GitHubStandIn(tokens=[TOKEN]) as gh:
        gh.add_repo("acme/web", {"main": random_sha()})
        env = {
            "GITHUB_API_URL": gh.url,
            "GITHUB_TOKEN": TOKEN,
            "KUBECONFIG": str(kubeconfig),
            "RECONCILER_HELM": str(helm),
        }

        def measure(name: str, *argv: str, head: str | None = None) -> None:
            if head is not None:
                gh.set_branch("acme/web", "main", head)
            time.sleep(1.0)  # the audit log's trailing stages of the case before
            verbs = audit_verb_counts(audit, username=user, resources_only=False)
            requests, runs_before = gh.stats()["requests"], counted["helm"]
            start = time.perf_counter()
            out, err = io.StringIO(), io.StringIO()
            main_cli(["sync", *argv, "--config", str(sites), "--output", "json"], env=env,
                     stdout=out, stderr=err)  # fmt: skip
            took = time.perf_counter() - start
            said = json.loads(out.getvalue() or "[{}]")[0]
            print(f"  {name}: {said.get('action')}, {said.get('reason')}{err.getvalue()}")
            time.sleep(1.0)
            after = audit_verb_counts(audit, username=user, resources_only=False)
            rows.setdefault(name, []).append(
                (took, gh.stats()["requests"] - requests, counted["helm"] - runs_before,
                 after - verbs)
            )  # fmt: skip

        for _ in range(runs):
            measure("sync: deploy a new commit", head=random_sha())
            measure("sync: in sync, nothing to do")
            measure("sync --dry-run: a new commit", "--dry-run", head=random_sha())
            measure("sync --wait: new commit until available", "--wait", head=random_sha())
            measure("sync --wait: crash loop, helm rollback", "--wait", head=crashloop_sha())
    HelmCLI.run = inner  # type: ignore[method-assign]
    print(f"\n`reconciler sync` of one Helm site as {user}, {runs} runs, median wall time")
    for name, got in rows.items():
        wall = statistics.median(t for t, _, _, _ in got)
        _, github, helm_runs, verbs = got[-1]
        total = sum(verbs.values())
        detail = ", ".join(f"{v} {k}" for k, v in sorted(verbs.items()))
        print(
            f"{name:42} {wall:6.2f} s  {github} GitHub  {helm_runs:2} helm runs  "
            f"{total:3} API requests ({detail})"
        )
    print("\n" + person.ok("history", "web", "-n", SA_NS, "--max", "6"))


if __name__ == "__main__":
    sys.exit(main())
