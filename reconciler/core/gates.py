"""Environment gates (#20), pure: what stands between a site's planned commit and its deploy.

Three gates, per site (across its workloads), in this order, each seeing the one before:

- promotion (``promote_from``, ``soak``): a follower site has no branch; its candidate is the
  commit its source runs, judged by `core.promotion.decide` from both sites' workloads and a
  clock value. `promoted_head` turns that verdict into the head the planner plans against (the
  candidate when ready, else what the follower runs, so rollbacks and holds plan as always),
  and `after_promotion` gives the verdict its words ("staging runs 3f2c1a9, available 12 of 30
  min", "blocked: 3f2c1a9 failed on staging") where the planner would have said "in sync";
- approval (``approval = "manual"``): an update, verified, waits until a person approved that
  very commit (`approve_patch` records who and when on the workload, with an Event; approving
  3f2c1a9 does not approve the next commit);
- deploy windows (``windows = [...]``): outside allowed time an update is reported, not
  deployed ("frozen until Mon 09:00 Europe/Berlin by window weekend-freeze"), unless the sync
  was asked to override it with a reason (`core.windows.override`): then the update carries the
  annotations and the Event that record the override.

Only updates are gated: rollbacks of failed rollouts, hold, resume and rollback always run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from reconciler.core import annotations as ann
from reconciler.core import promotion, windows
from reconciler.core.errors import CommandError, ErrorKind
from reconciler.core.model import (
    Action,
    BranchHead,
    DeploymentPatch,
    HeadError,
    HeadResult,
    KubeEvent,
    ObservedDeployment,
    Site,
    SitePlan,
    Skip,
)
from reconciler.core.plan import release
from reconciler.core.rollout import state as rollout

__all__ = [
    "APPROVAL_KEYS",
    "Approval",
    "after_promotion",
    "approval_gate",
    "approve_patch",
    "delivered",
    "judge",
    "observed",
    "promoted_head",
    "read_approval",
    "waiting_sha",
    "window_gate",
]

APPROVED_SHA = ann.PREFIX + "approved-sha"
APPROVED_BY = ann.PREFIX + "approved-by"
APPROVED_AT = ann.PREFIX + "approved-at"
APPROVAL_KEYS = (APPROVED_SHA, APPROVED_BY, APPROVED_AT)


# --- promotion ------------------------------------------------------------------------------


def promoted_head(
    site: Site, verdict: promotion.Verdict, here: promotion.Observed, source: promotion.Observed
) -> HeadResult:
    """The head a follower is planned against: the candidate once ready, else the commit it
    runs (the planner then sees it in sync, or a rollback, or a hold, as for any site)."""
    branch = source.branch or here.branch or ""
    if verdict.stage is promotion.Stage.READY and verdict.sha:
        return BranchHead(site.repo, branch, verdict.sha)
    if here.sha:
        return BranchHead(site.repo, here.branch or branch, here.sha)
    return HeadError(verdict.text, ErrorKind.INTERNAL)


def after_promotion(p: SitePlan, verdict: promotion.Verdict) -> SitePlan:
    """The follower's plan with the promotion's words; a candidate not ready is a skip."""
    stage = verdict.stage
    if stage is promotion.Stage.READY:
        if p.action is Action.UPDATE:
            source = p.site.promote_from
            return replace(p, reason=f"{p.reason}; {verdict.text}", gated=f"from {source}")
        return p
    ours = _promotions_own(p, verdict.text)
    if p.action not in (Action.UPDATE, Action.IN_SYNC) and not ours:
        return p  # held, rolled back, paused, unreadable: that verdict stands
    if ours and p.parts:  # a release: its targets wait for the promotion too, none failed
        p = replace(p, parts=tuple(_waits(q, verdict.text) for q in p.parts))
    if stage is promotion.Stage.CURRENT:
        if ours:
            return replace(p, action=Action.SKIP, skip=Skip.PROMOTION, error_kind=None)
        return replace(p, reason=verdict.text) if p.action is Action.IN_SYNC else p
    skip = Skip.FAILED_COMMIT if verdict.text.endswith("keeps it)") else Skip.PROMOTION
    return _held_back(
        p,
        skip,
        verdict.text,
        error_kind=None,
        sha=verdict.sha or p.sha,
        head_sha=verdict.sha or p.head_sha,  # the follower's "head": what its source runs
        target_image=None,
        retry_at=verdict.due,
    )


def _held_back(p: SitePlan, skip: Skip, reason: str, **more: Any) -> SitePlan:
    """`p` held back by a gate (promotion, approval, a window): skipped, and none of its
    targets moves (release.held_back)."""
    return release.held_back(replace(p, action=Action.SKIP, skip=skip, reason=reason, **more))


def _promotions_own(p: SitePlan, text: str) -> bool:
    """An error that is only the promotion's words (a follower running no commit yet has no
    head to be planned against until one is ready); of a release: of each target in error."""
    if p.action is not Action.ERROR:
        return False
    if not p.parts:
        return p.reason == text
    return all(q.reason == text for q in p.parts if q.action is Action.ERROR)


def _waits(q: SitePlan, text: str) -> SitePlan:
    """One target of a release whose error was the promotion's words: it waits for it."""
    if q.action is Action.ERROR and q.reason == text:
        return replace(q, action=Action.SKIP, skip=Skip.PROMOTION, error_kind=None)
    return q


