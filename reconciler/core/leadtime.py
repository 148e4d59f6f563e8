"""Lead time, stage by stage (pure): when a commit was pushed, its checks went green, its image
was there, it was patched in and its rollout became available; and, for a branch head that is
not live yet, the stage it waits in and since when.

Level-triggered and on the workload, so every replica and every restart tells the same story:

- ``reconciler.dev/stages`` (`ann.STAGES`): JSON ``{"sha", "pushed", "checks", "image", "seen"}``
  for the commit the workload runs, written by the patch that deploys it. "patched" is the
  patch's ``reconciler.dev/updated-at`` and "available" the follower's
  ``reconciler.dev/available-at`` (valid when not older than updated-at); a record whose sha is
  not ``reconciler.dev/sha`` (a rollback went back past it) is ignored.
- ``reconciler.dev/head-stages`` (`ann.HEAD_STAGES`): the same JSON for a branch head the
  reconciler has seen but not deployed (checks pending, image missing, held, approval, window):
  written once when first seen and again only when one of its stages passes, so a steady sync
  writes nothing; the patch that deploys the head removes it.

Every delivery keeps them on the workload the site follows, in the same words: a git site's
Deployment (its "patched" is the commit to the configuration repository, recorded by the
reconciler as for a patch, and ``reconciler.dev/applied-at`` (`ann.APPLIED_AT`) when a sync or
the follower first saw the Deployment run the committed image: the GitOps tool applied it); a
Helm site's release Deployment that carries its notes (its "patched" is the upgrade: the
commit and time of the deployed revision come from Helm's release record, see
core.helmplan.lead_workload).

Where each time comes from: "pushed" is the push time of the webhook delivery that announced
the commit (``repository.pushed_at`` of a ``push`` event) when one did, else the commit's
``committedDate`` from the heads query; "checks" is when a sync first saw the commit's checks
green (its status rollup SUCCESS, or the ``verify = "checks"`` gate passing), "image" when it
first saw the image present (``verify = "registry"``); "seen" when a sync first saw the commit
as the branch head. Those three are first-seen times: they are as precise as syncs are
frequent (a webhook for every check brings them to within seconds).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from functools import lru_cache

from reconciler.core import annotations as ann
from reconciler.core.model import (
    GIT,
    HELM,
    Action,
    BranchHead,
    DeploymentPatch,
    HeadResult,
    Lead,
    ObservedDeployment,
    Rollout,
    Site,
    SitePlan,
    Skip,
    Stages,
)
from reconciler.core.plan.running import same_image
from reconciler.core.rollout.state import parse_time, stamp

__all__ = [
    "METRIC_STAGES",
    "STAGES",
    "VERBS",
    "WAITS",
    "after_patch",
    "age",
    "as_dict",
    "available",
    "clock",
    "delivered",
    "dumps",
    "durations",
    "follow_notes",
    "follow_patch",
    "followed",
    "followed_up",
    "head_notes",
    "head_patch",
    "lead_of",
    "line",
    "loads",
    "offset",
    "promoted",
    "proposed",
    "read",
    "update_notes",
    "waiting_text",
]

STAGES = ("pushed", "checks", "image", "patched", "applied", "available")
LABELS = {
    "pushed": "pushed",
    "seen": "seen",
    "checks": "checks green",
    "image": "image",
    "patched": "patched",  # Lead.verb: "upgraded" (Helm), "committed" (git)
    "applied": "applied",
    "available": "available",
}
METRIC_STAGES = STAGES[1:]  # the histogram's `stage` label: seconds from the push to each
_RECORDED = ("pushed", "checks", "image", "seen")  # what the JSON records carry

# The stage a branch head not live yet waits in: the words after "waiting for".
WAITS = {
    "checks": "checks",
    "image": "its image",
    "sync": "a sync",  # ready: the next sync deploys it (a plan that does not apply)
    "approval": "approval",  # approval = "manual" (#20)
    "window": "a deploy window",  # a closed deploy window (#20)
    "promotion": "its promotion",  # promote_from: the source's soak (#20)
    "hold": "a hold to be lifted",
    "paused": "the site to be resumed",
    "merge": "its pull request to be merged",  # git, mode = "pr"
    "applied": "the GitOps tool to apply it",  # git: committed, not running yet
    "available": "its rollout",
}
# Verdicts (by their Skip value) that come after the image and checks were verified: envgates'
# approval and window gates run on updates that passed the gate.
_PAST_GATE = ("approval", "window")
_GATES = (*_PAST_GATE, "promotion")


def dumps(s: Stages) -> str:
    """The JSON record of a commit's stages as annotations carry it (RFC 3339 times)."""
    body: dict[str, str] = {"sha": s.sha}
    for key in _RECORDED:
        value = getattr(s, key)
        if value is not None:
            body[key] = stamp(value)
    return json.dumps(body, separators=(",", ":"))


