"""Sansio serve state: reports in; status, readiness, run and page data out. No I/O, no threads."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

from reconciler.core import leadtime
from reconciler.core.config.sites import Config
from reconciler.core.model import (
    Action,
    Site,
    SiteResult,
    SiteState,
    Skip,
    SyncReport,
    SyncRequest,
)
from reconciler.core.promotion import Promotion, chains

RUN_HISTORY = 200
CLI = "reconciler"  # how the verdicts' hints name the CLI: `reconciler resume blog`


def hint(reason: str, cli: str) -> str:
    """`reason` with its CLI hints naming the command people run here (RECONCILER_CLI_NAME)."""
    return reason.replace(f"`{CLI} ", f"`{cli} ")


COUNTED_STATES = (
    SiteState.IN_SYNC,
    SiteState.BEHIND,
    SiteState.FAILING,
    SiteState.PAUSED,
    SiteState.HELD,
    SiteState.ROLLED_BACK,
)


@dataclass
class ConfigState:
    """The last good config and, when the file is broken now, what is wrong with it."""

    good: Config | None = None
    error: str | None = None
    error_since: float | None = None
    loaded_at: float | None = None


@dataclass
class SiteRecord:
    """What the status page shows for one site: the last result that covered it."""

    result: SiteResult
    at: float
    run_id: str
    trigger: str


@dataclass(frozen=True)
class Notice:
    """An event reported on a site that deploys nothing (a deleted branch or image)."""

    at: float
    event: str
    reason: str


@dataclass
class RunRecord:
    """A submitted request, readable at /runs/<id>."""

    id: str
    request: SyncRequest
    future: Future[SyncReport]
    submitted: float
    sites: list[str] | None = field(default=None)


class Board:
    """Every site's last real result and the last report; the data behind /status and the page."""

    def __init__(self) -> None:
        self.sites: dict[str, SiteRecord] = {}
        self.notices: dict[str, Notice] = {}  # the last reported event of each site
        # since when each site not in sync has been so with the same head: (state, head), time
        self.since: dict[str, tuple[tuple[SiteState, str | None], float]] = {}
        self.last_report: SyncReport | None = None
        self.runs: OrderedDict[str, RunRecord] = OrderedDict()

    def shared(self, report: SyncReport) -> SyncReport:
        """`report` with each site's result that equals its last one (the same verdict again: a
        steady sync) being that very object. Up to RUN_HISTORY reports are kept for /runs:
        without this, every steady sync of 10,000 sites kept its own copy (about 20 MB)."""
        last = self.last_report.results if self.last_report is not None else ()
        before = {r.plan.site.name: r for r in last}
        out = []
        for new in report.results:
            name = new.plan.site.name
            record = self.sites.get(name)
            previous = before.get(name)
            if record is not None and record.result == new:
                out.append(record.result)
            elif previous is not None and previous == new:
                out.append(previous)
            else:
                out.append(new)
        return replace(report, results=tuple(out))

    def record(self, report: SyncReport) -> dict[SiteState, int]:
        """Take a finished report in (dry runs and plans change no site's state); the counts."""
        self.last_report = report
        if not report.plan_only and not report.dry_run:
            for result in report.results:
                self.sites[result.plan.site.name] = SiteRecord(
                    result, report.finished_at, report.run_id, report.trigger
                )
                self._track(result, report.started_at)
        return self.counts()

    def _track(self, result: SiteResult, at: float) -> None:
        """Keep since when a site has been out of sync in the same way (same state and head)."""
        name, key = result.plan.site.name, (result.state, result.plan.sha)
        if result.state is SiteState.IN_SYNC:
            self.since.pop(name, None)
        elif name not in self.since or self.since[name][0] != key:
            self.since[name] = (key, at)

    def counts(self) -> dict[SiteState, int]:
        """How many sites are in each state."""
        counts = dict.fromkeys(COUNTED_STATES, 0)
        for record in self.sites.values():
            counts[record.result.state] = counts.get(record.result.state, 0) + 1
        return counts

    def followed(self, result: SiteResult, at: float) -> dict[SiteState, int]:
        """Take in what following a site's rollout saw (a rollback, or its progress); the new
        counts when a site's state changed, else nothing (progress alone changes no count)."""
        record = self.sites.get(result.plan.site.name)
        if record is None:
            return {}
        was = record.result.state
        record.result = merged(record.result, result)
        self._track(record.result, at)
        if result.applied:
            record.at, record.trigger = at, "rollout"
        return self.counts() if record.result.state is not was else {}

    def keep_only(self, names: Collection[str]) -> None:
        """Forget the sites a reloaded config no longer has."""
        for gone in set(self.sites) - set(names):
            del self.sites[gone]
        for gone in set(self.notices) - set(names):
            del self.notices[gone]
        for gone in set(self.since) - set(names):
            del self.since[gone]

    def add_run(self, record: RunRecord) -> None:
        self.runs[record.id] = record
        while len(self.runs) > RUN_HISTORY:
            self.runs.popitem(last=False)


