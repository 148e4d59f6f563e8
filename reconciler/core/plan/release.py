"""One release per site (#19): a site of several targets (or containers) is planned part by part,
each part a one-container site the planner already knows, and the parts' verdicts are combined
into the site's one verdict, so that all of them move to the same commit in the same run or
none does:

- any part's rollout failed, and none is held: every part running the failed commit goes back
  to its previous image and remembers the commit (the site is rolled back), whatever error
  another part has (the follower, which reads no branch head, has one on every part whose
  rollout did not fail);
- any part in error: the site fails with that part's reason, nothing is written;
- any part held (a person changed its image, or `reconciler hold`): the whole site is held;
- the failed commit is the head on any part: the site waits for a new commit;
- any part not ready (image missing, checks pending, paused): the site waits, none moves;
- else the parts not on the head are updated together; in sync when none is.

undo_patch() is what puts back a part already patched in a run whose next part was refused."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from reconciler.core import annotations as ann
from reconciler.core.model import (
    Action,
    DeploymentPatch,
    KubeEvent,
    Rollout,
    Site,
    SitePlan,
    Target,
)
from reconciler.core.rollout.state import stamp

__all__ = [
    "combine",
    "gated",
    "held_back",
    "is_init",
    "is_release",
    "key",
    "label",
    "parts_of",
    "undo_patch",
]


def parts_of(site: Site) -> tuple[Site, ...]:
    """The one-container sites a site is made of, in target order: itself when it is one."""
    if not is_release(site):
        return (site,)
    out = []
    for t in site.targets:
        for c, init in t.sets:
            image = t.image_for(c, site.image) if c else site.image
            if init:  # an init container's part: only that one, at initContainers
                one = Target(t.name, t.kind, (), (c,) if c else (), line=t.line, only_init=True)
            else:
                one = Target(t.name, t.kind, (c,) if c else (), line=t.line)
            out.append(replace(site, deployment=t.name, container=c, image=image, targets=(one,)))
    return tuple(out)


def is_release(site: Site) -> bool:
    """More than one part (targets, containers, init containers), or a part with an image of
    its own; a part itself (one container or one init container) is not."""
    target = site.targets[0]
    return len(site.targets) > 1 or len(target.sets) > 1 or bool(target.images)


def is_init(part: Site) -> bool:
    """Whether a part (or a one-part site) sets an init container."""
    return part.targets[0].sets[0][1]


def key(part: Site) -> str:
    """A part's name among a run's troubles: the site's name for a site of one part."""
    return f"{part.name}:{part.targets[0]}:{part.container or ''}"


def label(p: SitePlan) -> str:
    """How messages name a part: "CronJob/nightly" or "Deployment/web (app)"."""
    target = p.site.targets[0]
    init = "init container " if is_init(p.site) else ""
    return f"{target}" + (f" ({init}{p.container})" if p.container else "")


def _worst(parts: Sequence[SitePlan]) -> Rollout | None:
    states = [p.rollout for p in parts]
    for state in (Rollout.FAILED, Rollout.PROGRESSING):
        if state in states:
            return state
    return None if None in states else Rollout.AVAILABLE


def _quiet(parts: Sequence[SitePlan], keep: Callable[[SitePlan], bool]) -> tuple[SitePlan, ...]:
    """The parts, only those `keep` accepts still writing."""
    return tuple(p if keep(p) else replace(p, write=None, action=_still(p)) for p in parts)


def _still(p: SitePlan) -> Action:
    return Action.SKIP if p.action in (Action.UPDATE, Action.ROLLED_BACK) else p.action