# --- approval -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Approval:
    """A person's approval of one commit for one site, as recorded on its workload."""

    sha: str
    by: str
    at: str

    @property
    def text(self) -> str:
        return f"{self.sha[:7]} approved by {self.by}"


def read_approval(annotations: Mapping[str, str]) -> Approval | None:
    sha = annotations.get(APPROVED_SHA)
    if not sha:
        return None
    return Approval(
        sha, annotations.get(APPROVED_BY) or "someone", annotations.get(APPROVED_AT, "")
    )


def approval_gate(p: SitePlan, approval: Approval | None, cli: str = "reconciler") -> SitePlan:
    """An update of a site with approval = "manual" waits until its commit is approved."""
    if p.action is not Action.UPDATE or p.site.approval != "manual" or not p.sha:
        return p
    if approval is not None and approval.sha == p.sha:
        text = approval.text
        return replace(
            p, reason=f"{p.reason}; {text}", gated=_also(p, text), approved_by=approval.by
        )
    why = f"waiting for approval of {p.sha[:7]} (`{cli} approve {p.site.name}`)"
    return _held_back(p, Skip.APPROVAL, why)


def waiting_sha(p: SitePlan) -> str | None:
    """The commit a site waits to have approved, or None when it waits for nothing."""
    return p.sha if p.skip is Skip.APPROVAL else None


def approve_patch(
    d: ObservedDeployment, sha: str, by: str, now: float, *, cause: str = ""
) -> DeploymentPatch:
    """The write recording that `by` approved commit `sha` for this workload, with its Event."""
    who = by or "someone"
    note = f"approved {sha[:7]} for deploy" + (f" ({cause})" if cause else "")
    return DeploymentPatch(
        d.namespace,
        d.name,
        {APPROVED_SHA: sha, APPROVED_BY: who[:100], APPROVED_AT: rollout.stamp(now)},
        events=(KubeEvent("Normal", "Approved", f"{note} by {who}"[:1024]),),
        resource_version=d.resource_version,
        kind=d.kind,
    )


# --- deploy windows -------------------------------------------------------------------------


def window_gate(
    p: SitePlan,
    site_windows: Sequence[windows.Window],
    now: float,
    *,
    override: str | None = None,
    by: str = "",
    seen: dict[tuple[str, ...], windows.Verdict] | None = None,
) -> tuple[SitePlan, windows.Override | None]:
    """An update outside allowed time becomes a skip that says until when; with an override
    reason it goes, and the override to record comes back with it. `seen` keeps the verdict of
    each list of windows for one plan (sites sharing their windows are decided once)."""
    if p.action is not Action.UPDATE or not site_windows:
        return p, None
    key = tuple(w.name for w in site_windows)
    verdict = seen.get(key) if seen is not None else None
    if verdict is None:
        verdict = windows.decide(site_windows, now)
        if seen is not None:
            seen[key] = verdict
    if verdict.may_deploy:
        return p, None
    if override is None:
        until = verdict.until.timestamp() if verdict.until else None
        return _held_back(p, Skip.WINDOW, verdict.reason, retry_at=until), None
    try:
        record = windows.override(verdict, override, by, now, p.sha)
    except CommandError as exc:
        why = f"{verdict.reason}; override refused: {exc}"
        return _held_back(p, Skip.WINDOW, why), None
    if record is None:
        return p, None
    return replace(p, reason=f"{p.reason}; {record.text}", gated=_also(p, record.text)), record


def _also(p: SitePlan, text: str) -> str:
    return f"{p.gated}; {text}" if p.gated else text


