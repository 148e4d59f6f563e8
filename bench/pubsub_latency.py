"""Publish-to-submit latency of the Pub/Sub trigger, against a real local emulator.

For each of N messages (one at a time): publish a Cloud Scheduler job, wait for the publish to
be confirmed (``publisher.publish(...).result()``), then time until PubSubTrigger calls
``submit``. Prints median / p95 / max of that interval (and of publish-call-to-submit), and
checks every sync's message is acked.

    .venv/bin/python bench/pubsub_latency.py [-n 20] [--emulator gcloud|pstest]

The emulator is chosen as in the tests (testkit/pubsub_emulator.py): the Cloud SDK's
when installed, else pstest; ``--emulator`` (or $RECONCILER_PUBSUB_EMULATOR) forces one.
The publisher sends each message at once (BatchSettings(max_messages=1)), so no batching delay
is counted. A submit that happens before ``result()`` returns counts as a negative interval.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import uuid
from concurrent.futures import Future
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from google.cloud import pubsub_v1

from reconciler.adapters.pubsub import PubSubTrigger
from reconciler.core.model import SyncReport, SyncRequest
from reconciler.core.triggers.jobs import classify_job
from testkit.pubsub_emulator import PubSubEmulator


class Recorder:
    """submit(): stamps the time and completes the future at once (an instant sync)."""

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self.event = threading.Event()

    def submit(self, request: SyncRequest) -> Future[SyncReport]:
        self.stamps.append(time.perf_counter())
        self.event.set()
        future: Future[SyncReport] = Future()
        now = time.time()
        future.set_result(SyncReport("bench", request.trigger, False, False, now, now))
        return future


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def _ms(values: list[float]) -> str:
    return (
        f"median {statistics.median(values) * 1000:7.2f} ms   "
        f"p95 {_pct(values, 95) * 1000:7.2f} ms   max {max(values) * 1000:7.2f} ms"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20, help="messages to time (default 20)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed messages first (default 3)")
    ap.add_argument("--emulator", choices=("gcloud", "pstest"), default=None)
    args = ap.parse_args()

    with PubSubEmulator(args.emulator) as emu:
        os.environ["PUBSUB_EMULATOR_HOST"] = emu.host
        print(f"emulator: {emu.kind} at {emu.host} (up in {emu.startup_seconds:.1f}s)")
        project = emu.project
        name = f"latency-{uuid.uuid4().hex[:8]}"
        topic = f"projects/{project}/topics/{name}"
        subscription = f"projects/{project}/subscriptions/{name}"
        publisher = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(max_messages=1)
        )
        admin = pubsub_v1.SubscriberClient()
        publisher.create_topic(name=topic)
        admin.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=10)

        recorder = Recorder()
        trigger = PubSubTrigger(
            subscription,
            recorder.submit,
            lambda data, attributes: classify_job(data, attributes, ("blog", "shop")),
        )
        trigger.start()
        data = json.dumps({"job": "sync", "sites": ["blog"]}).encode()
        after_result: list[float] = []
        after_call: list[float] = []
        try:
            for i in range(args.warmup + args.n):
                recorder.event.clear()
                before = len(recorder.stamps)
                t_call = time.perf_counter()
                publisher.publish(topic, data).result(timeout=30)
                t_result = time.perf_counter()
                if not recorder.event.wait(30):
                    print(f"message {i}: no submit within 30s", file=sys.stderr)
                    return 1
                stamp = recorder.stamps[before]
                if i >= args.warmup:
                    after_result.append(stamp - t_result)
                    after_call.append(stamp - t_call)
            deadline = time.monotonic() + 10
            while trigger.in_flight and time.monotonic() < deadline:
                time.sleep(0.01)
            unsettled = trigger.in_flight
        finally:
            trigger.stop(5)
            publisher.stop()
            admin.close()

    print(f"{args.n} messages (after {args.warmup} warm-up), one at a time:")
    print(f"  publish().result() -> submit: {_ms(after_result)}")
    print(f"  publish() call     -> submit: {_ms(after_call)}")
    print(f"  redeliveries: {trigger.received - args.warmup - args.n}, unsettled: {unsettled}")
    return 0 if unsettled == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
