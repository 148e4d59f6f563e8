"""Event → patch sent: how long after a GitHub push webhook (or an Artifact Registry ``gcr``
message) the Deployment's PATCH reaches the API server, at N sites, next to polling.

For each event: move one random site's branch on the GitHub stand-in, take the wall clock,
send the signed ``push`` delivery to ``POST /hooks/github`` (or publish the ``INSERT`` of the
new tag on the emulator's ``gcr`` topic), then find that Deployment's PATCH in the API server's
audit log (``requestReceivedTimestamp``); the interval is the latency. Events go one at a time
(the next after the sync is idle). Polling every P seconds takes P/2 on average plus a sync.

    .venv/bin/python -m bench.event_latency [-n 1000] [--events 40] [--latency-ms 200]
                                            [--no-gcr] [--emulator gcloud|pstest]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import ServeProcess
from bench.setup import (
    CONTAINER,
    IDENTITIES,
    SA_NAMESPACE,
    TOKENS,
    TRIGGER_TOKEN,
    BenchSite,
    Options,
    World,
    log,
)
from testkit import webhooks
from testkit.controlplane import ControlPlane
from testkit.github import GitHubStandIn

SECRET = "bench-webhook-secret"
POLL_INTERVALS = (60, 120)


@dataclass
class Samples:
    """Latencies (s) of one kind of event, and what each event made the reconciler write."""

    kind: str
    latencies: list[float] = field(default_factory=list)
    patches: list[int] = field(default_factory=list)  # PATCHes of the moved Deployment per event
    other_patches: int = 0  # PATCHes of any other Deployment (must stay 0)
    deployed: int = 0  # events after which the Deployment ran the new head

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        return {
            "kind": self.kind,
            "events": len(lat),
            "p50_s": round(statistics.median(lat), 3) if lat else None,
            "p95_s": round(_pct(lat, 95), 3) if lat else None,
            "max_s": round(lat[-1], 3) if lat else None,
            "patches_per_event": sorted(set(self.patches)),
            "other_patches": self.other_patches,
            "deployed": self.deployed,
        }


def _pct(ordered: list[float], p: float) -> float:
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def _stamp(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Patches:
    """PATCHes of Deployments by one identity in the audit log, from a mark on."""

    def __init__(self, path: Path, user: str) -> None:
        self.path, self.user, self.start = path, user, 0

    def mark(self) -> None:
        self.start = self.path.stat().st_size if self.path.exists() else 0

    def since_mark(self) -> list[tuple[str, float]]:
        with self.path.open("rb") as f:
            f.seek(self.start)
            data = f.read()
        out = []
        for raw in data[: data.rfind(b"\n") + 1].splitlines():
            event = json.loads(raw)
            ref = event.get("objectRef") or {}
            if (
                event.get("stage") == "RequestReceived"
                and event.get("verb") == "patch"
                and ref.get("resource") == "deployments"
                and (event.get("user") or {}).get("username") == self.user
            ):
                out.append((str(ref.get("name")), _stamp(event["requestReceivedTimestamp"])))
        return out

    def wait_for(self, name: str, timeout: float = 60.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for who, at in self.since_mark():
                if who == name:
                    return at
            time.sleep(0.01)
        raise RuntimeError(f"no PATCH of {name} within {timeout}s")


def _idle(serve: ServeProcess, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        request = urllib.request.Request(
            serve.url + "/status", headers={"Authorization": f"Bearer {TRIGGER_TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            status: dict[str, Any] = json.loads(r.read())
        if not status["syncing"]:
            return status
        time.sleep(0.05)
    raise RuntimeError("the reconciler stayed busy")


def _push(serve: ServeProcess, site: BenchSite, new: str, old: str) -> None:
    status, body = webhooks.deliver(
        serve.url + "/hooks/github", "push", webhooks.push(site.repo, "main", new, old), SECRET
    )
    if status != 202 or body.get("sites") != [site.name]:
        raise RuntimeError(f"webhook answered {status}: {body}")


def measure(
    n: int,
    events: int,
    *,
    latency_ms: float = 200.0,
    emulator_host: str | None = None,
    project: str = "bench",
    workdir: Path | None = None,
    seed: int = 12,
) -> dict[str, Any]:
    """Run both scenarios at ``n`` sites (gcr only with ``emulator_host``); the report."""
    own = workdir is None
    workdir = workdir or Path(tempfile.mkdtemp(prefix="reconciler-events-"))
    rng = random.Random(seed)
    opts = Options(sizes=(n,), latency_ms=latency_ms, out=None, print_table=False)
    kinds = ["webhook"] + (["gcr"] if emulator_host else [])
    results = {k: Samples(k) for k in kinds}
    with (
        ControlPlane(audit_log=workdir / "audit.log") as cp,
        GitHubStandIn(
            latency_median_ms=latency_ms, max_concurrent=100, tokens=TOKENS.values()
        ) as gh,
    ):
        bench = World(cp, gh, workdir, opts)
        bench.setup_cluster()
        bench.grow_to(n)
        # Behind at start: the startup sync deploys every site, so the reconciler owns their
        # images (an image it never set would be a person's change, which it holds).
        bench.make_stale(bench.sites)
        config = bench.write_config(n)
        env = {**bench.env("serve"), "GITHUB_WEBHOOK_SECRET": SECRET}
        publisher = topic = None
        if emulator_host:
            from google.cloud import pubsub_v1

            os.environ["PUBSUB_EMULATOR_HOST"] = emulator_host
            name = f"gcr-{uuid.uuid4().hex[:8]}"
            topic = f"projects/{project}/topics/{name}"
            subscription = f"projects/{project}/subscriptions/{name}"
            publisher = pubsub_v1.PublisherClient(
                batch_settings=pubsub_v1.types.BatchSettings(max_messages=1)
            )
            publisher.create_topic(name=topic)
            admin = pubsub_v1.SubscriberClient()
            admin.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=60)
            admin.close()
            env.update(PUBSUB_EMULATOR_HOST=emulator_host, PUBSUB_GCR_SUBSCRIPTION=subscription)
        user = f"system:serviceaccount:{SA_NAMESPACE}:{IDENTITIES['serve']}"
        patches = Patches(workdir / "audit.log", user)
        with ServeProcess(config, env, workdir / "serve.log", TRIGGER_TOKEN) as serve:
            log(f"serving {n} sites; {events} events of each kind: {', '.join(kinds)}")
            for i in range(events * len(kinds)):
                kind = kinds[i % len(kinds)]
                site = bench.sites[rng.randrange(n)]
                old = bench.heads[site.index]
                bench.move([site])
                new = bench.heads[site.index]
                _idle(serve)
                patches.mark()
                t0 = time.time()
                if kind == "webhook":
                    _push(serve, site, new, old)
                else:
                    assert publisher is not None
                    doc = {"action": "INSERT", "tag": site.image(new), "digest": "x@sha256:0"}
                    publisher.publish(topic, json.dumps(doc).encode()).result(timeout=30)
                at = patches.wait_for(site.name)
                _idle(serve)
                sample = results[kind]
                sample.latencies.append(at - t0)
                seen = patches.since_mark()
                sample.patches.append(sum(1 for who, _ in seen if who == site.name))
                sample.other_patches += sum(1 for who, _ in seen if who != site.name)
                live: Any = bench.apps.read_namespaced_deployment(site.name, site.namespace)
                images = {c.name: c.image for c in live.spec.template.spec.containers}
                sample.deployed += images.get(CONTAINER) == site.image(new)
        if publisher is not None:
            publisher.stop()
    if own:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "n": n,
        "github_latency_median_ms": latency_ms,
        "results": [s.summary() for s in results.values()],
        "polling_mean_s": {f"{p}s": p / 2 for p in POLL_INTERVALS},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1000, help="sites (default 1000)")
    ap.add_argument("--events", type=int, default=40, help="events of each kind (default 40)")
    ap.add_argument("--latency-ms", type=float, default=200.0)
    ap.add_argument("--no-gcr", action="store_true", help="webhooks only (no emulator)")
    ap.add_argument("--emulator", choices=("gcloud", "pstest"), default=None)
    args = ap.parse_args()
    if args.no_gcr:
        report = measure(args.n, args.events, latency_ms=args.latency_ms)
    else:
        from testkit.pubsub_emulator import PubSubEmulator

        with PubSubEmulator(args.emulator) as emu:
            report = measure(
                args.n,
                args.events,
                latency_ms=args.latency_ms,
                emulator_host=emu.host,
                project=emu.project,
            )
    print(f"N = {report['n']} sites, GitHub stand-in at {args.latency_ms:.0f} ms median")
    print(f"{'trigger':<24} {'p50':>8} {'p95':>8} {'max':>8}   events")
    for r in report["results"]:
        label = {"webhook": "GitHub push webhook", "gcr": "gcr INSERT (Pub/Sub)"}[r["kind"]]
        print(
            f"{label:<24} {r['p50_s']:>7.2f}s {r['p95_s']:>7.2f}s {r['max_s']:>7.2f}s   "
            f"{r['events']} (patches per event {r['patches_per_event']}, "
            f"others {r['other_patches']}, deployed {r['deployed']})"
        )
    for p in POLL_INTERVALS:
        print(
            f"{f'polling every {p} s':<24} {p / 2:>7.0f}s {p * 0.95:>7.0f}s {p:>7.0f}s   (+ a sync)"
        )
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
