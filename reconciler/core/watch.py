"""The rules of a watch-fed cache (pure): backoff, what a watch event does, what a re-list changed,
which annotations are worth keeping (the WorkloadCache port a sync or a follower reads is in
core.ports).

The adapter (adapters/kubecache.py) owns the threads and the connections; everything it decides
is decided here, on plain values.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, TypeVar

from reconciler.core import annotations as ann
from reconciler.core.model import Container, FieldOwner, ObservedDeployment

T = TypeVar("T")

# The Deployment annotations anything in reconciler/ reads: ours, the change cause, and the
# revision the Deployment controller keeps (history). Everything else (kubectl's
# last-applied-configuration can be the whole manifest) is dropped from the cache.
REVISION = "deployment.kubernetes.io/revision"
KEPT_PREFIXES = (ann.PREFIX,)
KEPT_KEYS = frozenset({ann.CHANGE_CAUSE, REVISION})


class EventType(StrEnum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"
    BOOKMARK = "BOOKMARK"
    ERROR = "ERROR"


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays: doubling from `base` up to `cap` seconds, with equal jitter (half the
    step fixed, half drawn), so replicas that lost the API server together do not return together
    and no retry comes sooner than base/2."""

    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int, draw: float) -> float:
        """The wait before reconnect `attempt` (1, 2, ...); `draw` is uniform in [0, 1)."""
        step = min(self.cap, self.base * 2.0 ** max(0, min(attempt - 1, 32)))
        return step / 2 + step / 2 * draw


def watch_seconds(low: int, high: int, draw: float) -> int:
    """A watch's timeoutSeconds, spread over [low, high] so that namespaces' watches do not all
    end (and re-watch) at the same moment."""
    return low + int((high - low) * draw)


def ended_too_soon(heard: int, elapsed: float, seconds: int) -> bool:
    """A watch the server ended with nothing said in less than half its timeoutSeconds: something
    cuts watches at once (a proxy, an overloaded server), so the next one waits a backoff. An
    idle watch that runs its course hears nothing either (bookmarks are best effort) and is
    renewed at once."""
    return heard == 0 and elapsed < seconds / 2


def is_gone(event: Mapping[str, Any]) -> bool:
    """An ERROR event saying the resourceVersion we resumed from is too old (410 Gone, or the
    older 'Expired' reason): the only way back is a fresh LIST."""
    if event.get("type") != EventType.ERROR:
        return False
    status = event.get("object") or {}
    return status.get("code") == 410 or status.get("reason") in ("Expired", "Gone")


def event_version(event: Mapping[str, Any]) -> str:
    """The resourceVersion an event carries (a bookmark carries only that)."""
    return str(((event.get("object") or {}).get("metadata") or {}).get("resourceVersion") or "")


def event_name(event: Mapping[str, Any]) -> str:
    return str(((event.get("object") or {}).get("metadata") or {}).get("name") or "")


def relist_changes(old: Mapping[str, T], new: Mapping[str, T]) -> list[tuple[str, T | None]]:
    """What a re-list changed, as (name, value) pairs, None for a name that is gone: a follower
    hears of a deletion it missed while disconnected, as it would have from the watch."""
    changes: list[tuple[str, T | None]] = [(n, None) for n in sorted(old) if n not in new]
    changes += [(n, v) for n, v in sorted(new.items()) if old.get(n) != v]
    return changes


def kept_annotations(annotations: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in annotations.items() if k in KEPT_KEYS or k.startswith(KEPT_PREFIXES)}


def slim(d: ObservedDeployment) -> ObservedDeployment:
    """The observed Deployment with only the annotations the reconciler reads, its strings that
    many Deployments repeat (namespace, container names and images, field managers, keys) shared
    rather than held once per Deployment."""
    i = sys.intern
    return replace(
        d,
        namespace=i(d.namespace),
        containers=tuple(Container(i(c.name), i(c.image)) for c in d.containers),
        init_containers=tuple(Container(i(c.name), i(c.image)) for c in d.init_containers),
        annotations={i(k): v for k, v in kept_annotations(d.annotations).items()},
        image_owners={
            i(k): FieldOwner(i(o.manager), i(o.operation), o.time)
            for k, o in d.image_owners.items()
        },
        selector={i(k): v for k, v in d.selector.items()},
    )
