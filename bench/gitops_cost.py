"""What one GitOps deploy costs end to end: `reconciler sync` of one git-delivered site.

The real CLI (GitHub heads, the plan, the git delivery's read, commit and record) against the
GitHub stand-in with a simulated latency per request (GitHub's median is about 200 ms) and a
real kube-apiserver whose audit log counts the Kubernetes requests. Per step: GitHub requests
by route, Kubernetes requests by verb, wall time. The GitOps tool's apply (kubectl set image)
happens between the steps and is not counted.

    .venv/bin/python -m bench.gitops_cost [--latency-ms 200] [--runs 5]
"""

from __future__ import annotations

import argparse
import collections
import io
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from reconciler.cli.main import main as cli
from testkit.controlplane import ControlPlane, find_binaries, find_cluster_binaries
from testkit.controlplane.audit import audit_verb_counts
from testkit.deployments import create_deployment
from testkit.github import GitHubStandIn, random_sha

TOKEN = "ghp_bench"
CONFIG, APP, PATH, NS = "acme/deploy", "acme/web", "apps/web/kustomization.yaml", "default"
FILE = "images:\n  - name: gcr.io/acme/web\n    newTag: before   # set by the reconciler\n"
SITES = f"""\
[sites.web]
repo = "{APP}"
branch = "main"
namespace = "{NS}"
container = "app"
image = "gcr.io/acme/web:{{sha}}"
verify = "none"

[sites.web.git]
repo = "{CONFIG}"
file = "{PATH}"
kustomize_image = "gcr.io/acme/web"
"""

Step = tuple[float, collections.Counter[str], collections.Counter[str]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency-ms", type=float, default=200.0, help="median per GitHub request")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    rows: dict[str, list[Step]] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        ControlPlane(bin_dir=find_binaries(), audit_log=Path(tmp) / "audit.log") as plane,
        GitHubStandIn(tokens=[TOKEN], latency_median_ms=args.latency_ms, seed=1) as gh,
    ):
        audit = Path(tmp) / "audit.log"
        sites = Path(tmp) / "sites.toml"
        sites.write_text(SITES)
        with plane.api_client() as api:
            create_deployment(api, NS, "web", "gcr.io/acme/web:before")
        gh.add_repo(APP)
        gh.add_repo(CONFIG)
        gh.commit_files(CONFIG, "main", {PATH: FILE}, "Add web")
        env = {"GITHUB_API_URL": gh.url, "GITHUB_TOKEN": TOKEN}
        env["KUBECONFIG"] = str(plane.kubeconfig_path)

        def sync() -> None:
            out, err = io.StringIO(), io.StringIO()
            argv = ["sync", "--config", str(sites), "--output", "json"]
            code = cli(argv, env=env, stdout=out, stderr=err)
            assert code == 0, (out.getvalue(), err.getvalue())

        def step(fn: Callable[[], None]) -> Step:
            routes, verbs = dict(gh.stats()["by_route"]), audit_verb_counts(audit)
            start = time.perf_counter()
            fn()
            took = time.perf_counter() - start
            after = collections.Counter(gh.stats()["by_route"]) - collections.Counter(routes)
            return took, after, audit_verb_counts(audit) - verbs

        for _ in range(args.runs):
            sha = random_sha()
            gh.set_branch(APP, "main", sha)
            rows.setdefault("deploy: plan, commit, record", []).append(step(sync))
            rows.setdefault("next sync: waiting for the tool", []).append(step(sync))
            apply = [
                str(find_cluster_binaries() / "kubectl"),
                "--kubeconfig",
                str(plane.kubeconfig_path),
                "-n",
                NS,
                "set",
            ]
            apply += ["image", "deployment/web", f"app=gcr.io/acme/web:{sha}"]
            subprocess.run(apply, check=True, capture_output=True)  # the GitOps tool
            rows.setdefault("applied: in sync", []).append(step(sync))
    print(f"median latency {args.latency_ms:.0f} ms per GitHub request, {args.runs} runs")
    print("median wall time; requests of the last run (GitHub by route, Kubernetes by verb)")
    for name, got in rows.items():
        wall = statistics.median(t for t, _, _ in got)
        _, routes, verbs = got[-1]
        github = ", ".join(f"{n} {r}" for r, n in sorted(routes.items()))
        kube = ", ".join(f"{n} {v}" for v, n in sorted(verbs.items()))
        print(f"{name:34} {wall:5.2f} s  GitHub {sum(routes.values())} ({github})")
        print(f"{'':34}          Kubernetes {sum(verbs.values())} ({kube})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
