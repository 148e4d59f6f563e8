"""Promotion with soak (pure, not wired yet): a site that follows another site instead of a branch.

A follower site names its source (``promote_from = "blog-staging"``) and how long the source
must have run a commit healthily first (``soak = "30m"``). `decide` gives the follower's
`Verdict` from three values and a clock value passed in, never read here: the `Promotion` (from
sites.toml), the source's `Observed` state and the follower's own, both read from their
Deployments by `observe` (annotations, rollout status, managedFields). Its rules, in order:

- nothing to promote: the source runs the commit the follower runs (its ``reconciler.dev/sha``),
  or the source runs no commit the reconciler recorded (a Deployment it never deployed to);
- blocked, failed here: the commit is the follower's ``reconciler.dev/failed-sha``. It failed on
  the follower and was rolled back there; the source keeps running it (the text says so);
- blocked, failed on the source: the source's rollout of the commit failed (ProgressDeadline or
  stuck pods: its state is failed) or the commit is the source's ``failed-sha``. A commit the
  source rolled back is never what the source runs afterwards (it runs the one before), so a
  rolled-back commit is never a candidate; the commit it returned to must soak again (below);
- blocked, held: a person holds the source (``reconciler hold`` or ``rollback``, or an image set by
  another field manager, as `rollout.hold_of` sees it). Nothing is promoted from a held source,
  not even what the person put there: after a person's image change ``reconciler.dev/sha`` no
  longer names what runs, so there is no commit to promote; an explicit hold says "leave this
  alone" (an investigation, a rollback to an older commit): it does not say "ship this
  further". The follower keeps what it runs; ``reconciler resume`` on the source lifts it;
- forward only: the follower never takes a commit older than the one it runs (`newer`). The order
  comes from the chain root's branch history that the sync already reads (``BranchHead.history``,
  newest first, bounded by RECONCILER_LOOKBACK): two commits in it are ordered by it; a candidate
  in it whose rival is not is newer (the rival is older than the window: a follower only ever
  runs what its source ran). Without the candidate in it, the deploy times decide: the source's
  ``updated-at`` after the follower's means the source took the commit after the follower took
  its own, which is later in a pipeline that only moves forward (or back to a commit the
  follower has not got); an unknown time blocks ("cannot tell");
- waiting: the source's rollout of the commit is not available now (progressing, or no controller
  report), or is but its availability is not recorded yet (``reconciler.dev/available-at``
  missing or older than ``updated-at``: a stamp from an earlier rollout);
- soaking: available for less than the soak ("blog-staging runs 3f2c1a9, available 12 of 30
  min"); ``due`` says when it will be ready, for whoever schedules the next look;
- ready: available for at least the soak (the edge counts: exactly 30 min is ready). The image is
  the follower's own template rendered for the commit (a production registry may differ), with
  ``{branch}`` the source's ``reconciler.dev/branch``; the engine verifies it like any target.

Level-triggered: every input is on the two Deployments, so the verdict after a restart is the one
before it. "Available since" is ``reconciler.dev/available-at`` (`AVAILABLE_AT`), proposed here:
nothing writes it yet. `available_patch` gives the write: the first observer that sees the
rollout of the recorded commit available with no valid stamp records the time it saw it. It
plugs in where the Deployment is in hand, ``Engine._follow_one``, right after
``p = _plan_one(self, site, {}, fresh)``: ``if act and (w := available_patch(fresh,
self.clock())): self.cluster.patch(w)``. The follower's ``tick`` follows with ``act=False``;
its one line: where it sees a tracked rollout turn available (``before`` progressing,
``final.plan.rollout`` available, as its metrics do), call ``self._roll_back(final.plan.site)``,
whose Lease-holding ``engine.follow`` re-reads the Deployment and so writes the stamp. A sync's
planner could carry the same patch in ``write`` for rollouts that finished while no replica
followed them. A rollout that finished while the reconciler was down is stamped late, so its
soak starts late: never early. A second replica or a restart finds the stamp valid and writes
nothing, so the soak never starts over.

Compared with Kargo (``requestedFreight[].sources.requiredSoakTime`` on the downstream Stage;
``Freight.HasSoakedIn`` / ``GetLongestSoak`` in its api/v1alpha1/freight_types.go): the same in
that the soak is set on the follower, is a minimum time in the upstream stage, and that a commit
not proven upstream (Kargo: not verified there) never qualifies. It differs in where the clock
starts and what it remembers: Kargo counts from when the Freight entered the upstream Stage
(``currentlyIn.since``) once verified there, and keeps the longest completed soak, so Freight
that already left the upstream Stage may still be promoted; here the clock starts when the
source's rollout became available (rollout time does not count), lives on the source's workload
(one commit: the one it runs now), and only what the source runs now is promoted. Kargo has no
forward-only rule (a person may promote older Freight); here a follower never moves backwards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from reconciler.core import annotations as ann
from reconciler.core.model import DeploymentPatch, ObservedDeployment, Rollout, Site
from reconciler.core.plan.template import render
from reconciler.core.rollout import state as rollout
from reconciler.core.windows import parse_duration

__all__ = [
    "AVAILABLE_AT",
    "GraphProblem",
    "Observed",
    "Promotion",
    "Stage",
    "Verdict",
    "available_patch",
    "chains",
    "decide",
    "newer",
    "observe",
    "parse_soak",
    "promotions",
    "rollout_times",
    "root",
]

AVAILABLE_AT = ann.AVAILABLE_AT
KEYS = ("promote_from", "soak")  # the site keys of sites.toml this module reads


@dataclass(frozen=True, slots=True)
class Promotion:
    """A follower site: the site it promotes from and the soak, in seconds (0: once available)."""

    site: str
    source: str
    soak: int = 0


@dataclass(frozen=True, slots=True)
class Observed:
    """What a site's Deployment says about the commit it runs (annotations, status, holds)."""

    sha: str | None = None  # reconciler.dev/sha
    branch: str | None = None  # reconciler.dev/branch
    updated_at: float | None = None  # reconciler.dev/updated-at: when it was deployed
    available_at: float | None = None  # reconciler.dev/available-at, None when stale or absent
    rollout: Rollout | None = None
    progress: str = ""
    failed_sha: str | None = None  # reconciler.dev/failed-sha
    hold: str | None = None  # why a person holds it (rollout.hold_of), None when nobody does