def status_view(
    board: Board,
    config: ConfigState,
    config_path: str,
    *,
    next_run: float | None,
    syncing: bool,
    web_url: str,
    now: float = 0.0,
) -> dict[str, Any]:
    """GET /status and the page: config, schedule, the last sync and every site's state."""
    cfg = config.good
    last = board.last_report
    return {
        "config": {
            "path": config_path,
            "valid": config.error is None,
            "error": config.error,
            "loaded_at": config.loaded_at,
        },
        "schedule": cfg.service.schedule if cfg else None,
        "next_run": next_run,
        "syncing": syncing,
        "last_sync": None
        if last is None
        else {
            "run_id": last.run_id,
            "trigger": last.trigger,
            "finished_at": last.finished_at,
            "duration_s": round(last.duration, 3),
            "summary": last.summary(),
            "ok": last.ok,
        },
        "sites": [
            site_view(site.name, site.repo, board.sites.get(site.name), web_url, now=now)
            | _notice(board.notices.get(site.name))
            | _since(board.since.get(site.name))
            for site in (cfg.sites if cfg else ())
        ],
        "pipelines": pipelines(cfg.sites) if cfg else [],
    }


def pipelines(sites: Sequence[Site]) -> list[list[str]]:
    """The promotion chains of sites.toml, each from the site that follows a branch through
    its followers (dev → staging → prod); sites that promote nothing are in none."""
    found = {s.name: Promotion(s.name, s.promote_from, s.soak) for s in sites if s.promote_from}
    return [list(chain) for chain in chains(found, [s.name for s in sites]) if len(chain) > 1]


def site_view(
    name: str, repo: str, record: SiteRecord | None, web_url: str, *, now: float = 0.0
) -> dict[str, Any]:
    """One site on the page: its last result, state, lead time, and links to the commits."""
    if record is None:
        return {
            "site": name,
            "repo": repo,
            "state": SiteState.UNKNOWN.value,
            "reason": "not synced yet",
        }
    data = record.result.as_dict()
    sha = data.get("head_sha") or data.get("sha")
    running = data.get("running_sha")
    failed = data.get("failed_sha")
    data.update(
        state=record.result.state.value,
        checked_at=record.at,
        run_id=record.run_id,
        trigger=record.trigger,
        head_url=f"{web_url}/{repo}/commit/{sha}" if sha else None,
        running_url=f"{web_url}/{repo}/commit/{running}" if running else None,
        failed_url=f"{web_url}/{repo}/commit/{failed}" if failed else None,
        branch_url=f"{web_url}/{repo}/tree/{data['branch']}" if data.get("branch") else None,
        lead=leadtime.as_dict(record.result.plan.lead, now),
    )
    return data


def _since(since: tuple[tuple[SiteState, str | None], float] | None) -> dict[str, Any]:
    """When a site not in sync first was so with this state and head (this replica saw it)."""
    return {} if since is None else {"since": since[1]}


