"""Pure: from a site's previous and new state, which notification (if any) to send. No I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from reconciler.core.annotations import NOTIFIED as NOTIFIED_ANNOTATION
from reconciler.core.model import Rollout, SiteResult, SiteState, Skip
from reconciler.core.notify.config import EventKind

__all__ = ["NOTIFIED_ANNOTATION", "Decision", "Memory", "Policy", "Snapshot", "decide", "snapshot"]
FLAP_WINDOW = 3600.0  # seconds: failures counted over this window
FLAP_THRESHOLD = 3  # this many new failures within the window: one summary, then quiet
RATE_LIMITED = "rate_limited"
WAITING = "approval"  # the detail of a site behind because it waits for an approval
APPROVED = "approved"  # ... of a deploy an approval let out
OVERRIDE = "override"  # ... of a deploy through a closed window


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one sync says about a site, reduced to what notifications care about."""

    status: SiteState
    head: str | None = None  # the branch head
    running: str | None = None  # the commit the Deployment runs
    detail: str = ""  # error kind for failing; who for held; the bad commit for rolled-back
    reason: str = ""
    held_at: str | None = None
    applied: bool = False  # this very run changed the image

    @property
    def key(self) -> tuple[str, str]:
        """Two snapshots with the same key are the same state: no new message."""
        if self.status is SiteState.BEHIND:
            waits = f"{WAITING}@" if self.detail == WAITING else ""
            return (self.status.value, f"{waits}{self.head or ''}")
        if self.status in (SiteState.IN_SYNC, SiteState.DEPLOYING):
            return (self.status.value, self.running or "")
        if self.status is SiteState.HELD and self.running:  # held on another commit: news too
            return (self.status.value, f"{self.detail}@{self.running}")
        return (self.status.value, self.detail)


@dataclass(frozen=True, slots=True)
class Memory:
    """What was last recorded about a site (kept on its Deployment as a JSON annotation)."""

    status: str
    key: str
    running: str | None
    since: float  # when the current state began
    sent: str = ""  # the event already sent for the current state
    changes: tuple[float, ...] = ()  # when it recently started failing, for flap detection
    flapping: bool = False

    def dumps(self) -> str:
        data = {
            "status": self.status,
            "key": self.key,
            "running": self.running,
            "since": self.since,
            "sent": self.sent,
            "changes": list(self.changes),
            "flapping": self.flapping,
        }
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    @classmethod
    def loads(cls, text: str | None) -> Memory | None:
        """The Memory in an annotation; None when absent or unreadable (treated as unknown)."""
        if not text:
            return None
        try:
            data: Any = json.loads(text)
            return cls(
                status=str(data["status"]),
                key=str(data["key"]),
                running=data.get("running"),
                since=float(data["since"]),
                sent=str(data.get("sent", "")),
                changes=tuple(float(c) for c in data.get("changes", ())),
                flapping=bool(data.get("flapping", False)),
            )
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True, slots=True)
class Decision:
    """The new memory of a site, and the event to send (None: stay quiet)."""

    memory: Memory
    event: EventKind | None = None
    old_sha: str | None = None  # the commit before the change, for "old → new"
    flaps: int = 0


@dataclass(frozen=True, slots=True)
class Policy:
    """How long a head may stay not ready, and what counts as flapping."""

    blocked_after: float = 1800.0
    flap_window: float = FLAP_WINDOW
    flap_threshold: int = FLAP_THRESHOLD


def snapshot(result: SiteResult) -> Snapshot:
    """The Snapshot of a sync result (dry runs and plans are never fed to decide())."""
    p = result.plan
    base = Snapshot(SiteState.BEHIND, head=p.sha, running=p.running_sha, reason=p.reason)
    state = p.state(applied=result.applied)
    if state is SiteState.HELD:
        return replace(base, status=SiteState.HELD, detail=p.held_by or "", held_at=p.held_at)
    if state is SiteState.ROLLED_BACK:
        return replace(base, status=SiteState.ROLLED_BACK, detail=p.failed_sha or p.sha or "")
    if state is SiteState.FAILING:
        return replace(base, status=SiteState.FAILING, detail=p.error_kind or "error")
    if result.applied:  # the rollout starts now: "deployed" once it is available (sync --wait
        # reports both in one result)
        done = p.rollout is Rollout.AVAILABLE
        status = SiteState.IN_SYNC if done else SiteState.DEPLOYING
        gated = OVERRIDE if p.note else APPROVED if p.approved_by else ""
        detail = gated if status is SiteState.DEPLOYING else ""
        return replace(base, status=status, running=p.sha, applied=True, detail=detail)
    if p.skip is Skip.APPROVAL:
        return replace(base, detail=WAITING)
    if state is SiteState.IN_SYNC:
        # a rollout the controller has not reported on (None) counts as done: nothing better
        # is known; a failed one becomes a rollback verdict on its own
        progressing = p.rollout is Rollout.PROGRESSING
        return replace(
            base, status=SiteState.DEPLOYING if progressing else SiteState.IN_SYNC, running=p.sha
        )
    if state is SiteState.PAUSED:
        return replace(base, status=SiteState.PAUSED)
    return base