# Every sync reads every workload's records: parsed once per distinct text (the texts of a
# steady fleet repeat from sync to sync), so 10,000 in-sync sites cost a few ms, not a second.
CACHED = 65536


def loads(text: str | None) -> Stages | None:
    """A record written by `dumps`; None for a missing or unreadable one (never an error: a
    person may have edited it, and a lead time is never worth failing a sync)."""
    return _loads(text) if text else None


@lru_cache(maxsize=CACHED)
def _loads(text: str) -> Stages | None:
    try:
        body = json.loads(text)
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("sha"), str):
        return None
    times = {k: _time(v) if isinstance(v, str) else None for k in _RECORDED if (v := body.get(k))}
    return Stages(body["sha"], **times)


def read(notes: Mapping[str, str]) -> tuple[Stages | None, Stages | None]:
    """From a workload's annotations: the stages of the commit it runs (None when it runs no
    recorded commit) and of the branch head recorded as waiting (None: none)."""
    sha = notes.get(ann.SHA)
    waiting = notes.get(ann.HEAD_STAGES)
    deployed = None
    if sha:
        deployed = _deployed(
            sha,
            notes.get(ann.STAGES),
            waiting,
            notes.get(ann.UPDATED_AT),
            notes.get(ann.APPLIED_AT),
            notes.get(ann.AVAILABLE_AT),
        )
    return deployed, loads(waiting)


@lru_cache(maxsize=CACHED)
def _deployed(  # noqa: PLR0917 - the annotations it reads, as the cache's key
    sha: str,
    record: str | None,
    waiting: str | None,
    updated: str | None,
    applied: str | None,
    ready: str | None,
) -> Stages:
    """The deployed commit's stages: its record (or the head's, when the write that deployed it
    could not record it: a Helm upgrade's record is a second write); a commit named short (a
    Helm description) matches the record of its full SHA."""
    found = next(
        (r for r in (loads(record), loads(waiting)) if r is not None and _same(r.sha, sha)), None
    )
    base = found if found is not None else Stages(sha)
    patched = _time(updated)
    ran, done = _since(_time(applied), patched), _since(_time(ready), patched)
    return replace(base, patched=patched, applied=ran, available=done)


def _same(recorded: str, sha: str) -> bool:
    return recorded == sha or (len(sha) >= 7 and recorded.startswith(sha))


def _since(t: float | None, patched: float | None) -> float | None:
    """A stamp of the rollout of the deployed commit (not older than its patch: else one
    stamped for an earlier rollout)."""
    return None if t is not None and patched is not None and t < patched else t


def lead_of(
    p: SitePlan,
    notes: Mapping[str, str] | None,
    head: HeadResult | None,
    *,
    pushed: float | None,
    now: float,
    at: ObservedDeployment | None = None,
) -> Lead:
    """A site's Lead from its verdict, its workload's annotations and the branch head;
    ``pushed``: the head's push time from a webhook delivery, when one announced it; ``at``:
    the workload that carries the record when it is not the one the verdict names (a Helm
    release's Deployment: see delivered)."""
    now = _whole(now)
    deployed, recorded = read(notes or {})
    if not isinstance(head, BranchHead):
        return Lead(deployed, waiting=_rolling(p, deployed), since=_rolling_since(deployed, p))
    if deployed is not None and deployed.sha == head.sha:
        return Lead(deployed, waiting=_rolling(p, deployed), since=_rolling_since(deployed, p))
    if p.action is Action.IN_SYNC:  # runs the head, but not as a commit the reconciler recorded
        return Lead(deployed)
    mine = _head_stages(p, head, recorded, pushed, now)
    waiting, since = _wait(p, mine)
    target = None
    if p.action is Action.UPDATE and p.sha and p.sha != head.sha:  # an older commit goes out
        date = next((c.committed_at for c in head.history if c.sha == p.sha), None)
        target = _verified(p.site, Stages(p.sha, pushed=_time(date), seen=now), now)
    write = head_patch(p, notes or {}, mine, at)
    return Lead(deployed, mine, waiting, since, target=target, write=write)


