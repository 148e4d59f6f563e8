"""pytest fixtures for a real Pub/Sub emulator (testkit/pubsub_emulator.py).

Load with ``pytest_plugins = ["testkit.pubsub_fixtures"]`` in the top-level conftest (or
``-p testkit.pubsub_fixtures``).

- ``pubsub_emulator`` (session): one emulator for the session (the Cloud SDK's when installed,
  else the Go pstest fake; ``$RECONCILER_PUBSUB_EMULATOR=gcloud|pstest`` forces one). If none
  can be had: under CI (``$CI`` set and not "false"/"0"), or when a kind was forced, the test
  fails; otherwise it is skipped, saying how to enable it.
- ``pstest_emulator`` (session): pstest whatever the default is, for checks only pstest can
  make: the Cloud SDK emulator loses what a cancelled stream held, so a second subscriber cannot
  see whether a stopped subscriber nacked or acked. In CI it must start; elsewhere, without Go,
  it skips saying so.
- ``pubsub_topic`` (function): a fresh topic and subscription (ack deadline 10 s) on
  ``pubsub_emulator``, or on ``pstest_emulator`` for a test marked ``pstest``, with
  ``PUBSUB_EMULATOR_HOST`` set for the test (monkeypatch.setenv), so any
  ``pubsub_v1.SubscriberClient()`` / ``PublisherClient()`` made in the test talks to the
  emulator. Yields a PubSubTopic (names, a publisher, an admin subscriber client).

Every test using ``pubsub_emulator`` (directly or through ``pubsub_topic``) gets the ``pubsub``
marker, so ``-m "not pubsub"`` deselects them.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from google.cloud import pubsub_v1

from testkit.ci import unavailable
from testkit.pubsub_emulator import (
    PubSubEmulator,
    PubSubEmulatorError,
    PubSubEmulatorUnavailable,
)

ACK_DEADLINE_SECONDS = 10


_FIXTURES = frozenset({"pubsub_emulator", "pstest_emulator", "pubsub_topic"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.pubsub)


def _emulator(kind: str | None, how: str) -> Iterator[PubSubEmulator]:
    emulator = PubSubEmulator(kind)
    try:
        emulator.start()
    except PubSubEmulatorUnavailable as e:
        if e.forced and kind is None:  # a kind named by $RECONCILER_PUBSUB_EMULATOR
            pytest.fail(f"Pub/Sub emulator required but unavailable: {e}", pytrace=False)
        unavailable(f"no {kind or 'Pub/Sub'} emulator: {e}", how)
    except PubSubEmulatorError as e:
        pytest.fail(f"Pub/Sub emulator failed to start: {e}", pytrace=False)
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def pubsub_emulator() -> Iterator[PubSubEmulator]:
    yield from _emulator(
        None,
        "install the Cloud SDK's pubsub-emulator component (and Java), or Go >= 1.26 so "
        "tools/build-pstest.sh can build pstest",
    )


@pytest.fixture(scope="session")
def pstest_emulator(pubsub_emulator: PubSubEmulator) -> Iterator[PubSubEmulator]:
    if pubsub_emulator.kind == "pstest":
        yield pubsub_emulator
    else:
        yield from _emulator("pstest", "install Go >= 1.26 so tools/build-pstest.sh can build it")


@dataclass
class PubSubTopic:
    """A topic and a subscription on it, on the session's emulator."""

    emulator: PubSubEmulator
    project: str
    topic: str  # projects/P/topics/T
    subscription: str  # projects/P/subscriptions/S
    publisher: Any  # pubsub_v1.PublisherClient
    subscriber: Any  # pubsub_v1.SubscriberClient, for admin calls and test-side pulls

    def publish(self, data: bytes = b"", **attributes: str) -> str:
        """Publish one message and wait for the server to take it; its message id."""
        return str(self.publisher.publish(self.topic, data, **attributes).result(timeout=30))

    def subscription_path(self, name: str) -> str:
        return f"projects/{self.project}/subscriptions/{name}"


@pytest.fixture
def pubsub_topic(
    pubsub_emulator: PubSubEmulator, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[PubSubTopic]:
    if request.node.get_closest_marker("pstest") is not None:
        pubsub_emulator = request.getfixturevalue("pstest_emulator")
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    suffix = uuid.uuid4().hex[:8]
    project = pubsub_emulator.project
    topic = f"projects/{project}/topics/t-{base}-{suffix}"
    subscription = f"projects/{project}/subscriptions/s-{base}-{suffix}"
    # One message per batch: publish() goes out at once instead of after the batch latency.
    publisher = pubsub_v1.PublisherClient(
        batch_settings=pubsub_v1.types.BatchSettings(max_messages=1)
    )
    subscriber = pubsub_v1.SubscriberClient()
    publisher.create_topic(name=topic)
    subscriber.create_subscription(
        name=subscription, topic=topic, ack_deadline_seconds=ACK_DEADLINE_SECONDS
    )
    try:
        yield PubSubTopic(pubsub_emulator, project, topic, subscription, publisher, subscriber)
    finally:
        # Best effort: the session's emulator may already be gone.
        with contextlib.suppress(Exception):
            subscriber.delete_subscription(subscription=subscription, timeout=5)
        with contextlib.suppress(Exception):
            publisher.delete_topic(topic=topic, timeout=5)
        with contextlib.suppress(Exception):
            publisher.stop()
        with contextlib.suppress(Exception):
            publisher.transport.close()
        with contextlib.suppress(Exception):
            subscriber.close()
