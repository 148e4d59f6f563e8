"""What the Lease costs the API server, as shipped (Lease on, 60 s, renewed every 15 s): the
requests on the Lease per sync, counted from the API server's audit log, and per hour.

    .venv/bin/python -m bench.lease_writes [--syncs 10]

Two kinds of sync through a real `reconciler serve` (waitress) on a real kube-apiserver: syncs
with nothing to change and syncs that deploy one site. A sync longer than 15 s adds one
renewal (a read and a write) per full 15 s; these syncs take well under a second, so that part
is computed, not measured.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testkit.controlplane import ControlPlane, audit_events  # noqa: E402
from testkit.deployments import create_deployment  # noqa: E402
from testkit.github import GitHubStandIn, random_sha  # noqa: E402
from testkit.serve_process import ServeProcess  # noqa: E402

TOKEN = "ghp_bench"
TRIGGER = "bench-trigger-token-of-at-least-32-bytes"
NS = "web"
SITES = ("blog", "shop", "docs")
LEASE_SECONDS = 60  # as shipped
RENEW_EVERY = LEASE_SECONDS / 4


def lease_requests(audit_log: Path) -> collections.Counter[str]:
    """Requests on Leases by verb, each counted once (audit stages merged by auditID)."""
    verbs: dict[str, str] = {}
    for event in audit_events(audit_log):
        ref = event.get("objectRef") or {}
        if ref.get("resource") == "leases" and ref.get("namespace") == NS:
            verbs[str(event.get("auditID"))] = str(event.get("verb"))
    return collections.Counter(verbs.values())


def writes(counts: collections.Counter[str]) -> int:
    return sum(n for verb, n in counts.items() if verb in ("create", "update", "patch", "delete"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--syncs", type=int, default=10, help="syncs of each short kind")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lease-writes-"))
    audit_log = tmp / "audit.log"
    with (
        ControlPlane(audit_log=audit_log) as cp,
        GitHubStandIn(tokens=[TOKEN], validate=False) as gh,
        cp.api_client() as api,
    ):
        from kubernetes import client as k8s

        k8s.CoreV1Api(api).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=NS)))
        for name in SITES:
            gh.add_repo(f"acme/{name}", {"main": random_sha()})
            create_deployment(api, NS, name, f"gcr.io/p/{name}:old")
        config = tmp / "sites.toml"
        config.write_text(
            f'[defaults]\nnamespace = "{NS}"\nimage = "gcr.io/p/{{repo}}:{{sha}}"\n'
            'verify = "none"\ncontainer = "app"\n\n[service]\nschedule = "0 0 1 1 *"\n\n'
            + "".join(f'[sites.{n}]\nrepo = "acme/{n}"\n\n' for n in SITES)
        )
        env = {
            "GITHUB_API_URL": gh.url,
            "GITHUB_TOKEN": TOKEN,
            "KUBECONFIG": str(cp.kubeconfig_path),
            "RECONCILER_TRIGGER_TOKEN": TRIGGER,
            "POD_NAMESPACE": NS,  # the Lease on, as the shipped manifests have it
            "POD_NAME": "reconciler-bench-0",
        }
        with ServeProcess(config, env, tmp / "serve.log") as proc:
            proc.wait_for(lambda: proc.request("GET", "/status")[1]["last_sync"], what="startup")

            def measure(kind: str, prepare: Any, n: int) -> dict[str, Any]:
                before = lease_requests(audit_log)
                durations = []
                for _ in range(n):
                    prepare()
                    status, body = proc.request("POST", "/sync", TRIGGER, timeout=300)
                    assert status == 200, body
                    durations.append(body["duration_s"])
                counts = lease_requests(audit_log) - before
                return {
                    "kind": kind,
                    "syncs": n,
                    "sync_s_max": max(durations),
                    "lease_requests": dict(sorted(counts.items())),
                    "lease_writes_per_sync": round(writes(counts) / n, 2),
                }

            rows = [
                measure("nothing to change", lambda: None, args.syncs),
                measure(
                    "one site deployed",
                    lambda: gh.set_branch("acme/blog", "main", random_sha()),
                    args.syncs,
                ),
            ]
    idle = rows[0]["lease_writes_per_sync"]
    result = {
        "lease_seconds": LEASE_SECONDS,
        "renew_every_s": RENEW_EVERY,
        "rows": rows,
        "lease_writes_per_hour": {
            "hourly schedule only": idle,
            "hourly schedule + 1 urgent trigger an hour": 2 * idle,
            "a 6-minute cron (*/6)": 10 * idle,
        },
        "formula": "writes per sync = 2 (take, release) + one renewal per full 15 s of sync",
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