VERBS = {HELM: "upgraded", GIT: "committed"}  # the page's word for a delivery's "patched"


def delivered(
    p: SitePlan,
    at: ObservedDeployment | None,
    head: HeadResult | None,
    *,
    pushed: float | None,
    now: float,
) -> Lead:
    """lead_of for a site of another delivery, whose records are on ``at`` (SiteDelivery.workload:
    a git site's Deployment; a Helm release's, its annotations as core.helmplan reads them): a
    git site's Deployment first seen running the committed image is recorded applied now."""
    now = _whole(now)
    notes: Mapping[str, str] = at.annotations if at is not None else {}
    ran = _applied(p, notes, read(notes)[0])
    if ran:
        notes = {**notes, ann.APPLIED_AT: stamp(now)}
    lead = lead_of(p, notes, head, pushed=pushed, now=now, at=at)
    if ran:  # recorded with the head's, when there is one to record
        write = lead.write or _record(p, at, {})
        if write is not None:
            applied = {**write.annotations, ann.APPLIED_AT: notes[ann.APPLIED_AT]}
            lead = replace(lead, write=replace(write, annotations=applied))
    return replace(lead, verb=VERBS.get(p.site.delivery, lead.verb))


def _applied(p: SitePlan, notes: Mapping[str, str], deployed: Stages | None) -> bool:
    """Whether a git site's Deployment runs the image the reconciler committed, not recorded
    so: its GitOps tool applied it. Not for a verdict that writes something else, nor for a
    rollout recorded available already."""
    if p.site.delivery != GIT or deployed is None or deployed.patched is None:
        return False
    if deployed.applied is not None or deployed.available is not None:
        return False
    if p.write is not None or p.action in (Action.UPDATE, Action.ROLLED_BACK):
        return False
    written = notes.get(ann.GIT_IMAGE)
    return bool(written and p.current_image and same_image(p.current_image, written))


def promoted(
    p: SitePlan, notes: Mapping[str, str] | None, source: Mapping[str, str] | None, *, now: float
) -> Lead:
    """A follower's Lead (``promote_from``): its head is the commit its source runs, pushed
    when the source's record says (the branch's push, not the promotion's), waiting for its
    promotion since the source's rollout of it became available."""
    upstream, _ = read(source or {})
    if upstream is None:
        return lead_of(p, notes, None, pushed=None, now=now)
    head = BranchHead(p.site.repo, p.branch or "", upstream.sha)
    lead = lead_of(p, notes, head, pushed=upstream.pushed, now=now)
    if lead.waiting == "promotion":
        since = upstream.available if upstream.available is not None else lead.since
        return replace(lead, since=since)
    return lead


def _rolling(p: SitePlan, deployed: Stages | None) -> str | None:
    """ "available" while the rollout of the deployed commit goes on; "applied" while a git
    site's commit waits for its GitOps tool."""
    if deployed is None or deployed.available is not None:
        return None
    if _unapplied(p, deployed):
        return "applied"
    return "available" if p.rollout is Rollout.PROGRESSING else None


def _unapplied(p: SitePlan, deployed: Stages) -> bool:
    return (
        p.site.delivery == GIT
        and deployed.patched is not None
        and deployed.applied is None
        and p.action not in (Action.HELD, Action.ROLLED_BACK)
        and p.skip is not Skip.PAUSED
    )


