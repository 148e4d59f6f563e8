"""Serve-mode figures: POST /sync/<site> trigger-to-patch latency, Pub/Sub publish-to-sync-start
latency, and the pod's idle resident memory, with a real API server, emulator and waitress.

    .venv/bin/python -m bench.serve_figures [--runs 20] [--latency-ms 200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from google.cloud import pubsub_v1  # noqa: E402

from testkit.controlplane import ControlPlane  # noqa: E402
from testkit.deployments import create_deployment, get_deployment  # noqa: E402
from testkit.github import GitHubStandIn, random_sha  # noqa: E402
from testkit.pubsub_emulator import PubSubEmulator  # noqa: E402
from testkit.serve_process import ServeProcess  # noqa: E402

TOKEN = "ghp_bench"
TRIGGER = "bench-trigger-token-of-at-least-32-bytes"
NS = "web"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def sync_events(proc: ServeProcess) -> list[dict[str, Any]]:
    return [e for e in proc.log_events() if e.get("event") == "sync"]


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "serve.json"))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="serve-figures-"))
    with (
        ControlPlane() as cp,
        GitHubStandIn(tokens=[TOKEN], validate=False, latency_median_ms=args.latency_ms) as gh,
        PubSubEmulator() as emulator,
    ):
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
        publisher = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(max_messages=1)
        )
        subscriber = pubsub_v1.SubscriberClient()
        topic = f"projects/{emulator.project}/topics/reconciler"
        subscription = f"projects/{emulator.project}/subscriptions/reconciler"
        publisher.create_topic(name=topic)
        subscriber.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=30)

        with cp.api_client() as api:
            from kubernetes import client as k8s

            k8s.CoreV1Api(api).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=NS)))
            for name in ("blog", "shop", "docs"):
                gh.add_repo(f"acme/{name}", {"main": random_sha()})
                create_deployment(api, NS, name, f"gcr.io/p/{name}:old")
            config = tmp / "sites.toml"
            config.write_text(
                f'[defaults]\nnamespace = "{NS}"\nimage = "gcr.io/p/{{repo}}:{{sha}}"\n'
                'verify = "none"\ncontainer = "app"\n\n'
                + "".join(f'[sites.{n}]\nrepo = "acme/{n}"\n\n' for n in ("blog", "shop", "docs"))
            )
            env = {
                "GITHUB_API_URL": gh.url,
                "GITHUB_TOKEN": TOKEN,
                "KUBECONFIG": str(cp.kubeconfig_path),
                "RECONCILER_TRIGGER_TOKEN": TRIGGER,
                "PUBSUB_SUBSCRIPTION": subscription,
                "PUBSUB_EMULATOR_HOST": emulator.host,
                "RECONCILER_LEASE": "off",
            }
            with ServeProcess(config, env, tmp / "serve.log") as proc:
                proc.wait_for(lambda: sync_events(proc), what="the startup sync")
                time.sleep(5)
                assert proc.proc is not None
                idle = {"process_kib": rss_kib(proc.proc.pid)}

                http: list[float] = []
                for _ in range(args.runs):
                    sha = gh.set_branch("acme/blog", "main", random_sha())
                    t0 = time.monotonic()
                    status, body = proc.request("POST", "/sync/blog", TRIGGER)
                    http.append(time.monotonic() - t0)
                    assert status == 200 and body["results"][0]["applied"], body
                    image = get_deployment(api, NS, "blog")["spec"]["template"]["spec"]
                    assert image["containers"][0]["image"].endswith(sha)

                start_lag: list[float] = []
                patch_lag: list[float] = []
                for _ in range(args.runs):
                    sha = gh.set_branch("acme/shop", "main", random_sha())
                    seen = len(sync_events(proc))
                    data = json.dumps({"job": "sync", "sites": ["shop"]}).encode()
                    publisher.publish(topic, data).result(timeout=30)
                    t_pub = time.time()
                    event = proc.wait_for(
                        lambda n=seen: len(sync_events(proc)) > n and sync_events(proc)[n],
                        what="the Pub/Sub sync",
                    )
                    done = epoch(event["time"])
                    start_lag.append(done - event["duration_s"] - t_pub)
                    patch_lag.append(done - t_pub)
                    assert event["trigger"] == "pubsub" and event["updated"] == 1, event
        publisher.stop()

    def summary(values: list[float]) -> dict[str, float]:
        return {
            "median_ms": round(statistics.median(values) * 1000, 1),
            "p95_ms": round(pct(values, 0.95) * 1000, 1),
            "max_ms": round(max(values) * 1000, 1),
        }

    result = {
        "github_latency_median_ms": args.latency_ms,
        "runs": args.runs,
        "pubsub_emulator": emulator.kind,
        "http_trigger_to_patch": summary(http),
        "pubsub_publish_to_sync_start": summary(start_lag),
        "pubsub_publish_to_patched": summary(patch_lag),
        "idle_rss_mib": {k.replace("_kib", ""): round(v / 1024, 1) for k, v in idle.items()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
