"""Counting API-server requests per identity from the audit log, one window at a time.

The control plane writes every request at Metadata level, in blocking mode, with a
``RequestReceived`` event that is written before the request is handled. Our clients
authenticate with ServiceAccount bearer tokens (no impersonation), so the username is already
in that first event: counting ``RequestReceived`` events that appeared in the file during a
window counts every request of that window exactly once, and never a late stage of an older one.
"""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

READ_VERBS = frozenset({"get", "list", "watch"})
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


@dataclass
class KubeCounts:
    """Resource requests of one identity in one window, by (verb, resource)."""

    by_verb_resource: collections.Counter[tuple[str, str]] = field(
        default_factory=collections.Counter
    )
    # reads received after the sync had finished: serve following the rollouts it started
    follow_reads: int = 0

    @property
    def reads(self) -> int:
        return sum(n for (v, _), n in self.by_verb_resource.items() if v in READ_VERBS)

    @property
    def writes(self) -> int:
        return sum(n for (v, _), n in self.by_verb_resource.items() if v in WRITE_VERBS)

    @property
    def deployment_writes(self) -> int:
        """PATCH/PUT of Deployments: the changes that matter."""
        return sum(
            n
            for (v, r), n in self.by_verb_resource.items()
            if r == "deployments" and v in ("patch", "update")
        )

    @property
    def event_creates(self) -> int:
        return self.by_verb_resource.get(("create", "events"), 0)

    def as_dict(self) -> dict[str, object]:
        return {
            "reads": self.reads,
            "writes": self.writes,
            "deployment_writes": self.deployment_writes,
            "event_creates": self.event_creates,
            "follow_reads": self.follow_reads,
            "by_verb": {f"{v} {r}": n for (v, r), n in sorted(self.by_verb_resource.items())},
        }


class AuditWindow:
    """``mark()`` before a measured run, ``count(username)`` after it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._start = 0

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def mark(self) -> None:
        self._start = self._size()

    def count(self, username: str, sync_end: float | None = None) -> KubeCounts:
        """Resource requests by ``username`` received since mark() (only whole lines).

        Reads received after ``sync_end`` (Unix time; serve's report says when its sync ended)
        are not the sync's own: they are counted apart, as ``follow_reads``. Writes are the
        sync's whenever they come."""
        counts = KubeCounts()
        with self.path.open("rb") as f:
            f.seek(self._start)
            data = f.read()
        end = data.rfind(b"\n")
        for raw in data[: end + 1].splitlines():
            if not raw.strip():
                continue
            event = json.loads(raw)
            if event.get("stage") != "RequestReceived":
                continue
            user = (event.get("impersonatedUser") or event.get("user") or {}).get("username")
            ref = event.get("objectRef")
            if user != username or not ref:
                continue
            verb = str(event.get("verb"))
            if sync_end is not None and verb in READ_VERBS and _received(event) > sync_end:
                counts.follow_reads += 1
                continue
            counts.by_verb_resource[verb, str(ref.get("resource"))] += 1
        return counts


def _received(event: dict[str, object]) -> float:
    """When the API server received the request (Unix time; same host, same clock)."""
    stamp = str(event.get("requestReceivedTimestamp", "")).replace("Z", "+00:00")
    return datetime.fromisoformat(stamp).timestamp() if stamp else 0.0