def _rolling_since(deployed: Stages | None, p: SitePlan) -> float | None:
    waiting = _rolling(p, deployed)
    if deployed is None or waiting is None:
        return None
    if waiting == "available" and deployed.applied is not None:
        return deployed.applied
    return deployed.patched


def _head_stages(
    p: SitePlan, head: BranchHead, recorded: Stages | None, pushed: float | None, now: float
) -> Stages:
    """The head's stages: what was recorded for it, plus what this sync sees for the first time."""
    base = recorded if recorded is not None and recorded.sha == head.sha else Stages(head.sha)
    seen = base.seen if base.seen is not None else now
    at = base.pushed if base.pushed is not None else pushed or _time(head.committed_at)
    checks = base.checks
    if checks is None and next((c.checks for c in head.history[:1] if c.sha == head.sha), None) == (
        "SUCCESS"
    ):
        checks = now
    if (seen, at, checks) != (base.seen, base.pushed, base.checks):  # (a steady sync: equal)
        base = replace(base, seen=seen, pushed=at, checks=checks)
    if p.sha == head.sha and (p.action is Action.UPDATE or p.skip in _PAST_GATE):
        base = _verified(p.site, base, now)
    return base


def _verified(site: Site, s: Stages, now: float) -> Stages:
    """A commit that passed the site's gate now: its checks (verify = "checks") or image."""
    if site.verify == "checks" and s.checks is None:
        return replace(s, checks=now)
    if site.verify == "registry" and s.image is None:
        return replace(s, image=now)
    return s


def _wait(p: SitePlan, h: Stages) -> tuple[str | None, float | None]:
    """The stage the head waits in, and since when (the time the stage before it ended)."""
    start = h.pushed if h.pushed is not None else h.seen
    ready = h.image or h.checks or start
    if p.action is Action.ERROR or p.skip is Skip.FAILED_COMMIT:
        return None, None  # not waiting: the reason says what is wrong
    if p.skip is Skip.PAUSED:
        return "paused", None
    if p.action is Action.HELD:
        return "hold", _time(p.held_at)
    if p.skip in _GATES:  # approval, window, promotion (#20)
        return str(p.skip), ready
    if p.skip is Skip.AWAITING_APPLY:  # git: a pull request, or a commit of an older head's
        return ("merge" if p.site.git and p.site.git.mode == "pr" else "applied"), ready
    if p.skip is Skip.CHECKS_PENDING or (p.sha != h.sha and p.site.verify == "checks"):
        return "checks", start
    if p.skip is Skip.IMAGE_MISSING or p.sha != h.sha:
        return "image", h.checks or start
    if p.action is Action.UPDATE:
        return "sync", ready
    return None, None


def head_patch(
    p: SitePlan, notes: Mapping[str, str], mine: Stages, at: ObservedDeployment | None = None
) -> DeploymentPatch | None:
    """The write that records a head not deployed by this verdict (None: recorded already, or
    the update that deploys it records it), on ``at`` when given, else the site's workload."""
    if p.action is Action.UPDATE and p.sha == mine.sha:
        return None
    if p.action in (Action.ERROR, Action.ROLLED_BACK):
        return None
    if p.skip in (Skip.PAUSED, Skip.FAILED_COMMIT):
        return None
    if p.write is not None:  # the verdict writes something else: recorded at the next sync
        return None
    if loads(notes.get(ann.HEAD_STAGES)) == mine:  # recorded (parsed once: cached)
        return None
    return _record(p, at, {ann.HEAD_STAGES: dumps(mine)})


def _record(
    p: SitePlan, at: ObservedDeployment | None, notes: Mapping[str, str | None]
) -> DeploymentPatch | None:
    """A write of lead-time notes on ``at`` (else the site's workload), guarded by the
    resourceVersion read; None when there is no workload to write on."""
    if at is not None:
        if not at.resource_version:
            return None
        return DeploymentPatch(
            at.namespace, at.name, dict(notes), resource_version=at.resource_version, kind=at.kind
        )
    if not p.resource_version:
        return None
    return DeploymentPatch(
        p.site.namespace,
        p.site.deployment,
        dict(notes),
        resource_version=p.resource_version,
        kind=p.site.targets[0].kind,
    )