_NOTABLE = {
    SiteState.FAILING: EventKind.FAILING,
    SiteState.HELD: EventKind.HELD,
    SiteState.ROLLED_BACK: EventKind.ROLLED_BACK,
}


def decide(prev: Memory | None, snap: Snapshot, now: float, policy: Policy) -> Decision:
    """One message per state change, "blocked" once a head stays not ready too long, and for a
    site that keeps failing one summary, then quiet until a whole window passes without a new
    failure (then one message saying where it ended)."""
    key = ":".join(snap.key)
    changed = prev is None or prev.key != key
    failed = changed and snap.status is SiteState.FAILING and snap.detail != RATE_LIMITED
    changes = tuple(c for c in (prev.changes if prev else ()) if now - c < policy.flap_window)
    if failed:
        changes = (*changes, now)[-policy.flap_threshold :]
    flapping = prev.flapping if prev else False
    settled = flapping and not changes
    if changed or prev is None:
        memory = Memory(
            status=snap.status.value,
            key=key,
            running=_last_good(prev, snap),
            since=now,
            changes=changes,
            flapping=flapping and not settled,
        )
    else:
        memory = replace(prev, changes=changes, flapping=flapping and not settled)
    old = prev.running if prev else None
    if memory.flapping:
        return Decision(memory)
    if failed and len(changes) >= policy.flap_threshold:
        flap = replace(memory, flapping=True, sent=EventKind.FLAPPING.value)
        return Decision(flap, EventKind.FLAPPING, old_sha=old, flaps=len(changes))
    if settled:
        event = _NOTABLE.get(snap.status)
        if snap.status is SiteState.IN_SYNC:
            event = EventKind.RECOVERED
        if event is None or snap.detail == RATE_LIMITED:
            return Decision(replace(memory, sent=""))
        return Decision(replace(memory, sent=event.value), event, old_sha=old)
    if not changed:
        return _same_state(memory, snap, now, policy)
    if snap.status is SiteState.FAILING and snap.detail == RATE_LIMITED:
        return Decision(memory)  # one global message, not one per site
    event = _event_for_change(prev, snap)
    if event is None:
        return Decision(memory)
    return Decision(replace(memory, sent=event.value), event, old_sha=old)


def _last_good(prev: Memory | None, snap: Snapshot) -> str | None:
    """The commit last seen running with its rollout done: "old" of the next "deployed"."""
    if snap.status is SiteState.IN_SYNC:
        return snap.running
    return prev.running if prev else None


def _event_for_change(prev: Memory | None, snap: Snapshot) -> EventKind | None:
    if snap.status in _NOTABLE:
        return _NOTABLE[snap.status]
    if snap.status is SiteState.DEPLOYING:
        if snap.detail == OVERRIDE:
            return EventKind.WINDOW_OVERRIDE
        if snap.detail == APPROVED:
            return EventKind.APPROVED
        return EventKind.DEPLOYING  # only GitHub Deployments (and who asks for it) take it
    if snap.status is SiteState.BEHIND and snap.detail == WAITING:
        return EventKind.WAITING
    if snap.status is SiteState.IN_SYNC:
        if prev is None:  # first sight (a new site, or nothing recorded)
            return EventKind.DEPLOYED if snap.applied else None
        if prev.status == SiteState.DEPLOYING.value or (
            prev.running is not None and prev.running != snap.running
        ):
            return EventKind.DEPLOYED
        if prev.sent in (EventKind.FAILING, EventKind.HELD, EventKind.ROLLED_BACK):
            return EventKind.RECOVERED
    return None


def _same_state(prev: Memory, snap: Snapshot, now: float, policy: Policy) -> Decision:
    if (
        snap.status is SiteState.BEHIND
        and snap.detail != WAITING  # a person is asked, not a build: never "blocked"
        and not prev.sent
        and now - prev.since >= policy.blocked_after
    ):
        blocked = replace(prev, sent=EventKind.BLOCKED.value)
        return Decision(blocked, EventKind.BLOCKED, old_sha=snap.running or prev.running)
    return Decision(prev)