def combine(
    site: Site,
    parts: Sequence[SitePlan],
    rollback: Callable[[SitePlan, str], SitePlan | None],
) -> SitePlan:
    """The site's one verdict from its parts' (module doc); `rollback(part, why)` is a part's
    rollback verdict (None: nothing recorded to go back to)."""
    first = parts[0]
    progress = "; ".join(f"{label(p)}: {p.progress}" for p in parts if p.progress)
    base = replace(
        first,
        site=site,
        parts=tuple(parts),
        rollout=_worst(parts),
        progress=progress,
        write=None,
        waiting=all(p.waiting for p in parts if p.rollout is Rollout.PROGRESSING),
    )
    failed = next((p for p in parts if p.action is Action.ROLLED_BACK), None)
    if failed is not None and not any(p.action is Action.HELD for p in parts):
        return _rolled_back(base, parts, failed, rollback)
    for action in (Action.ERROR, Action.HELD):
        found = next((p for p in parts if p.action is action), None)
        if found is not None:
            return replace(
                base,
                action=action,
                reason=f"{label(found)}: {found.reason}",
                error_kind=found.error_kind,
                held_by=found.held_by,
                held_at=found.held_at,
                parts=_quiet(parts, lambda p: p.action is Action.HELD),
            )
    waiting = next((p for p in parts if p.action is Action.SKIP), None)
    if waiting is not None:
        return replace(
            base,
            action=Action.SKIP,
            skip=waiting.skip,
            reason=f"{label(waiting)}: {waiting.reason}; no target moves until all can",
            parts=_quiet(parts, lambda p: False),
        )
    moving = [p for p in parts if p.action is Action.UPDATE]
    if moving:
        names = ", ".join(label(p) for p in moving)
        return replace(base, action=Action.UPDATE, reason=f"{first.reason} ({names})")
    return replace(base, action=Action.IN_SYNC)


def _rolled_back(
    base: SitePlan,
    parts: Sequence[SitePlan],
    failed: SitePlan,
    rollback: Callable[[SitePlan, str], SitePlan | None],
) -> SitePlan:
    """Every part running the failed commit goes back with the one whose rollout failed."""
    bad = failed.failed_sha
    why = f"{label(failed)} failed: {failed.reason}"
    out = []
    for p in parts:
        goes_back = p.action is not Action.ROLLED_BACK and bad and p.running_sha == bad
        out.append((rollback(p, why) or p) if goes_back else p)
    return replace(
        base,
        action=Action.ROLLED_BACK,
        reason=f"{why}; every target goes back",
        failed_sha=bad,
        target_image=failed.target_image,
        parts=_quiet(out, lambda p: p.action is Action.ROLLED_BACK),
    )


def gated(p: SitePlan, parts: Sequence[SitePlan]) -> SitePlan:
    """A release after its parts' images were verified: one missing or unverifiable holds
    every part back."""
    for action in (Action.ERROR, Action.SKIP):
        found = next((q for q in parts if q.action is action), None)
        if found is not None and p.action is Action.UPDATE:
            return replace(
                p,
                action=action,
                skip=found.skip,
                error_kind=found.error_kind,
                reason=f"{label(found)}: {found.reason}",
                parts=_quiet(parts, lambda q: False),
            )
    return replace(p, parts=tuple(parts))


def held_back(p: SitePlan) -> SitePlan:
    """A site a gate holds back (promotion, approval, a window): none of its targets moves."""
    return replace(p, parts=_quiet(p.parts, lambda q: False)) if p.parts else p


def undo_patch(p: SitePlan, why: str, now: float) -> DeploymentPatch:
    """Put back a part this run already patched (a later part's patch was refused): its image
    and commit before the run; unguarded (it was ours a moment ago)."""
    target = p.site.targets[0]
    sha = (p.sha or "")[:7]
    return DeploymentPatch(
        p.site.namespace,
        target.name,
        {
            ann.SHA: p.running_sha or None,
            ann.UPDATED_AT: stamp(now),
            ann.PREVIOUS_IMAGE: None,
            **({ann.previous_image_of(p.container): None} if p.container else {}),
            ann.PREVIOUS_SHA: None,
        },
        container=p.container,
        image=p.current_image,
        change_cause=f"reconciler: release of {sha} undone ({why})"[:250],
        events=(KubeEvent("Warning", "ReleaseUndone", f"back to {p.current_image}: {why}"[:1024]),),
        kind=target.kind,
        init=is_init(p.site),
    )