def follow_notes(p: SitePlan, now: float) -> dict[str, str | None] | None:
    """What following a delivered site's rollout records on its workload (core.helmplan,
    core.gitops: the workload of Lead.write): a git site's commit first seen applied, and the
    rollout of the deployed commit available (a git site's once applied); None: nothing."""
    lead = p.lead
    if lead is None or lead.deployed is None:
        return None
    notes: dict[str, str | None] = dict(lead.write.annotations) if lead.write else {}
    d = lead.deployed
    ran = p.site.delivery != GIT or d.applied is not None
    if p.rollout is Rollout.AVAILABLE and d.patched is not None and d.available is None and ran:
        notes[ann.AVAILABLE_AT] = stamp(_whole(now))
    return notes or None


def follow_patch(p: SitePlan, at: ObservedDeployment | None, now: float) -> DeploymentPatch | None:
    """follow_notes as the write on ``at``, guarded by the resourceVersion read."""
    notes = follow_notes(p, now)
    return _record(p, at, notes) if notes and at is not None else None


def followed_up(lead: Lead | None, write: DeploymentPatch, now: float) -> Lead | None:
    """The Lead once follow_patch's write landed."""
    if lead is not None and ann.AVAILABLE_AT in write.annotations:
        lead = available(lead, now)
    return replace(lead, write=None) if lead is not None else None


def update_notes(p: SitePlan) -> dict[str, str | None]:
    """What the patch that deploys ``p.sha`` records about it: its stages so far; the head's
    record goes when the head is what goes out."""
    lead = p.lead
    if lead is None or not p.sha:
        return {}
    if lead.head is not None and lead.head.sha == p.sha:
        return {ann.STAGES: dumps(lead.head), ann.HEAD_STAGES: None}
    if lead.target is not None and lead.target.sha == p.sha:
        notes: dict[str, str | None] = {ann.STAGES: dumps(lead.target)}
        if lead.head is not None:
            notes[ann.HEAD_STAGES] = dumps(lead.head)
        return notes
    return {ann.STAGES: dumps(Stages(p.sha))}


def head_notes(p: SitePlan) -> dict[str, str | None]:
    """The head's record for a write that proposes it without deploying it (a git site's pull
    request): what the update would have recorded, kept until the merge is recorded."""
    lead = p.lead
    if lead is None or lead.head is None or lead.head.sha != p.sha:
        return {}
    return {ann.HEAD_STAGES: dumps(lead.head)}


def proposed(lead: Lead | None) -> Lead | None:
    """The Lead once a pull request proposes the head (a git site, mode "pr"): it waits for
    the merge, since it was ready, and its record went with the pull request."""
    if lead is None or lead.head is None or lead.waiting != "sync":
        return lead
    return replace(lead, waiting="merge", write=None)


def after_patch(lead: Lead | None, sha: str, now: float, *, delivery: str = "") -> Lead:
    """The Lead once ``sha`` was patched in at ``now``: its rollout is what it waits for (a
    git site's commit: its GitOps tool)."""
    now = _whole(now)
    lead = lead or Lead()
    mine = lead.head if lead.head is not None and lead.head.sha == sha else lead.target
    deployed = replace(mine if mine and mine.sha == sha else Stages(sha), patched=now)
    if lead.head is not None and lead.head.sha != sha:  # an older commit: the head still waits
        return replace(lead, deployed=deployed, target=None, write=None)
    waiting = "applied" if delivery == GIT else "available"
    return Lead(deployed, waiting=waiting, since=now, verb=lead.verb)


def available(lead: Lead | None, now: float) -> Lead | None:
    """The Lead once the rollout of the deployed commit was recorded available at ``now``."""
    now = _whole(now)
    if lead is None or lead.deployed is None or lead.deployed.available is not None:
        return lead
    deployed = replace(lead.deployed, available=now)
    if lead.waiting == "available":
        return replace(lead, deployed=deployed, waiting=None, since=None)
    return replace(lead, deployed=deployed)


