"""After each real sync: decide per site what to tell people, remember it, queue the messages."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping

from reconciler.core.config.sites import Config
from reconciler.core.errors import ReconcilerError
from reconciler.core.model import (
    Action,
    Rollout,
    Site,
    SitePlan,
    SiteResult,
    SiteState,
    SyncReport,
)
from reconciler.core.notify.config import EventKind
from reconciler.core.notify.decide import (
    NOTIFIED_ANNOTATION,
    RATE_LIMITED,
    Decision,
    Memory,
    Policy,
    Snapshot,
    decide,
    snapshot,
)
from reconciler.core.notify.render import Notification
from reconciler.core.plan.running import commit_of_image
from reconciler.core.ports import NoteStore
from reconciler.core.windows import WINDOW_OVERRIDE_BY
from reconciler.sync.outbox import Outbox

log = logging.getLogger(__name__)


class Notifier:
    """Turns sync reports into notifications: one per state change, remembered on the Deployment
    (annotation reconciler.dev/notified) so restarts and other replicas do not repeat it."""

    def __init__(
        self,
        outbox: Outbox,
        store: NoteStore | None = None,
        *,
        web_url: str = "https://github.com",
        clock: Callable[[], float] = time.time,
        store_for: Callable[[Site], NoteStore | None] | None = None,
    ) -> None:
        self.outbox = outbox
        self.store = store
        # the store of a site's own cluster (sites in other clusters); default: `store`
        self.store_for = store_for
        self.web_url = web_url.rstrip("/")
        self.clock = clock
        self._memory: dict[str, Memory] = {}  # fallback when the annotation cannot be written
        self._rate_limited = False
        self._lock = threading.Lock()

    def observe(self, config: Config, report: SyncReport) -> list[Notification]:
        """Decide for every site of a real (not dry-run, not plan-only) report; never raises."""
        if report.dry_run or report.plan_only:
            return []
        sent: list[Notification] = []
        with self._lock:
            for result in report.results:
                try:
                    n = self._site(config, result)
                except ReconcilerError as exc:  # never let notifications fail a sync
                    log.warning("notification for %s not decided: %s", result.plan.site.name, exc)
                    continue
                if n is not None:
                    sent.append(n)
            limited = self._global(config, report)
            if limited is not None:
                sent.append(limited)
        return sent

    def observe_followed(self, config: Config, result: SiteResult) -> Notification | None:
        """What following a rollout in the background saw (no branch head): a rollout that
        became available, or one that failed and was rolled back; anything else waits for the
        next sync."""
        p = result.plan
        if p.action is Action.HELD:  # a person's change: the next sync says it
            return None
        if p.action is Action.ROLLED_BACK:
            snap = snapshot(result)
        elif p.rollout is Rollout.AVAILABLE and p.running_sha:
            snap = Snapshot(SiteState.IN_SYNC, running=p.running_sha, reason=p.reason)
        else:
            return None
        with self._lock:
            try:
                return self._site(config, result, snap)
            except ReconcilerError as exc:
                log.warning("notification for %s not decided: %s", p.site.name, exc)
                return None

    def _site(
        self, config: Config, result: SiteResult, snap: Snapshot | None = None
    ) -> Notification | None:
        site = result.plan.site
        settings = config.notify.for_site(site.name)
        candidates = [Memory.loads(result.plan.notified), self._memory.get(site.name)]
        known = [m for m in candidates if m is not None]
        prev = max(known, key=lambda m: m.since) if known else None  # the newest record wins
        snap = snap or snapshot(result)
        now = self.clock()
        decision = decide(prev, snap, now, Policy(blocked_after=settings.blocked_after))
        if decision.memory != prev:
            # A site with no channel has no one to tell: its state stays in this process's
            # memory, and its Deployment gets no write of its own (a deploy is one PATCH).
            keep = bool(settings.channels)
            self._remember(site, decision.memory, keep=keep)
        channels = settings.channels_for(decision.event) if decision.event else ()
        if decision.event is None or not channels:
            return None
        n = self._notification(result, decision, now, settings.status_url)
        self.outbox.post(n, channels)
        log.info(
            "notify %s: %s",
            site.name,
            decision.event.value,
            extra={"event": "notify", "site": site.name, "kind": decision.event.value},
        )
        return n

    def _remember(self, site: Site, memory: Memory, *, keep: bool) -> None:
        self._memory[site.name] = memory
        if not keep:
            return
        try:
            store = self.store_for(site) if self.store_for is not None else self.store
            if store is not None:
                value = memory.dumps()
                kind = site.targets[0].kind
                store.annotate(site.namespace, site.deployment, NOTIFIED_ANNOTATION, value, kind)
        except ReconcilerError as exc:  # e.g. the Deployment is gone: memory keeps it meanwhile
            log.info("could not record the notification state of %s: %s", site.name, exc)

    def _notification(
        self, result: SiteResult, d: Decision, now: float, status_url: str | None
    ) -> Notification:
        p = result.plan
        assert d.event is not None
        old, new = d.old_sha, p.sha
        if d.event is EventKind.DEPLOYED:
            new = p.running_sha or p.sha
        elif d.event is EventKind.ROLLED_BACK:
            new = getattr(p, "failed_sha", None) or p.sha
            old = p.running_sha or old
        elif d.event is EventKind.RECOVERED:
            old = new = p.running_sha or p.sha
        held = d.event is EventKind.HELD
        return Notification(
            id=uuid.uuid4().hex,
            event=d.event,
            at=now,
            reason=_what_happened(p, d.event, new),
            site=p.site.name,
            repo=p.site.repo,
            branch=p.branch or p.site.branch,
            namespace=p.site.namespace,
            deployment=p.site.deployment,
            old_sha=old,
            new_sha=new,
            detail=_detail(result, d),
            held_at=getattr(p, "held_at", None),
            flaps=d.flaps,
            status_url=status_url,
            web_url=self.web_url,
            running_sha=_image_commit(p) if held else None,
            image=p.current_image if held else None,
        )

    def _global(self, config: Config, report: SyncReport) -> Notification | None:
        """One message when GitHub's rate limit runs out, none while it stays out."""
        limited = [r for r in report.results if r.plan.error_kind == RATE_LIMITED]
        was, self._rate_limited = self._rate_limited, bool(limited)
        settings = config.notify.defaults
        if not limited or was or EventKind.RATE_LIMITED not in settings.events:
            return None
        n = Notification(
            id=uuid.uuid4().hex,
            event=EventKind.RATE_LIMITED,
            at=self.clock(),
            reason=f"{limited[0].plan.reason} ({len(limited)} site(s) not checked)",
            status_url=settings.status_url,
            web_url=self.web_url,
        )
        channels = config.notify.channels
        self.outbox.post(n, channels)
        return n

    def memory(self) -> Mapping[str, Memory]:
        with self._lock:
            return dict(self._memory)


