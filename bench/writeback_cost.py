"""What one GitOps write-back deploy costs: GitHub requests and wall time, per mode and case.

The real adapter (reconciler/adapters/gitrepo.py) against the GitHub stand-in with a simulated
latency per request (GitHub's median is about 200 ms), so the time is requests x latency plus
the stand-in's own work.

    .venv/bin/python -m bench.writeback_cost [--latency-ms 200] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

from reconciler.adapters.gitrepo import GitRepoWriter
from reconciler.core.writeback import ImageRef, KustomizeImage, WriteRequest, WriteResult
from reconciler.settings import GitHubSettings
from testkit.github import GitHubStandIn

TOKEN = "ghp_bench"
PATH = "apps/web/kustomization.yaml"
FILE = "images:\n  - name: gcr.io/acme/web\n    newTag: {tag}   # set by the reconciler\n"


def request(tag: str, mode: str) -> WriteRequest:
    return WriteRequest(
        site="web",
        repo="acme/config",
        branch="main",
        path=PATH,
        target=KustomizeImage("gcr.io/acme/web"),
        image=ImageRef("gcr.io/acme/web", tag),
        source_repo="acme/web",
        new_sha=tag + "0" * (40 - len(tag)),
        mode="pr" if mode == "pr" else "commit",
    )


def measure(fn: Callable[[], WriteResult]) -> tuple[WriteResult, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency-ms", type=float, default=200.0, help="median per request")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    rows: dict[str, list[tuple[int, float]]] = {}
    with GitHubStandIn(tokens=[TOKEN], latency_median_ms=args.latency_ms, seed=1) as gh:
        writer = GitRepoWriter(GitHubSettings(api_url=gh.url, token=TOKEN))
        for run in range(args.runs):
            gh.add_repo("acme/config")
            gh.commit_files("acme/config", "main", {PATH: FILE.format(tag="a0")})
            tag = f"b{run}"
            cases = [
                ("commit: a new image", lambda t=tag: writer.write(request(t, "commit"))),
                ("commit: file already holds it", lambda t=tag: writer.write(request(t, "commit"))),
                ("pr: open", lambda t=tag: writer.write(request(t + "1", "pr"))),
                ("pr: already current", lambda t=tag: writer.write(request(t + "1", "pr"))),
                ("pr: newer image, update", lambda t=tag: writer.write(request(t + "2", "pr"))),
            ]
            for name, fn in cases:
                result, seconds = measure(fn)
                rows.setdefault(name, []).append((result.requests, seconds))
    print(f"median latency {args.latency_ms:.0f} ms per request, {args.runs} runs each")
    for name, values in rows.items():
        requests = sorted({r for r, _ in values})
        median = statistics.median(s for _, s in values)
        print(f"{name:32} requests {requests}  median {median * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