def followed(stored: Lead | None, seen: Lead | None) -> Lead | None:
    """A sync's Lead brought up to date with what following the rollout saw (``seen``: the
    deployed commit's stages, read again); a head still waiting keeps waiting."""
    if seen is None or seen.deployed is None:
        return stored
    if stored is None or stored.head is None or stored.head.sha == seen.deployed.sha:
        return seen
    return replace(stored, deployed=seen.deployed)


def durations(s: Stages) -> dict[str, float]:
    """Seconds from the push to each stage reached (empty when the push time is unknown)."""
    if s.pushed is None:
        return {}
    out: dict[str, float] = {}
    for key in METRIC_STAGES:
        value = getattr(s, key)
        if value is not None:
            out[key] = max(0.0, value - s.pushed)
    return out


def _time(value: str | None) -> float | None:
    """rollout.parse_time of an annotation's time, remembered (strptime costs ~25 µs)."""
    return _parse(value) if value else None


@lru_cache(maxsize=CACHED)
def _parse(value: str) -> float | None:
    if len(value) == 20 and value.endswith("Z"):  # 2026-12-07T14:02:00Z, as `stamp` writes it
        try:
            return datetime.fromisoformat(value[:19]).replace(tzinfo=UTC).timestamp()
        except ValueError:
            return None
    return parse_time(value)


def _whole(now: float) -> float:
    """Whole seconds, as the annotations record times: a replica reading them back later
    sees the same values."""
    return float(int(now))


def clock(t: float) -> str:
    """14:02 (UTC)."""
    return datetime.fromtimestamp(int(t), UTC).strftime("%H:%M")


def offset(seconds: float) -> str:
    """+41s, +4m10s, +1h04m, +2d03h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"+{s}s"
    if s < 3600:
        return f"+{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"+{s // 3600}h{s % 3600 // 60:02d}m"
    return f"+{s // 86400}d{s % 86400 // 3600:02d}h"


def age(seconds: float) -> str:
    """40 s, 6 min, 2 h 5 min, 3 d 4 h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def line(s: Stages, verb: str = "patched") -> str:
    """ "pushed 14:02 → checks green +4m10s → image +4m40s → patched +4m41s → available +5m03s"
    (from "seen" when the push time is unknown; ``verb`` names the patch: "upgraded" for a Helm
    site, "committed" for a git site, whose line has "applied" too); "" when nothing is known."""
    first = "pushed" if s.pushed is not None else "seen"
    start = getattr(s, first)
    if start is None:
        return ""
    parts = [f"{LABELS[first]} {clock(start)}"]
    for key in STAGES[1:]:
        value = getattr(s, key)
        if value is not None:
            parts.append(f"{verb if key == 'patched' else LABELS[key]} {offset(value - start)}")
    return " → ".join(parts)


def waiting_text(lead: Lead | None, now: float) -> str:
    """ "head 3f2c1a9 waiting for checks since 14:02, 6 min"; "" when nothing waits."""
    if lead is None or lead.waiting is None:
        return ""
    commit = lead.head if lead.head is not None else lead.deployed
    who = f"head {commit.sha[:7]}" if commit is not None else "head"
    if lead.waiting in ("available", "applied") and lead.deployed is not None:
        who = f"{lead.deployed.sha[:7]}"
    text = f"{who} waiting for {WAITS.get(lead.waiting, lead.waiting)}"
    if lead.since is not None:
        text += f" since {clock(lead.since)}, {age(now - lead.since)}"
    return text


def as_dict(lead: Lead | None, now: float) -> dict[str, object] | None:
    """The Lead for JSON (plan --json, /status): RFC 3339 times, seconds from the push."""
    if lead is None:
        return None

    def stages(s: Stages | None) -> dict[str, object] | None:
        if s is None:
            return None
        times = {k: stamp(v) for k in (*STAGES, "seen") if (v := getattr(s, k)) is not None}
        return {"sha": s.sha, **times, "seconds": durations(s), "line": line(s, lead.verb)}

    return {
        "deployed": stages(lead.deployed),
        "head": stages(lead.head),
        "waiting": lead.waiting,
        "since": stamp(lead.since) if lead.since is not None else None,
        "text": waiting_text(lead, now) or None,
    }