def _image_commit(p: SitePlan) -> str | None:
    """The commit of the branch whose image a held site runs (its annotation may be stale)."""
    if not p.current_image:
        return None
    known = [s for s in (p.running_sha, p.sha) if s]
    return commit_of_image(p.site, p.branch or p.site.branch, p.current_image, known)


def _what_happened(p: SitePlan, event: EventKind, sha: str | None) -> str:
    """What a message says happened. A deploy or a recovery says what runs now (a follower's
    plan has no branch head: its reason is no news for people); other events keep the
    verdict's reason, which is why the site is in that state."""
    if event not in (EventKind.DEPLOYED, EventKind.RECOVERED):
        return p.reason
    ref = f"{p.branch or p.site.branch or '?'}@{(sha or '?')[:7]}"
    text = f"deployed {ref}" if event is EventKind.DEPLOYED else f"runs {ref} again"
    ready = p.progress.removesuffix(" ready")
    if p.rollout is Rollout.AVAILABLE and ready:
        text += f", available {ready}"
    return f"{text}; {p.fallback}" if p.fallback else text


def _detail(result: SiteResult, d: Decision) -> str:
    p = result.plan
    if d.event is EventKind.HELD:
        return getattr(p, "held_by", None) or ""
    if d.event is EventKind.APPROVED:
        return p.approved_by or ""
    if d.event is EventKind.WINDOW_OVERRIDE and p.note is not None:
        return p.note.annotations.get(WINDOW_OVERRIDE_BY) or ""
    return p.error_kind or ""