class Stage(StrEnum):
    """Where a follower's promotion stands."""

    CURRENT = "current"  # nothing to promote
    WAITING = "waiting"  # the source's rollout is not (recorded) available yet
    SOAKING = "soaking"
    READY = "ready"
    BLOCKED = "blocked"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The follower's promotion verdict: the commit at stake, a line for people and, when ready,
    the image to deploy; ``due``: when a soaking commit will be ready (seconds since the epoch)."""

    stage: Stage
    text: str
    sha: str | None = None
    image: str | None = None
    soaked: int = 0  # seconds the source has run it available
    due: float | None = None


def observe(site: Site, d: ObservedDeployment, container: str, now: float) -> Observed:
    """A site's `Observed` from its Deployment, ``container`` being the one the site manages."""
    notes = d.annotations
    state, progress = rollout.state(d)
    updated, available = rollout_times(notes)
    hold = rollout.hold_of(site, d, container, None, now)
    return Observed(
        sha=notes.get(ann.SHA) or None,
        branch=notes.get(ann.BRANCH) or None,
        updated_at=updated,
        available_at=available,
        rollout=state,
        progress=progress,
        failed_sha=notes.get(ann.FAILED_SHA) or None,
        hold=hold.reason if hold is not None else None,
    )


def rollout_times(notes: Mapping[str, str]) -> tuple[float | None, float | None]:
    """When the recorded commit was deployed and since when its rollout is available (None: an
    ``available-at`` stamped for an earlier rollout), from a workload's annotations."""
    updated = rollout.parse_time(notes.get(ann.UPDATED_AT))
    available = rollout.parse_time(notes.get(AVAILABLE_AT))
    if available is not None and (updated is None or available < updated):
        available = None  # stamped for an earlier rollout
    return updated, available


def available_patch(d: ObservedDeployment, now: float) -> DeploymentPatch | None:
    """The ``available-at`` stamp to write when the rollout of the recorded commit is available
    and not stamped since it was deployed; None when there is nothing to write."""
    notes = d.annotations
    if not notes.get(ann.SHA) or rollout.state(d)[0] is not Rollout.AVAILABLE:
        return None
    updated = rollout.parse_time(notes.get(ann.UPDATED_AT))
    stamped = rollout.parse_time(notes.get(AVAILABLE_AT))
    if stamped is not None and (updated is None or stamped >= updated):
        return None
    return DeploymentPatch(
        d.namespace,
        d.name,
        {AVAILABLE_AT: rollout.stamp(now)},
        resource_version=d.resource_version,
        kind=d.kind,
    )


