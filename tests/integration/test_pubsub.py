"""PubSubTrigger against a real Pub/Sub emulator (testkit/pubsub_fixtures.py).

``submit`` is a FakeRunner: a small real class whose futures the test completes or fails, so
the ack/nack timing is observed end to end through the emulator. A second, independent
subscriber client (Observer) on the same subscription tells whether a message went back to
Pub/Sub (nacked or lease lost) or is gone for good (acked).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.cloud import pubsub_v1

from reconciler.adapters.pubsub import PubSubTrigger
from reconciler.core.errors import PubSubError
from reconciler.core.model import SyncReport, SyncRequest
from reconciler.core.triggers.hints import Hint
from reconciler.core.triggers.jobs import classify_job
from reconciler.serve.triggers.messages import pubsub_classifier
from reconciler.sync.runner import ShuttingDown
from testkit.pubsub_fixtures import ACK_DEADLINE_SECONDS, PubSubTopic
from testkit.wait import stays, wait_until
from tests.unit.test_service import service

# 60 s per test body; fixture setup (a first pstest build can take a minute) is not counted.
pytestmark = [pytest.mark.timeout(60, func_only=True)]

SITES = ("blog", "shop", "docs")


def _jobs(data: bytes, attributes: Mapping[str, str]) -> Hint:
    return classify_job(data, attributes, SITES)


def _report(run_id: str = "r1") -> SyncReport:
    now = time.time()
    return SyncReport(
        run_id=run_id,
        trigger="pubsub",
        dry_run=False,
        plan_only=False,
        started_at=now,
        finished_at=now,
    )


@dataclass
class Call:
    request: SyncRequest
    future: Future[SyncReport]
    at: float  # time.monotonic() when submit was called


class FakeRunner:
    """Stands in for Runner.submit: records each request and hands back a pending future."""

    def __init__(self, *, refuse: int = 0) -> None:
        self.calls: list[Call] = []
        self._refuse = refuse  # the first `refuse` submits raise ShuttingDown
        self._cond = threading.Condition()

    def submit(self, request: SyncRequest) -> Future[SyncReport]:
        with self._cond:
            if self._refuse:
                self._refuse -= 1
                self.calls.append(Call(request, Future(), time.monotonic()))
                self._cond.notify_all()
                raise ShuttingDown("the reconciler is shutting down")
            future: Future[SyncReport] = Future()
            future.set_running_or_notify_cancel()
            self.calls.append(Call(request, future, time.monotonic()))
            self._cond.notify_all()
            return future

    def wait_calls(self, n: int, timeout: float = 15.0) -> list[Call]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.calls) >= n, timeout):
                raise AssertionError(
                    f"expected {n} submit calls within {timeout}s, got {len(self.calls)}"
                )
            return list(self.calls)


class Observer:
    """A second subscriber on the same subscription: acks and records whatever it is given."""

    def __init__(self, subscription: str) -> None:
        self.received: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._client = pubsub_v1.SubscriberClient()
        self._stream = self._client.subscribe(subscription, callback=self._on_message)

    def _on_message(self, message: Any) -> None:
        with self._lock:
            self.received.append((message.message_id, bytes(message.data)))
        message.ack()

    def ids(self) -> list[str]:
        with self._lock:
            return [i for i, _ in self.received]

    def close(self) -> None:
        self._stream.cancel()
        self._stream.result(timeout=10)
        self._client.close()


@pytest.fixture
def observe(pubsub_topic: PubSubTopic) -> Iterator[Callable[[], Observer]]:
    made: list[Observer] = []

    def make() -> Observer:
        made.append(Observer(pubsub_topic.subscription))
        return made[-1]

    yield make
    for o in made:
        o.close()


@pytest.fixture
def make_trigger(pubsub_topic: PubSubTopic) -> Iterator[Callable[..., PubSubTrigger]]:
    made: list[PubSubTrigger] = []

    def make(runner: FakeRunner, subscription: str | None = None, **kw: Any) -> PubSubTrigger:
        trigger = PubSubTrigger(
            subscription or pubsub_topic.subscription, runner.submit, _jobs, **kw
        )
        made.append(trigger)
        trigger.start()
        return trigger

    yield make
    for t in made:
        t.stop(5)


# Tests marked `pstest` check with a second subscriber (Observer) that a stopped trigger left
# nothing unacked. They run on pstest: after a client cancels its streaming pull, the Cloud SDK
# emulator (0.8.20) keeps routing most of the subscription's messages (nacked ones and new ones)
# to that dead stream, where they vanish, so a second subscriber there sees too little to prove
# anything; pstest (and the real service) hand them out again.


def _job(**doc: object) -> bytes:
    return json.dumps(doc).encode()


# ---------------------------------------------------------------------------------------------


@pytest.mark.pstest
def test_valid_message_is_acked_only_after_the_sync_completes(
    pubsub_topic: PubSubTopic,
    make_trigger: Callable[..., PubSubTrigger],
    observe: Callable[[], Observer],
) -> None:
    runner = FakeRunner()
    trigger = make_trigger(runner)
    pubsub_topic.publish(_job(job="sync"))
    (call,) = runner.wait_calls(1)
    assert call.request == SyncRequest(sites=None, trigger="pubsub")
    assert trigger.in_flight == 1

    # While the sync runs - for longer than the subscription's ack deadline - the message stays
    # leased to us: it is not redelivered (we are the only subscriber, so it would come to us).
    stays(
        lambda: len(runner.calls) == 1 and trigger.received == 1 and trigger.in_flight == 1,
        ACK_DEADLINE_SECONDS + 2,
        "leased past the ack deadline: not redelivered",
    )
    assert len(runner.calls) == 1
    assert trigger.received == 1
    assert trigger.in_flight == 1

    call.future.set_result(_report())
    wait_until(lambda: trigger.in_flight == 0, "the message to be settled", 5)
    # Acked, not nacked: a nacked message would be back at once. The stream keeps flowing.
    pubsub_topic.publish(_job(job="sync", sites=["shop"]))
    second = runner.wait_calls(2)[1]
    assert second.request.sites == frozenset({"shop"})
    second.future.set_result(_report("r2"))
    wait_until(lambda: trigger.in_flight == 0, "the second message to be settled", 5)
    stays(lambda: len(runner.calls) == 2, 1, "acked: not redelivered")
    assert len(runner.calls) == 2
    assert trigger.received == 2

    # stop() nacks whatever is not acked yet, so had an ack not gone out, another
    # subscriber would get that message at once.
    trigger.stop(5)
    observer = observe()
    stays(lambda: observer.ids() == [], 3, "nothing left to redeliver")
    assert observer.ids() == []


@pytest.mark.parametrize(
    "failure",
    [ShuttingDown("the reconciler shut down before this sync ran"), RuntimeError("run broke")],
    ids=["shutting-down", "run-error"],
)
@pytest.mark.pstest
def test_failed_sync_nacks_the_message_for_redelivery(
    pubsub_topic: PubSubTopic,
    make_trigger: Callable[..., PubSubTrigger],
    observe: Callable[[], Observer],
    failure: Exception,
) -> None:
    runner = FakeRunner()
    trigger = make_trigger(runner)
    message_id = pubsub_topic.publish(_job(job="sync", sites=["shop"]))
    first = runner.wait_calls(1)[0]
    first.future.set_exception(failure)

    # Nacked, so redelivered at once (well before any ack deadline could lapse).
    second = runner.wait_calls(2, timeout=ACK_DEADLINE_SECONDS / 2)[1]
    assert second.request.sites == frozenset({"shop"})
    assert trigger.received == 2

    second.future.set_result(_report())
    wait_until(lambda: trigger.in_flight == 0, "the message to be settled", 5)
    stays(lambda: len(runner.calls) == 2, 1, "acked after the second sync: not redelivered")
    assert len(runner.calls) == 2, "acked after the second sync: not redelivered again"
    trigger.stop(5)
    observer = observe()
    stays(lambda: observer.ids() == [], 2, f"{message_id} acked after the second sync")
    assert observer.ids() == [], f"{message_id} should have been acked after the second sync"


def test_submit_refusing_nacks_the_message(
    pubsub_topic: PubSubTopic, make_trigger: Callable[..., PubSubTrigger]
) -> None:
    runner = FakeRunner(refuse=1)  # submit itself raises ShuttingDown the first time
    trigger = make_trigger(runner)
    pubsub_topic.publish(_job(job="sync"))
    calls = runner.wait_calls(2, timeout=ACK_DEADLINE_SECONDS / 2)
    calls[1].future.set_result(_report())
    wait_until(lambda: trigger.in_flight == 0, "the message to be settled", 5)


@pytest.mark.pstest
def test_malformed_messages_are_acked_logged_and_do_not_block(
    pubsub_topic: PubSubTopic,
    make_trigger: Callable[..., PubSubTrigger],
    observe: Callable[[], Observer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="reconciler.adapters.pubsub")
    runner = FakeRunner()
    trigger = make_trigger(runner, max_messages=1)  # one at a time: a stuck one would block
    bad = {
        pubsub_topic.publish(b"{not json"): "not JSON",
        pubsub_topic.publish(_job(job="deploy")): "unknown job 'deploy'",
        pubsub_topic.publish(_job(job="sync", sites=["blog", "nope"])): "unknown site: 'nope'",
    }
    pubsub_topic.publish(_job(job="sync", sites=["blog"]))

    # Pub/Sub does not keep order: the valid one may come first, and with max_messages=1 the
    # rest wait for it to be settled, so finish its sync at once.
    (call,) = runner.wait_calls(1)
    assert call.request.sites == frozenset({"blog"})
    call.future.set_result(_report())

    def warnings() -> dict[str, str]:
        return {
            str(r.__dict__.get("message_id")): r.getMessage()
            for r in caplog.records
            if r.levelno == logging.WARNING and r.__dict__.get("event") == "pubsub.malformed"
        }

    wait_until(lambda: len(warnings()) == 3, "three malformed-message warnings", 10)
    for message_id, reason in bad.items():
        assert message_id in warnings(), f"no warning names message {message_id}"
        assert message_id in warnings()[message_id]
        assert reason in warnings()[message_id]

    wait_until(lambda: trigger.in_flight == 0, "the valid message to be settled", 5)
    # Acked: none came back (a nacked one would be redelivered to us at once).
    stays(lambda: trigger.received == 4, 1, "acked: none came back")
    assert trigger.received == 4
    assert len(warnings()) == 3
    assert len(runner.calls) == 1
    trigger.stop(5)
    observer = observe()
    stays(lambda: observer.ids() == [], 2, "malformed messages acked, not redelivered")
    assert observer.ids() == [], "malformed messages must be acked, not redelivered"


@pytest.mark.parametrize(
    ("data", "attributes", "sites"),
    [
        (_job(job="sync", sites=["blog"]), {}, frozenset({"blog"})),
        (_job(job="sync"), {}, None),
        (b"", {"job": "sync"}, None),
        (b"", {"job": "sync", "sites": "blog,shop"}, frozenset({"blog", "shop"})),
    ],
    ids=["json-one-site", "json-all", "attribute-all", "attribute-sites"],
)
def test_job_forms_submit_the_right_sites(
    pubsub_topic: PubSubTopic,
    make_trigger: Callable[..., PubSubTrigger],
    data: bytes,
    attributes: dict[str, str],
    sites: frozenset[str] | None,
) -> None:
    runner = FakeRunner()
    make_trigger(runner)
    pubsub_topic.publish(data, **attributes)
    (call,) = runner.wait_calls(1)
    assert call.request == SyncRequest(sites=sites, trigger="pubsub")
    call.future.set_result(_report())


@pytest.mark.pstest
def test_stop_nacks_outstanding_messages_and_returns_promptly(
    pubsub_topic: PubSubTopic,
    make_trigger: Callable[..., PubSubTrigger],
    observe: Callable[[], Observer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="reconciler.adapters.pubsub")
    runner = FakeRunner()
    trigger = make_trigger(runner)
    ids = {pubsub_topic.publish(_job(job="sync", sites=[s])) for s in ("blog", "shop")}
    calls = runner.wait_calls(2)
    assert trigger.running
    assert trigger.in_flight == 2

    t0 = time.monotonic()
    trigger.stop(5)
    elapsed = time.monotonic() - t0
    assert elapsed < 5, f"stop took {elapsed:.1f}s"
    assert not trigger.running
    assert trigger.in_flight == 0
    (stopped,) = [r for r in caplog.records if r.__dict__.get("event") == "pubsub.stop"]
    assert stopped.__dict__["nacked"] == 2

    # Nacked, not merely abandoned: another subscriber gets both long before any ack
    # deadline (the stream's is 60 s) could lapse.
    observer = observe()
    wait_until(lambda: set(observer.ids()) == ids, "redelivery", ACK_DEADLINE_SECONDS / 2)

    # Syncs finishing after stop() send nothing more and break nothing.
    for c in calls:
        c.future.set_result(_report())
    assert len(runner.calls) == 2


def test_missing_subscription_records_the_error_and_keeps_retrying(
    pubsub_topic: PubSubTopic,
    make_trigger: Callable[..., PubSubTrigger],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="reconciler.adapters.pubsub")
    runner = FakeRunner()
    missing = pubsub_topic.subscription_path("does-not-exist")
    trigger = make_trigger(runner, missing, retry_initial=0.1, retry_max=0.4)
    wait_until(lambda: trigger.last_error is not None, "last_error", 10)
    assert "NotFound" in (trigger.last_error or "")
    # It keeps trying (with backoff) rather than giving up or crashing.
    wait_until(
        lambda: (
            sum(1 for r in caplog.records if r.__dict__.get("event") == "pubsub.stream_error") >= 3
        ),
        "three failed attempts",
        10,
    )
    assert trigger.running
    t0 = time.monotonic()
    trigger.stop(5)
    assert time.monotonic() - t0 < 5
    assert not trigger.running
    assert runner.calls == []


@pytest.mark.parametrize(
    "name",
    [
        "",
        "sub",
        "projects/p/topics/t",
        "projects/p/subscriptions/",
        "projects//subscriptions/s",
        "projects/p/subscriptions/s/extra",
    ],
)
def test_subscription_must_be_a_full_name(name: str) -> None:
    with pytest.raises(PubSubError, match="projects/PROJECT/subscriptions/SUBSCRIPTION"):
        PubSubTrigger(name, FakeRunner().submit, _jobs)


def test_client_factory_failure_is_a_pubsub_error() -> None:
    class NoCredentials(Exception):
        pass

    def factory() -> Any:
        raise NoCredentials("no Application Default Credentials")

    trigger = PubSubTrigger(
        "projects/p/subscriptions/s",
        FakeRunner().submit,
        _jobs,
        subscriber_client_factory=factory,
    )
    with pytest.raises(PubSubError, match="no Application Default Credentials") as info:
        trigger.start()
    assert isinstance(info.value.__cause__, NoCredentials)
    assert not trigger.running
    trigger.stop(1)  # harmless when nothing started


@pytest.mark.parametrize("kind", ["cloud-build", "gcr"])
def test_a_poison_message_is_acked_counted_and_logged_once_without_a_traceback(
    pubsub_topic: PubSubTopic,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    kind: str,
) -> None:
    """#23 item 14: JSON nested 1,000 deep made the classifier raise RecursionError; the message
    was nacked, logged with a traceback, and came back forever (1,393 errors from 11 messages
    in 15 s). The classifiers are those serve wires (pubsub_classifier over a Service)."""
    caplog.set_level(logging.INFO, logger="reconciler.adapters.pubsub")
    svc, _, _ = service(tmp_path)
    runner = FakeRunner()
    trigger = PubSubTrigger(
        pubsub_topic.subscription, runner.submit, pubsub_classifier(svc, kind), trigger=kind
    )
    trigger.start()
    try:
        poison = [pubsub_topic.publish(b"[" * n + b"]" * n) for n in (1000, 5000, 100_000)]

        def malformed() -> set[str]:
            return {
                str(r.__dict__.get("message_id"))
                for r in caplog.records
                if r.__dict__.get("event") == "pubsub.malformed"
            }

        wait_until(lambda: malformed() == set(poison), "a warning for each poison message", 15)
        stays(lambda: trigger.received == len(poison), 2, "acked: none came back")
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
        assert (
            len([r for r in caplog.records if r.__dict__.get("event") == "pubsub.malformed"]) == 3
        )
        counted = svc.metrics.events.labels("pubsub", kind, "malformed")._value.get()
        assert counted == len(poison) and runner.calls == []
    finally:
        trigger.stop(5)
        svc.shutdown(5)


def test_children_started_beside_a_busy_grpc_channel_reach_exec() -> None:
    """testkit starts its servers (serve, the control plane, the registry, the emulator) with a
    preexec_fn, that is with a real fork(). While a gRPC channel is busy in the test process
    (this module's clients, loaded by every pytest run), gRPC's fork support restarts its poller
    in the child, whose epoll fd the child then closes before exec: the child aborts with
    "epoll_wait: Bad file descriptor" (grpc/grpc#43055), about one start in ten. tests/conftest.py
    turns gRPC's fork support off before gRPC starts: the test process never forks to run gRPC."""
    import functools
    import os
    import subprocess
    from concurrent import futures

    import grpc  # type: ignore[import-untyped]

    from testkit.processes import die_with_parent

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    echo = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.Echo", {"Do": echo}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    call = channel.unary_unary("/t.Echo/Do")
    done = threading.Event()

    def busy() -> None:
        while not done.is_set():
            call(b"x")

    call(b"ready")
    caller = threading.Thread(target=busy, daemon=True)
    caller.start()
    aborted: list[str] = []
    try:
        for _ in range(200):
            child = subprocess.run(
                ["true"],
                stderr=subprocess.PIPE,
                preexec_fn=functools.partial(die_with_parent, os.getpid()),
                check=False,
            )
            if child.returncode != 0:
                aborted.append(f"{child.returncode}: {child.stderr.decode(errors='replace')}")
    finally:
        done.set()
        caller.join(10)
        channel.close()
        server.stop(None)
    assert aborted == []
