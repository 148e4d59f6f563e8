"""Background delivery of notifications: one worker, retries with backoff, never blocks a sync."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from reconciler.core.errors import DeliveryError, ReconcilerError
from reconciler.core.notify.config import Channel, ChannelKind
from reconciler.core.notify.render import Notification
from reconciler.core.ports import CommitLog, Sender

log = logging.getLogger(__name__)

BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)  # seconds before each retry; then it is undelivered
MAX_QUEUED = 1000
RECENT_FAILURES = 20


@dataclass(frozen=True, slots=True)
class Undelivered:
    """A message given up on, for the status page."""

    at: float
    channel: str
    event: str
    site: str | None
    error: str


@dataclass
class _Envelope:
    notification: Notification
    enriched: bool = False


@dataclass(order=True)
class _Job:
    due: float
    seq: int
    envelope: _Envelope = field(compare=False)
    channel: Channel = field(compare=False)
    attempt: int = field(default=0, compare=False)


class Outbox:
    """Queue of (notification, channel) deliveries worked off by one daemon thread."""

    def __init__(
        self,
        sender: Sender,
        commits: CommitLog | None = None,
        *,
        deployments: Sender | None = None,
        backoff: Sequence[float] = BACKOFF,
        on_result: Callable[[str, str, bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self.senders: dict[ChannelKind, Sender] = {kind: sender for kind in ChannelKind}
        self.senders.pop(ChannelKind.GITHUB_DEPLOYMENTS)
        if deployments is not None:
            self.senders[ChannelKind.GITHUB_DEPLOYMENTS] = deployments
        self.commits = commits
        self.backoff = tuple(backoff)
        self.on_result = on_result or (lambda channel, event, ok: None)
        self.clock = clock
        self.wall = wall
        self.max_queued = max_queued
        self.delivered = 0
        self.undelivered = 0
        self.failures: deque[Undelivered] = deque(maxlen=RECENT_FAILURES)
        self._jobs: list[_Job] = []
        self._busy = 0
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="notify", daemon=True)
        self._thread.start()

    def post(self, notification: Notification, channels: Sequence[Channel]) -> None:
        """Queue a notification for each channel; returns at once (full queue: counted lost)."""
        envelope = _Envelope(notification)
        with self._cond:
            for channel in channels:
                if self._closed or len(self._jobs) >= self.max_queued:
                    self._give_up(envelope, channel, "the notification queue is full or closed")
                    continue
                heapq.heappush(self._jobs, _Job(self.clock(), next(self._seq), envelope, channel))
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._jobs) + self._busy

    def flush(self, timeout: float) -> bool:
        """Wait until nothing is queued or in flight (retries included); False on timeout."""
        deadline = self.clock() + timeout
        with self._cond:
            while self._jobs or self._busy:
                left = deadline - self.clock()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is due within `timeout`, then count the rest as undelivered."""
        self.flush(timeout)
        with self._cond:
            self._closed = True
            left, self._jobs = self._jobs, []
            for job in left:
                self._give_up(job.envelope, job.channel, "the reconciler shut down first")
            self._cond.notify_all()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._jobs or self._jobs[0].due > self.clock()):
                    wait = self._jobs[0].due - self.clock() if self._jobs else None
                    self._cond.wait(wait)
                if self._closed:
                    return
                job = heapq.heappop(self._jobs)
                self._busy += 1
            try:
                self._deliver(job)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    def _deliver(self, job: _Job) -> None:
        envelope = job.envelope
        if not envelope.enriched:
            envelope.enriched = True
            envelope.notification = self._enrich(envelope.notification)
        n = envelope.notification
        sender = self.senders.get(job.channel.kind)
        try:
            if sender is None:
                raise DeliveryError(
                    "GitHub Deployments need a GitHub token or App with deployments: write",
                    retryable=False,
                )
            sender.send(job.channel, n)
        except DeliveryError as exc:
            if exc.retryable and job.attempt < len(self.backoff):
                delay = self.backoff[job.attempt]
                log.info(
                    "notification %s to %s failed (%s); retrying in %.0fs",
                    n.id,
                    job.channel.name,
                    exc,
                    delay,
                )
                with self._cond:
                    heapq.heappush(
                        self._jobs,
                        replace(
                            job,
                            due=self.clock() + delay,
                            seq=next(self._seq),
                            attempt=job.attempt + 1,
                        ),
                    )
                return
            with self._cond:
                self._give_up(envelope, job.channel, str(exc))
            return
        with self._cond:
            self.delivered += 1
        self.on_result(job.channel.name, n.event.value, True)

    def _enrich(self, n: Notification) -> Notification:
        """One compare request per notification for the commits in between (best effort)."""
        if self.commits is None or n.compare_url is None:
            return n
        assert n.repo and n.old_sha and n.new_sha
        try:
            return replace(n, comparison=self.commits.compare(n.repo, n.old_sha, n.new_sha))
        except ReconcilerError as exc:
            log.warning("could not list the commits of %s: %s", n.compare_url, exc)
            return n

    def _give_up(self, envelope: _Envelope, channel: Channel, error: str) -> None:
        """Count and remember an undelivered message (called holding the lock)."""
        n = envelope.notification
        self.undelivered += 1
        self.failures.append(Undelivered(self.wall(), channel.name, n.event.value, n.site, error))
        log.error(
            "notification %s (%s) to %s undelivered: %s",
            n.id,
            n.event.value,
            channel.name,
            error,
            extra={"event": "notify_undelivered", "channel": channel.name},
        )
        self.on_result(channel.name, n.event.value, False)