def decide(
    p: Promotion,
    follower: Site,
    source: Observed,
    here: Observed,
    *,
    now: float,
    history: Sequence[str] = (),
) -> Verdict:
    """The follower's verdict at ``now``; ``history`` is the chain root's branch history (shas,
    newest first) when the sync read it."""
    sha, name = source.sha, p.source
    if sha is None:
        return Verdict(Stage.CURRENT, f"nothing to promote: {name} runs no recorded commit")
    short = sha[:7]
    if sha == here.sha:
        return Verdict(Stage.CURRENT, f"runs {short} like {name}", sha)
    if sha == here.failed_sha:
        return Verdict(Stage.BLOCKED, f"blocked: {short} failed here ({name} keeps it)", sha)
    if source.rollout is Rollout.FAILED or sha == source.failed_sha:
        return Verdict(Stage.BLOCKED, f"blocked: {short} failed on {name}", sha)
    if source.hold is not None:
        return Verdict(Stage.BLOCKED, f"blocked: {name} is held ({source.hold})", sha)
    order = newer(sha, source, here, history)
    if order is not True:
        ran = (here.sha or "?")[:7]
        why = "older than" if order is False else "cannot tell whether it is newer than"
        text = f"blocked: {name} runs {short}, {why} {ran} here (forward only)"
        return Verdict(Stage.BLOCKED, text, sha)
    return _soak(p, follower, source, now)


def _soak(p: Promotion, follower: Site, source: Observed, now: float) -> Verdict:
    sha, name = source.sha or "", p.source
    short = sha[:7]
    if source.rollout is not Rollout.AVAILABLE:
        state = source.rollout.value if source.rollout else "not reported"
        progress = f", {source.progress}" if source.progress else ""
        return Verdict(Stage.WAITING, f"{name} rolls out {short} ({state}{progress})", sha)
    if source.available_at is None:
        return Verdict(
            Stage.WAITING, f"{name} runs {short}, available; its soak starts when recorded", sha
        )
    soaked = int(max(0.0, now - source.available_at))
    if soaked < p.soak:
        text = f"{name} runs {short}, available {soaked // 60} of {_minutes(p.soak)} min"
        return Verdict(Stage.SOAKING, text, sha, soaked=soaked, due=source.available_at + p.soak)
    image = render(
        follower.image,
        owner=follower.owner,
        repo=follower.repo_name,
        branch=source.branch or "",
        sha=sha,
    )
    text = f"ready to promote {short} ({name}: available {soaked // 60} min)"
    return Verdict(Stage.READY, text, sha, image=image, soaked=soaked)