def override_patch(p: SitePlan, record: windows.Override) -> DeploymentPatch:
    """The annotations and Event that record an override on the workload it let a deploy to."""
    return DeploymentPatch(
        p.site.namespace,
        p.site.deployment,
        windows.override_annotations(record),
        events=(KubeEvent("Warning", "WindowOverride", record.text),),
        kind=p.site.targets[0].kind,
    )


# --- a whole plan ---------------------------------------------------------------------------


def sources(by_name: Mapping[str, Site], selected: Sequence[Site]) -> tuple[Site, ...]:
    """Every site up the chains of the selected followers (their sources, theirs, ...);
    `by_name`: every site of the config by name."""
    out: dict[str, Site] = {}
    for site in selected:
        at = site
        while at.promote_from and at.promote_from in by_name and at.promote_from not in out:
            at = by_name[at.promote_from]
            out[at.name] = at
    return tuple(out.values())


def chain_root(by_name: Mapping[str, Site], site: Site) -> Site:
    """The site at the head of `site`'s chain (it follows a branch)."""
    seen = {site.name}
    while site.promote_from and site.promote_from in by_name:
        site = by_name[site.promote_from]
        if site.name in seen:
            break  # the loader refuses cycles
        seen.add(site.name)
    return site


def promote(
    site: Site,
    source_site: Site | None,
    source: ObservedDeployment | None,
    here: ObservedDeployment | None,
    *,
    now: float,
    history: Sequence[str] = (),
) -> tuple[promotion.Verdict, promotion.Observed, promotion.Observed]:
    """A follower's promotion verdict from its source's workload and its own."""
    seen_source = observed(source_site, source, now)
    seen_here = observed(site, here, now)
    return judge(site, seen_source, seen_here, now=now, history=history), seen_source, seen_here


def judge(
    site: Site,
    source: promotion.Observed,
    here: promotion.Observed,
    *,
    now: float,
    history: Sequence[str] = (),
) -> promotion.Verdict:
    """A follower's promotion verdict from what its source runs and what it runs itself (each
    of any delivery: `observed`, `delivered`)."""
    rule = promotion.Promotion(site.name, site.promote_from or "", site.soak)
    return promotion.decide(rule, site, source, here, now=now, history=history)


def delivered(
    p: SitePlan, at: ObservedDeployment | None, history: Sequence[str] = ()
) -> promotion.Observed:
    """What a site of another delivery (Helm, git) runs, as promotion judges it: its delivery's
    verdict says how its rollout stands, which commit failed and whether it is held; the
    records on the workload its delivery names (SiteDelivery.workload) say which commit the
    reconciler deployed, when, and since when that rollout is available. A git site's
    ``available-at`` is written only once its GitOps tool applied the commit, so its soak never
    starts before. A short SHA (a Helm description's) is the full one of the chain's history."""
    notes = at.annotations if at is not None else {}
    updated, available = promotion.rollout_times(notes)
    return promotion.Observed(
        sha=_full(notes.get(ann.SHA) or None, history),
        branch=notes.get(ann.BRANCH) or p.branch,
        updated_at=updated,
        available_at=available,
        rollout=p.rollout,
        progress=p.progress,
        failed_sha=_full(p.failed_sha, history),
        hold=p.reason if p.action is Action.HELD else None,
    )


def _full(sha: str | None, history: Sequence[str]) -> str | None:
    if sha is None or len(sha) >= 40 or len(sha) < 7:
        return sha
    return next((h for h in history if h.startswith(sha)), sha)


def observed(site: Site | None, d: ObservedDeployment | None, now: float) -> promotion.Observed:
    """What a site whose Deployment the reconciler patches runs, as promotion judges it."""
    if site is None or d is None:
        return promotion.Observed()
    names = [c.name for c in d.containers]
    container = site.container or (names[0] if len(names) == 1 else "")
    return promotion.observe(site, d, container, now)


def stamps(
    sites: Sequence[Site], observed: Mapping[str, ObservedDeployment], now: float
) -> list[DeploymentPatch]:
    """The ``available-at`` stamps the sources of followers lack (`promotion.available_patch`),
    keyed by site name in `observed`."""
    wanted = {s.promote_from for s in sites if s.promote_from}
    out = []
    for site in sites:
        d = observed.get(site.name)
        if site.name in wanted and d is not None:
            patch = promotion.available_patch(d, now)
            if patch is not None:
                out.append(patch)
    return out
