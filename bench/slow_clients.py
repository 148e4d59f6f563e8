"""/healthz latency of `reconciler serve` while many clients hold half-sent requests.

For each count of stalled connections (each sent part of a request, then nothing: half stop
inside the headers, half inside a declared body), opens them, then times N sequential
`GET /healthz` on fresh connections and one authenticated `POST /sync/blog`, and prints p50 /
p99 / max of the healthz latency. Real API server, GitHub stand-in, the real serve process.

    .venv/bin/python -m bench.slow_clients [--held 0,200,500,900] [-n 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testkit.controlplane import ControlPlane  # noqa: E402
from testkit.deployments import create_deployment  # noqa: E402
from testkit.github import GitHubStandIn, random_sha  # noqa: E402
from testkit.serve_process import ServeProcess  # noqa: E402
from testkit.slow_clients import stalled_clients  # noqa: E402

TOKEN = "ghp_bench"
TRIGGER = "bench-trigger-token-of-at-least-32-bytes"
NS = "web"
HEADER = f"{'held':>5} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'trigger s':>9}"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def healthz_ms(url: str) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url + "/healthz", timeout=60) as r:
        r.read()
        assert r.status == 200
    return (time.perf_counter() - t0) * 1000


def measure(proc: ServeProcess, held: int, n: int) -> dict[str, Any]:
    with stalled_clients(proc.port, held) as conns:
        samples = [healthz_ms(proc.url) for _ in range(n)]
        t0 = time.perf_counter()
        status, body = proc.request("POST", "/sync/blog", TRIGGER, timeout=120)
        trigger_s = time.perf_counter() - t0
        assert status == 200 and body["ok"], body
        assert len(conns) == held
    return {
        "held": held,
        "requests": n,
        "healthz_p50_ms": round(pct(samples, 0.50), 2),
        "healthz_p99_ms": round(pct(samples, 0.99), 2),
        "healthz_max_ms": round(max(samples), 2),
        "trigger_s": round(trigger_s, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--held", default="0,200,500,900", help="stalled connection counts")
    parser.add_argument("-n", type=int, default=200, help="healthz requests per count")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="slow-clients-"))
    with ControlPlane() as cp, GitHubStandIn(tokens=[TOKEN], validate=False) as gh:
        with cp.api_client() as api:
            from kubernetes import client as k8s

            k8s.CoreV1Api(api).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=NS)))
            gh.add_repo("acme/blog", {"main": random_sha()})
            create_deployment(api, NS, "blog", "gcr.io/p/blog:old")
        config = tmp / "sites.toml"
        config.write_text(
            f'[defaults]\nnamespace = "{NS}"\nimage = "gcr.io/p/{{repo}}:{{sha}}"\n'
            'verify = "none"\ncontainer = "app"\n\n[sites.blog]\nrepo = "acme/blog"\n'
        )
        env = {
            "GITHUB_API_URL": gh.url,
            "GITHUB_TOKEN": TOKEN,
            "KUBECONFIG": str(cp.kubeconfig_path),
            "RECONCILER_TRIGGER_TOKEN": TRIGGER,
            "RECONCILER_LEASE": "off",
        }
        results = []
        with ServeProcess(config, env, tmp / "serve.log") as proc:
            proc.wait_for(lambda: proc.request("GET", "/status")[1]["last_sync"], what="startup")
            print(HEADER)
            for held in (int(h) for h in args.held.split(",")):
                gh.set_branch("acme/blog", "main", random_sha())
                r = measure(proc, held, args.n)
                results.append(r)
                print(
                    f"{r['held']:>5} {r['requests']:>5} {r['healthz_p50_ms']:>8} "
                    f"{r['healthz_p99_ms']:>8} {r['healthz_max_ms']:>8} {r['trigger_s']:>9}"
                )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