def _minutes(seconds: int) -> str:
    return str(seconds // 60) if seconds % 60 == 0 else f"{seconds / 60:.1f}"


def newer(sha: str, source: Observed, here: Observed, history: Sequence[str] = ()) -> bool | None:
    """Whether ``sha`` (what the source runs) is newer than what the follower runs; None when
    that cannot be told (see the module's forward-only rule)."""
    if here.sha is None:
        return True  # nothing recorded runs here: the first promotion
    if sha in history:
        return here.sha not in history or history.index(sha) < history.index(here.sha)
    if here.sha in history:
        return False  # the follower's commit is in the window and the candidate is not
    if source.updated_at is None or here.updated_at is None:
        return None
    return source.updated_at > here.updated_at


# --- sites.toml: the promotion graph ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GraphProblem:
    """One problem of the promotion graph: where in sites.toml (for the loader's file:line), what,
    and the site it belongs to."""

    where: tuple[str, ...]
    message: str
    site: str


def parse_soak(value: object) -> int:
    """A soak in seconds: a duration like the windows' ("30m", "1h30m", "2h", "1d"); ValueError
    otherwise."""
    if not isinstance(value, str):
        raise ValueError(f'"soak" must be a string like "30m" or "1h30m", not {value!r}')
    try:
        span = parse_duration(value)
    except ValueError as exc:
        raise ValueError(f'"soak": {exc}') from None
    return int(span / timedelta(seconds=1))


def promotions(
    raw_sites: Mapping[str, Any],
) -> tuple[dict[str, Promotion], list[GraphProblem]]:
    """The followers of the [sites.NAME] tables (``promote_from``, ``soak``) and every problem of
    the graph: an unknown source, a cycle, ``branch`` beside ``promote_from``, a repository other
    than the source's, a malformed soak, a soak without a source. A site's ``branch`` from
    [defaults] does not count: a follower has none."""
    found: dict[str, Promotion] = {}
    problems: list[GraphProblem] = []
    for name, raw in raw_sites.items():
        if not isinstance(raw, Mapping):
            continue  # the loader reports it
        promotion = _follower(name, raw, raw_sites, problems)
        if promotion is not None:
            found[name] = promotion
    for cycle in _cycles(found):
        text = " → ".join((*cycle, cycle[0]))
        for name in cycle:
            problems.append(
                GraphProblem(("sites", name, "promote_from"), f"promotion cycle: {text}", name)
            )
    return found, problems


def _follower(
    name: str, raw: Mapping[str, Any], raw_sites: Mapping[str, Any], problems: list[GraphProblem]
) -> Promotion | None:
    where = ("sites", name)
    source = raw.get("promote_from")
    soak = 0
    if "soak" in raw:
        try:
            soak = parse_soak(raw["soak"])
        except ValueError as exc:
            problems.append(GraphProblem((*where, "soak"), str(exc), name))
        if source is None:
            text = '"soak" needs "promote_from": it is how long the source runs a commit first'
            problems.append(GraphProblem((*where, "soak"), text, name))
    if source is None:
        return None
    at = (*where, "promote_from")
    if not isinstance(source, str) or not source.strip():
        problems.append(GraphProblem(at, '"promote_from" must name a site', name))
        return None
    if source not in raw_sites:
        known = ", ".join(sorted(n for n in raw_sites if n != name)) or "none"
        text = f'"promote_from" names unknown site "{source}" (sites: {known})'
        problems.append(GraphProblem(at, text, name))
    elif isinstance(raw_sites[source], Mapping):
        theirs, ours = raw_sites[source].get("repo"), raw.get("repo")
        if isinstance(theirs, str) and isinstance(ours, str) and theirs != ours:
            text = f'"repo" must be {source}\'s ("{theirs}"): it promotes {source}\'s commits'
            problems.append(GraphProblem((*where, "repo"), text, name))
    if "branch" in raw:
        text = 'a site has "branch" or "promote_from", not both: it follows a branch or a site'
        problems.append(GraphProblem((*where, "branch"), text, name))
    return Promotion(name, source, soak)


def _cycles(found: Mapping[str, Promotion]) -> list[tuple[str, ...]]:
    """Every cycle of source links once, as commits would flow (source → follower), starting at
    its first site in config order."""
    order = {name: i for i, name in enumerate(found)}
    cycles: list[tuple[str, ...]] = []
    done: set[str] = set()
    for start in found:
        path: list[str] = []
        at: str | None = start
        while at is not None and at in found and at not in done and at not in path:
            path.append(at)
            at = found[at].source
        if at is not None and at in path:
            loop = path[path.index(at) :][::-1]  # in the direction commits flow
            first = min(range(len(loop)), key=lambda i: order[loop[i]])
            cycles.append(tuple(loop[first:] + loop[:first]))
        done.update(path)
    return cycles


def root(found: Mapping[str, Promotion], site: str) -> str:
    """The site at the head of ``site``'s chain (whose branch history orders its commits); the
    graph must have no cycle (`promotions` reports them)."""
    seen = {site}
    while site in found:
        site = found[site].source
        if site in seen:
            raise ValueError(f"promotion cycle through {site}")
        seen.add(site)
    return site


def chains(found: Mapping[str, Promotion], names: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """Each chain for display, from its root (a site that follows a branch) through its followers,
    a source before its followers and siblings in config order (``names``): ("dev", "staging",
    "prod"). Sites on a cycle are in none."""
    followers: dict[str, list[str]] = {}
    for name in names:
        if name in found:
            followers.setdefault(found[name].source, []).append(name)
    out: list[tuple[str, ...]] = []
    for name in names:
        if name in found or name not in followers:
            continue
        chain: list[str] = []
        stack = [name]
        while stack:
            at = stack.pop()
            chain.append(at)
            stack.extend(reversed(followers.get(at, [])))
        out.append(tuple(chain))
    return tuple(out)
