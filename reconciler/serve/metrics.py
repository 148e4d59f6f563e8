"""Prometheus metrics of the service, in a registry of its own (one per app: tests make many)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from reconciler.core import leadtime
from reconciler.core.model import Action, Rollout, SiteResult, SyncReport
from reconciler.core.ports import RateLimit

# Lead-time buckets: a minute to a working day (seconds from the push to each stage).
LEAD_TIME_BUCKETS = (60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 7200, 14400, 28800)


def lead_time_histogram(r: CollectorRegistry) -> Histogram:
    """reconciler_lead_time_seconds{stage}. `stage` only: a `site` label would multiply the
    series by the sites (13 buckets each); per site, reconciler_site_lead_time_seconds has the
    last deploy's (site_metrics.py)."""
    return Histogram(
        "reconciler_lead_time_seconds",
        "Seconds from a commit's push to each stage of its deploy (checks, image, patched,"
        " applied, available), observed once per rollout that became available",
        ["stage"],
        buckets=LEAD_TIME_BUCKETS,
        registry=r,
    )


class Metrics:
    """The service's counters, histograms and gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.syncs = Counter(
            "reconciler_syncs",
            "Syncs run, by trigger and outcome",
            ["trigger", "outcome"],
            registry=r,
        )
        self.duration = Histogram(
            "reconciler_sync_duration_seconds",
            "Wall time of a sync",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
            registry=r,
        )
        self.updated = Counter(
            "reconciler_deployments_updated", "Deployments whose image was changed", registry=r
        )
        self.failures = Counter(
            "reconciler_site_failures",
            "Sites that failed in a sync, by reason",
            ["reason"],
            registry=r,
        )
        self.rate_limit = Gauge(
            "reconciler_github_rate_limit_remaining",
            "GitHub rate limit remaining, by resource",
            ["resource"],
            registry=r,
        )
        self.last_success = Gauge(
            "reconciler_last_successful_sync_timestamp_seconds",
            "Unix time at which the last sync with no failed site finished",
            registry=r,
        )
        self.sites = Gauge(
            "reconciler_sites", "Sites by state after the last sync", ["state"], registry=r
        )
        self.config_valid = Gauge(
            "reconciler_config_valid", "1 while sites.toml as last read is valid", registry=r
        )
        self.notifications = Counter(
            "reconciler_notifications",
            "Notifications by channel, event and outcome (delivered | undelivered)",
            ["channel", "event", "outcome"],
            registry=r,
        )
        self.trigger_failures = Counter(
            "reconciler_sync_errors",
            "Syncs that could not run at all (config, lease), by trigger",
            ["trigger"],
            registry=r,
        )

        self.events = Counter(
            "reconciler_events",
            "Events received (webhooks, Pub/Sub messages), by source, event and outcome",
            ["source", "event", "outcome"],
            registry=r,
        )
        self.rollouts = Counter(
            "reconciler_rollouts",
            "Rollouts of what the reconciler deployed, by outcome (available, failed)",
            ["outcome"],
            registry=r,
        )
        self.leader = Gauge(
            "reconciler_leader",
            "1 while this replica (pod) holds the Lease, for a sync or a rollback, else 0",
            ["pod"],
            registry=r,
        )
        self.rollbacks = Counter(
            "reconciler_rollbacks",
            "Failed rollouts rolled back to the image before them",
            registry=r,
        )
        self.lead_time = lead_time_histogram(r)

    def followed(self, result: SiteResult, before: Rollout | None) -> None:
        """A followed rollout's end: available, or failed and rolled back."""
        if result.applied:
            self.rollbacks.inc()
            self.rollouts.labels("failed").inc()
        elif before is Rollout.PROGRESSING and result.plan.rollout is Rollout.AVAILABLE:
            self.rollouts.labels("available").inc()
            self.lead_times(result)

    def lead_times(self, result: SiteResult) -> None:
        """The stages of a deploy whose rollout became available, once (the follower saw it)."""
        lead = result.plan.lead
        if lead is None or lead.deployed is None or lead.deployed.available is None:
            return
        for stage, seconds in leadtime.durations(lead.deployed).items():
            self.lead_time.labels(stage).observe(seconds)

    def record(self, report: SyncReport, limits: Mapping[str, RateLimit]) -> None:
        outcome = "ok" if report.ok else "failed"
        for trigger in report.trigger.split("+"):
            self.syncs.labels(trigger, outcome).inc()
        self.duration.observe(report.duration)
        self.updated.inc(report.updated if not report.dry_run else 0)
        for result in report.results:
            if result.action is Action.ROLLED_BACK and result.applied and not report.dry_run:
                self.rollbacks.inc()
                self.rollouts.labels("failed").inc()
            if result.action is Action.ERROR:
                kind = result.plan.error_kind
                self.failures.labels(str(kind) if kind else "unknown").inc()
        for resource, limit in limits.items():
            self.rate_limit.labels(resource).set(limit.remaining)
        if report.ok:
            self.last_success.set(report.finished_at)

    def notification(self, channel: str, event: str, delivered: bool) -> None:
        outcome = "delivered" if delivered else "undelivered"
        self.notifications.labels(channel, event, outcome).inc()

    def register(self, collector: Collector) -> None:
        self.registry.register(collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ClusterWatchCounts(Collector):
    """reconciler_cluster_watch_cache_total{cluster=...,count=...}: the same counts for the
    watch-fed caches of the named clusters ([clusters.NAME]), one series per cluster."""

    def __init__(self, counts: Callable[[], Mapping[str, Mapping[str, int]]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "reconciler_cluster_watch_cache",
            "The watch-fed caches of named clusters: requests made and events heard",
            labels=["cluster", "count"],
        )
        for cluster, counts in sorted(self.counts().items()):
            for name, value in sorted(counts.items()):
                family.add_metric([cluster, name], value)
        yield family


class WatchCounts(Collector):
    """reconciler_watch_cache_total{count=...}: what the watch-fed cache asked the API server
    (lists, watches, relists after 410 Gone, reconnects) and heard (events, bookmarks)."""

    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "reconciler_watch_cache",
            "The watch-fed workload cache: requests made and events heard, by count",
            labels=["count"],
        )
        for name, value in sorted(self.counts().items()):
            family.add_metric([name], value)
        yield family
