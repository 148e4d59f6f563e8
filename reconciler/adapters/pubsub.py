"""The Pub/Sub trigger: messages on a subscription become sync requests.

One trigger per subscription: Cloud Scheduler jobs (reconciler.core.triggers.jobs), Cloud
Build and Artifact Registry notifications (reconciler.core.triggers.cloud_events); ``classify``
turns a message into a Hint. The only module that talks to ``google.cloud.pubsub_v1`` (ruff's
TID251 bans it elsewhere).

Delivery semantics (Pub/Sub is at-least-once; a sync is idempotent, so a repeat costs one run):

- a malformed message is logged with its message id and ACKed: it can never succeed, and
  redelivering it would only block the subscription; a message that asks for no sync
  (an unrelated build or image, a deleted image) is logged and ACKed too;
- one that asks for a sync is submitted as ``SyncRequest(sites=..., trigger=...)`` and ACKed
  only when the returned future completes with a report (whatever the per-site outcome); if
  the future fails (runner.ShuttingDown, or the run itself broke) the message is NACKed and
  redelivered;
- ``stop()`` NACKs every message not yet acked, so another replica (or the next pod) gets it at
  once instead of after the ack deadline;
- when the streaming pull dies (subscription not found, permission denied, ...) the error is
  recorded in ``last_error``, logged, and the pull is reopened with capped exponential backoff:
  the process never crash-loops over Pub/Sub. Messages in flight on a stream that died are
  forgotten; Pub/Sub redelivers them when their ack deadline lapses.

``PUBSUB_EMULATOR_HOST`` needs no handling here: ``pubsub_v1.SubscriberClient()`` itself then
connects to that host over an insecure channel with anonymous credentials (google-cloud-pubsub
2.x, ``subscriber/client.py``); it is only logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from google.cloud import pubsub_v1

from reconciler.core.errors import PubSubError
from reconciler.core.model import SyncReport, SyncRequest
from reconciler.core.triggers.hints import Hint, Outcome
from reconciler.settings import SUBSCRIPTION
from reconciler.sync.runner import ShuttingDown

__all__ = ["TRIGGER", "PubSubTrigger"]

log = logging.getLogger(__name__)

TRIGGER = "pubsub"

# A sync can run longer than the subscription's ack deadline (10-600 s). The client library's
# leaser keeps extending the lease of every message it holds (modifyAckDeadline) until it is
# acked or nacked, but for at most max_lease_duration; past that Pub/Sub redelivers it. One hour
# is far above any sync we expect and bounds how long a wedged run can hold a message.
MAX_LEASE_DURATION = 3600.0
# A reopened stream that has stayed up this long counts as healthy again: last_error is cleared
# and the backoff starts over.
HEALTHY_AFTER = 10.0
_NACK_BATCH = 1000  # ack ids per ModifyAckDeadline request (the API takes up to 2500)


@dataclass(slots=True)
class _InFlight:
    message: Any  # pubsub_v1.subscriber.message.Message
    stream: int  # which streaming pull delivered it (see _forget)
    sites: frozenset[str] | None


class PubSubTrigger:
    """Streaming pull on one subscription; every message that asks for a sync becomes a
    ``submit(SyncRequest)``.

    ``submit`` is ``Runner.submit``; ``classify`` reads a message (data, attributes) into a
    Hint against the current config (called for every message, so a reloaded config takes
    effect at once); ``trigger`` names the requests it submits.
    ``subscriber_client_factory`` makes the ``pubsub_v1.SubscriberClient`` (tests inject one;
    the default honours ``PUBSUB_EMULATOR_HOST`` and Application Default Credentials).
    """

    def __init__(
        self,
        subscription: str,
        submit: Callable[[SyncRequest], Future[SyncReport]],
        classify: Callable[[bytes, Mapping[str, str]], Hint],
        *,
        trigger: str = TRIGGER,
        subscriber_client_factory: Callable[[], Any] | None = None,
        max_messages: int = 10,
        retry_initial: float = 1.0,
        retry_max: float = 60.0,
        emulator_host: str | None = None,
    ) -> None:
        if not SUBSCRIPTION.fullmatch(subscription or ""):
            raise PubSubError(
                f"invalid Pub/Sub subscription {subscription!r}: expected the full name "
                "projects/PROJECT/subscriptions/SUBSCRIPTION"
            )
        if max_messages < 1:
            raise PubSubError(f"max_messages must be at least 1, not {max_messages}")
        if not 0 < retry_initial <= retry_max:
            raise PubSubError("need 0 < retry_initial <= retry_max")
        self.subscription = subscription
        self._submit = submit
        self._classify = classify
        self.trigger = trigger
        self._client_factory = subscriber_client_factory or pubsub_v1.SubscriberClient
        self._max_messages = max_messages
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._emulator_host = emulator_host  # only logged: the client library reads it itself

        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._client: Any = None
        self._thread: threading.Thread | None = None
        self._stream: Any = None  # the current StreamingPullFuture
        self._generation = 0
        self._in_flight: dict[str, _InFlight] = {}  # by ack id: received, not yet acked/nacked
        self._swept = False  # stop() has nacked what was in flight
        self._received = 0
        self._last_error: str | None = None

    # ---------------------------------------------------------------------------------------
    # Public surface

    @property
    def running(self) -> bool:
        """True from start() until stop(), including while the pull is backing off."""
        t = self._thread
        return t is not None and t.is_alive() and not self._stopping.is_set()

    @property
    def last_error(self) -> str | None:
        """Why the streaming pull last died; cleared once a reopened pull has stayed up."""
        return self._last_error

    @property
    def received(self) -> int:
        """Messages delivered to us so far (valid or not, redeliveries included)."""
        return self._received

    @property
    def in_flight(self) -> int:
        """Valid messages received and not yet acked or nacked (their syncs are pending)."""
        with self._lock:
            return len(self._in_flight)

    def start(self) -> None:
        """Create the subscriber client and start pulling in a background thread."""
        with self._lock:
            if self._stopping.is_set():
                raise PubSubError("this Pub/Sub trigger was stopped; make a new one")
            if self._thread is not None:
                return
            try:
                self._client = self._client_factory()
            except Exception as exc:  # e.g. no Application Default Credentials
                raise PubSubError(f"cannot create the Pub/Sub subscriber client: {exc}") from exc
            self._thread = threading.Thread(target=self._supervise, name="pubsub", daemon=True)
            self._thread.start()
        emulator = self._emulator_host
        log.info(
            "pubsub: pulling %s%s",
            self.subscription,
            f" (emulator at {emulator})" if emulator else "",
            extra={
                "event": "pubsub.start",
                "subscription": self.subscription,
                "emulator_host": emulator or None,
                "max_messages": self._max_messages,
            },
        )

    def stop(self, timeout: float) -> None:
        """Stop pulling, NACK every message not yet acked, close the client; within ``timeout``.

        Futures still pending stay with the runner; when they complete, nothing more is sent
        for their (already nacked) messages.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            already = self._stopping.is_set()
            self._stopping.set()
            stream = self._stream
            thread = self._thread
        if already:
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
            return
        # 1. Cancel the pull first, so nothing we nack can be redelivered to this very stream
        #    (a message sent to a stream that is closing is lost to its ack deadline). The
        #    library's shutdown nacks the messages it had not handed to us yet; callbacks
        #    running meanwhile only record theirs for step 2.
        if stream is not None:
            stream.cancel()  # non-blocking: the shutdown runs on a library thread
        if thread is not None:
            # The supervisor returns once stream.result() does: after the whole shutdown
            # (consumer, scheduler incl. running callbacks, leaser, dispatcher).
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning(
                    "pubsub: the streaming pull did not shut down within %.1fs",
                    timeout,
                    extra={"event": "pubsub.stop_timeout", "subscription": self.subscription},
                )
        # 2. NACK what we still hold. The stream's dispatcher is gone (message.nack() would only
        #    queue into it), so this is one unary ModifyAckDeadline(0) on the still-open client;
        #    the leaser has stopped, so no lease extension can undo it.
        with self._lock:
            in_flight = list(self._in_flight.values())
            self._in_flight.clear()
            self._swept = True
        nacked = self._nack_now([e.message.ack_id for e in in_flight], deadline)
        client = self._client
        if client is not None:
            try:
                client.close()
            except Exception as exc:  # closing twice or a broken channel: nothing left to do
                log.debug("pubsub: closing the subscriber client: %s", exc)
        log.info(
            "pubsub: stopped (%d unacked message%s nacked)",
            nacked,
            "" if nacked == 1 else "s",
            extra={
                "event": "pubsub.stop",
                "subscription": self.subscription,
                "nacked": nacked,
                "received": self._received,
            },
        )

    def _nack_now(self, ack_ids: list[str], deadline: float) -> int:
        """Unary nack (ack deadline 0) of ``ack_ids``; how many went through."""
        done = 0
        for i in range(0, len(ack_ids), _NACK_BATCH):
            batch = ack_ids[i : i + _NACK_BATCH]
            try:
                self._client.modify_ack_deadline(
                    request={
                        "subscription": self.subscription,
                        "ack_ids": batch,
                        "ack_deadline_seconds": 0,
                    },
                    timeout=max(0.5, deadline - time.monotonic()),
                )
            except Exception as exc:  # they come back when their ack deadline lapses
                log.warning(
                    "pubsub: could not nack %d message(s) on stop: %s",
                    len(batch),
                    _describe(exc),
                    extra={
                        "event": "pubsub.nack_failed",
                        "subscription": self.subscription,
                        "error": _describe(exc),
                    },
                )
            else:
                done += len(batch)
        return done

    # ---------------------------------------------------------------------------------------
    # The streaming pull and its restarts

    def _supervise(self) -> None:
        delay = self._retry_initial
        while not self._stopping.is_set():
            try:
                error, healthy = self._pull_once()
            except Exception as exc:  # a library bug must not kill the thread silently
                error, healthy = _describe(exc), False
            if error is None:  # stop() cancelled the pull
                return
            if healthy:  # it had been up a while: this is a new outage, start the backoff over
                delay = self._retry_initial
            self._last_error = error
            log.error(
                "pubsub: streaming pull of %s failed: %s; retrying in %.0fs",
                self.subscription,
                error,
                delay,
                extra={
                    "event": "pubsub.stream_error",
                    "subscription": self.subscription,
                    "error": error,
                    "retry_in_s": delay,
                },
            )
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, self._retry_max)

    def _pull_once(self) -> tuple[str | None, bool]:
        """Run one streaming pull until it ends.

        Returns (None, _) if stop() ended it, else (why it died, whether it had been healthy:
        up for HEALTHY_AFTER seconds or delivered a message).
        """
        flow = pubsub_v1.types.FlowControl(
            max_messages=self._max_messages,
            # Leases are extended automatically up to this long (see MAX_LEASE_DURATION).
            max_lease_duration=MAX_LEASE_DURATION,
        )
        with self._lock:
            if self._stopping.is_set():
                return None, False
            self._generation += 1
            generation = self._generation
            received_before = self._received
            stream = self._client.subscribe(
                self.subscription,
                callback=lambda message: self._on_message(message, generation),
                flow_control=flow,
                # Our callback never blocks (submit only queues), so waiting for running
                # callbacks is quick, and afterwards none can still be receiving a message.
                await_callbacks_on_shutdown=True,
            )
            self._stream = stream
        healthy = False
        error: str | None
        try:
            try:
                stream.result(timeout=HEALTHY_AFTER)
            except TimeoutError:  # still up after a while: healthy
                healthy = True
                if self._last_error is not None:
                    log.info(
                        "pubsub: streaming pull of %s is up again",
                        self.subscription,
                        extra={"event": "pubsub.stream_ok", "subscription": self.subscription},
                    )
                self._last_error = None
                stream.result()
        except Exception as exc:
            error = _describe(exc)
        else:
            error = "the streaming pull ended without an error"
        if self._stopping.is_set():
            return None, healthy
        self._forget(generation)
        return error, healthy or self._received > received_before

    def _forget(self, generation: int) -> None:
        """The stream ``generation`` died: its ack ids are void; Pub/Sub will redeliver."""
        with self._lock:
            lost = [k for k, e in self._in_flight.items() if e.stream == generation]
            for k in lost:
                del self._in_flight[k]
        if lost:
            log.warning(
                "pubsub: %d message(s) in flight on the failed stream will be redelivered",
                len(lost),
                extra={"event": "pubsub.in_flight_lost", "count": len(lost)},
            )

    # ---------------------------------------------------------------------------------------
    # Messages

    def _on_message(self, message: Any, generation: int) -> None:
        """Library callback (scheduler thread): never raises, never blocks."""
        with self._lock:
            self._received += 1
        self._last_error = None  # the pull works
        message_id = message.message_id
        base: dict[str, object] = {"subscription": self.subscription, "message_id": message_id}
        if message.delivery_attempt is not None:
            base["delivery_attempt"] = message.delivery_attempt
        if self._stopping.is_set():
            self._track(message, generation, None)  # stop() nacks it
            return
        try:
            hint = self._classify(bytes(message.data), dict(message.attributes))
        except Exception as exc:  # the config could not be read: transient, let Pub/Sub retry
            log.exception(
                "pubsub: cannot handle message %s: %s",
                message_id,
                exc,
                extra={"event": "pubsub.error", **base, "error": _describe(exc)},
            )
            message.nack()
            return
        if not hint.syncs:
            malformed = hint.outcome is Outcome.MALFORMED
            log.log(
                logging.WARNING if malformed else logging.INFO,
                "pubsub: %s message %s: %s",
                "dropping malformed" if malformed else f"acking {hint.outcome.value}",
                message_id,
                hint.reason,
                extra={
                    "event": "pubsub.malformed" if malformed else f"pubsub.{hint.outcome.value}",
                    **base,
                    "reason": hint.reason,
                    "sites": sorted(hint.sites or ()),
                },
            )
            message.ack()
            return
        sites = hint.sites
        if self._track(message, generation, sites):  # stopping: stop() nacks it
            return
        shown = "all" if sites is None else sorted(sites)
        log.info(
            "pubsub: message %s asks to sync %s (%s)",
            message_id,
            "every site" if sites is None else ", ".join(sorted(sites)),
            hint.reason,
            extra={"event": "pubsub.message", **base, "sites": shown, "reason": hint.reason},
        )
        try:
            future = self._submit(SyncRequest(sites=sites, trigger=self.trigger))
        except Exception as exc:  # e.g. ShuttingDown: the runner takes no more requests
            self._settle(message.ack_id, None, exc)
            return
        future.add_done_callback(lambda f: self._settle(message.ack_id, f, None))

    def _track(self, message: Any, generation: int, sites: frozenset[str] | None) -> bool:
        """Hold ``message`` until it is settled; True if stopping (then stop() nacks it)."""
        with self._lock:
            if self._swept:  # stop() gave up waiting for the shutdown: best effort
                message.nack()
                return True
            self._in_flight[message.ack_id] = _InFlight(message, generation, sites)
            return self._stopping.is_set()

    def _settle(
        self, ack_id: str, future: Future[SyncReport] | None, error: Exception | None
    ) -> None:
        """Ack or nack once the sync is done (runs in the runner's thread, so only queues)."""
        with self._lock:
            entry = self._in_flight.pop(ack_id, None)
        if entry is None:  # stop() already nacked it, or its stream died
            return
        message = entry.message
        report: SyncReport | None = None
        if error is None and future is not None:
            if future.cancelled():
                error = ShuttingDown("the sync request was cancelled")
            else:
                exc = future.exception()
                if exc is None:
                    report = future.result()
                else:
                    error = exc if isinstance(exc, Exception) else RuntimeError(repr(exc))
        extra: dict[str, object] = {
            "subscription": self.subscription,
            "message_id": message.message_id,
        }
        if report is not None:
            message.ack()
            log.info(
                "pubsub: acked message %s after sync %s (%s)",
                message.message_id,
                report.run_id,
                report.summary(),
                extra={"event": "pubsub.ack", **extra, "run_id": report.run_id, "ok": report.ok},
            )
            return
        message.nack()
        level = logging.INFO if isinstance(error, ShuttingDown) else logging.WARNING
        log.log(
            level,
            "pubsub: nacked message %s for redelivery: %s",
            message.message_id,
            _describe(error) if error is not None else "no report",
            extra={"event": "pubsub.nack", **extra, "error": _describe(error) if error else None},
        )


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text else name
