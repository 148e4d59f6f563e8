"""Per-site Prometheus metrics, computed when scraped: what runs, how far behind, last deploy."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from reconciler.core import leadtime
from reconciler.core.model import Action, Rollout, SiteResult, SiteState, SyncReport
from reconciler.core.rollout import state as rollout


@dataclass
class _Site:
    info: dict[str, str]
    behind_since: float | None = None  # when its current head was first seen not running
    head: str | None = None
    last_deploy: float | None = None
    commits_behind: int | None = None
    lead: dict[str, float] | None = None  # the last deploy's seconds from push to each stage


class SiteMetrics(Collector):
    """reconciler_site_info, _behind_seconds, _commits_behind, _last_deploy_timestamp_seconds,
    _lead_time_seconds{stage} and reconciler_site_rollouts_total{outcome}: one series per site
    (as of its last sync)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._sites: dict[str, _Site] = {}
        self._rollouts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def record(self, report: SyncReport) -> None:
        if report.dry_run or report.plan_only:
            return
        with self._lock:
            for result in report.results:
                self._take(result, report.finished_at)
                if result.applied and result.action is Action.UPDATE:
                    self._count(result.plan.site.name, "started")
                if result.applied and result.action is Action.ROLLED_BACK:
                    self._count(result.plan.site.name, "failed")

    def followed(self, result: SiteResult, before: Rollout | None) -> None:
        """What the background follower saw: a rollout that ended one way or the other."""
        name = result.plan.site.name
        with self._lock:
            if result.applied:
                self._count(name, "failed")
            elif before is Rollout.PROGRESSING and result.plan.rollout is Rollout.AVAILABLE:
                self._count(name, "available")
            lead = result.plan.lead
            if name in self._sites and lead is not None and lead.deployed is not None:
                self._sites[name].lead = leadtime.durations(lead.deployed)

    def commits_behind(self, name: str, count: int | None) -> None:
        with self._lock:
            if name in self._sites:
                self._sites[name].commits_behind = count

    def keep_only(self, names: set[str]) -> None:
        with self._lock:
            for gone in set(self._sites) - names:
                del self._sites[gone]

    def _count(self, name: str, outcome: str) -> None:
        self._rollouts[name, outcome] = self._rollouts.get((name, outcome), 0) + 1

    def _take(self, result: SiteResult, at: float) -> None:
        p = result.plan
        state = p.state(applied=result.applied)
        running = p.sha if result.applied else p.running_sha
        head = p.head_sha or p.sha
        old = self._sites.get(p.site.name)
        site = _Site(
            info={
                "site": p.site.name,
                "repo": p.site.repo,
                "branch": p.branch or "",
                "cluster": p.site.cluster_name,
                "namespace": p.site.namespace,
                "deployment": p.site.deployment,
                "running_sha": running or "",
                "head_sha": head or "",
                "state": state.value,
            },
            head=head,
            last_deploy=rollout.parse_time(p.changed_at) or (at if result.applied else None),
            commits_behind=old.commits_behind if old and old.head == head else None,
        )
        if p.lead is not None and p.lead.deployed is not None:
            site.lead = leadtime.durations(p.lead.deployed)
        elif old is not None:
            site.lead = old.lead
        if head and running != head and state is not SiteState.IN_SYNC:
            same = old is not None and old.head == head and old.behind_since is not None
            site.behind_since = old.behind_since if same and old else at
        self._sites[p.site.name] = site

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        labels = [
            "site",
            "repo",
            "branch",
            "cluster",
            "namespace",
            "deployment",
            "running_sha",
            "head_sha",
        ]
        info = GaugeMetricFamily(
            "reconciler_site_info",
            "1 per site, labelled with what it runs and its branch head (as of its last sync)",
            labels=[*labels, "state"],
        )
        behind = GaugeMetricFamily(
            "reconciler_site_behind_seconds",
            "Seconds since the branch head was first seen not running (0 when in sync)",
            labels=["site"],
        )
        commits = GaugeMetricFamily(
            "reconciler_site_commits_behind",
            "Commits between what runs and the branch head (when known)",
            labels=["site"],
        )
        deployed = GaugeMetricFamily(
            "reconciler_site_last_deploy_timestamp_seconds",
            "When the reconciler last changed the site's image",
            labels=["site"],
        )
        lead = GaugeMetricFamily(
            "reconciler_site_lead_time_seconds",
            "The last deploy's seconds from the push to each stage reached, per site",
            labels=["site", "stage"],
        )
        rollouts = CounterMetricFamily(
            "reconciler_site_rollouts",
            "Rollouts per site by outcome: started, available, failed (rolled back)",
            labels=["site", "outcome"],
        )
        with self._lock:
            for name, s in sorted(self._sites.items()):
                info.add_metric([s.info[k] for k in [*labels, "state"]], 1)
                since = s.behind_since
                behind.add_metric([name], max(0.0, now - since) if since else 0.0)
                if s.commits_behind is not None:
                    commits.add_metric([name], s.commits_behind)
                if s.last_deploy is not None:
                    deployed.add_metric([name], s.last_deploy)
                for stage, seconds in (s.lead or {}).items():
                    lead.add_metric([name, stage], seconds)
            for (name, outcome), count in sorted(self._rollouts.items()):
                rollouts.add_metric([name, outcome], count)
        yield from (info, behind, commits, deployed, lead, rollouts)