def _notice(notice: Notice | None) -> dict[str, Any]:
    if notice is None:
        return {}
    return {"notice": {"at": notice.at, "event": notice.event, "reason": notice.reason}}


def readiness_view(
    config: ConfigState, checks: Mapping[str, str | None], *, stopping: bool
) -> dict[str, Any]:
    """GET /readyz: ready when the config is loaded and every check (None = ok) passes."""
    problems: dict[str, str | None] = {
        "config": None if config.good else f"no valid sites.toml: {config.error}",
        **checks,
    }
    if stopping:
        problems["shutdown"] = "shutting down"
    detail = {k: (v or "ok") for k, v in problems.items()}
    if config.error:
        detail["config_warning"] = config.error
    return {"ready": all(v is None for v in problems.values()), "checks": detail}


def run_view(record: RunRecord, lease_wait: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """GET /runs/<id>: queued (waiting for the Lease: who holds it, until when), running,
    failed (why) or done (with the results)."""
    out: dict[str, Any] = {"id": record.id, "sites": record.sites, "submitted": record.submitted}
    future = record.future
    if not future.done():
        out["state"] = "running" if future.running() and not lease_wait else "queued"
        if lease_wait:
            out["waiting_for_lease"] = dict(lease_wait)
        return out
    exc = future.exception()
    if exc is not None:
        out.update(state="failed", error=str(exc))
        return out
    out.update(report_dict(future.result(), record.sites))
    out["state"] = "done"
    return out


def report_dict(report: SyncReport, sites: Collection[str] | None = None) -> dict[str, Any]:
    """A report as JSON for a caller that asked for `sites` (None: every site): the results and
    `ok` are about those sites only, whatever else the (merged) run covered."""
    results = [r for r in report.results if sites is None or r.plan.site.name in sites]
    return {
        "run_id": report.run_id,
        "trigger": report.trigger,
        "ok": all(r.ok for r in results),
        "summary": report.summary(),
        "started_at": report.started_at,
        "finished_at": report.finished_at,
        "duration_s": round(report.duration, 3),
        "results": [r.as_dict() for r in results],
    }


def merged(stored: SiteResult, followed: SiteResult) -> SiteResult:
    """A site's last sync result, brought up to date with what following its rollout saw."""
    p = followed.plan
    if followed.applied:  # rolled back
        return replace(
            stored,
            applied=True,
            plan=replace(
                stored.plan,
                action=Action.ROLLED_BACK,
                reason=p.reason,
                rollout=p.rollout,
                progress=p.progress,
                failed_sha=p.failed_sha,
                target_image=p.target_image,
                current_image=p.current_image,
                running_sha=p.running_sha,
                changed_at=p.changed_at,
            ),
        )
    sha = stored.plan.sha
    if p.failed_sha and p.failed_sha == sha and stored.plan.action is not Action.ROLLED_BACK:
        return replace(  # rolled back by another replica (or a CLI sync) meanwhile
            stored,
            applied=False,
            plan=replace(
                stored.plan,
                action=Action.SKIP,
                skip=Skip.FAILED_COMMIT,
                reason=f"{sha[:7]} failed to roll out and was rolled back",
                rollout=p.rollout,
                progress=p.progress,
                failed_sha=p.failed_sha,
                current_image=p.current_image,
                running_sha=p.running_sha,
                changed_at=p.changed_at,
            ),
        )
    if p.current_image is None:  # the Deployment could not be read: nothing new
        return stored
    if p.action is Action.HELD:  # a person changed the image (seen on the watch): held now
        return replace(
            stored,
            applied=False,
            plan=replace(
                stored.plan,
                action=Action.HELD,
                skip=None,
                reason=p.reason,
                held_by=p.held_by,
                held_at=p.held_at,
                rollout=p.rollout,
                progress=p.progress,
                current_image=p.current_image,
                running_sha=p.running_sha,
            ),
        )
    lead = leadtime.followed(stored.plan.lead, p.lead)
    return replace(
        stored, plan=replace(stored.plan, rollout=p.rollout, progress=p.progress, lead=lead)
    )
