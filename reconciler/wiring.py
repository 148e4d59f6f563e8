"""The one composition root: builds the engine (CLI and serve) and the serve Process from Settings.

Tests inject their own parts here.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.adapters import kube, kubecache, lease
from reconciler.adapters.delivery import WebhookSender
from reconciler.adapters.github import GitHubDeployments, GitHubSource
from reconciler.adapters.gitrepo import GitRepoWriter
from reconciler.adapters.helm import HelmCLI
from reconciler.adapters.registry import RegistryVerifier, Verifiers
from reconciler.core.errors import ErrorKind, ReconcilerError
from reconciler.core.model import DEPLOYMENT, GIT, HELM, ClusterRef, Site
from reconciler.core.ports import (
    BackgroundTrigger,
    Cluster,
    CommitLog,
    ConfigRepo,
    HeadSource,
    ImageVerifier,
    NoteStore,
    SiteDelivery,
)
from reconciler.settings import LEASE_WAIT_MARGIN, Settings
from reconciler.sync.clusters import Clusters, Connect
from reconciler.sync.delivery import Deliveries
from reconciler.sync.engine import Engine
from reconciler.sync.gitops import GitDelivery
from reconciler.sync.helmdelivery import HelmDelivery
from reconciler.sync.notifier import Notifier
from reconciler.sync.outbox import Outbox

if TYPE_CHECKING:  # serve (Flask, APScheduler) is imported only when serving
    from reconciler.adapters.pubsub import PubSubTrigger
    from reconciler.core.config.sites import Config
    from reconciler.core.model import LeaseRecord
    from reconciler.core.ports import Lease
    from reconciler.serve.commitinfo import CommitInfo
    from reconciler.serve.process import Process
    from reconciler.serve.service import Service

log = logging.getLogger(__name__)

LEASE_NAME = "reconciler"  # k8s/lease-rbac.yaml grants get/update on this name only
HEALTH_CHECK_TTL = 10.0
FIRST_READY_WAIT = 2.0  # seconds the first /readyz waits for the cache's first LISTs
LEASE_SECONDS = 60.0  # serve.leader.LEASE_SECONDS: the defaults of build_service


@dataclass
class Parts:
    """What an Engine is made of; any part left None is built from the settings."""

    heads: HeadSource | None = None
    cluster: Cluster | None = None
    verifier: ImageVerifier | None = None
    kubeconfig: str | None = None
    kube_context: str | None = None
    connect: Connect | None = None  # builds a [clusters.NAME]'s port; default: kube_connect
    deliveries: dict[str, SiteDelivery] | None = None  # by Site.delivery ("helm", "git")
    repos: ConfigRepo | None = None  # the git delivery's configuration repositories
    clock: Callable[[], float] | None = None  # the engine's clock (windows, soak); default time


def kube_connect(settings: Settings) -> Callable[[ClusterRef], kube.KubeCluster]:
    """How a named cluster's port is built (a Connect): its kubeconfig file (default: the
    reconciler's own, KUBECONFIG) and context; never the pod's in-cluster identity, which is
    the home cluster's."""

    def connect(ref: ClusterRef) -> kube.KubeCluster:
        api = _named_api(settings, ref)
        return kube.KubeCluster(api, reporter=settings.identity, writes=settings.apply_concurrency)

    return connect


def _named_api(settings: Settings, ref: ClusterRef) -> object:
    """An API client of a named cluster: its kubeconfig (else KUBECONFIG) and context."""
    return kube.api_client(ref.kubeconfig or settings.kubeconfig, ref.context)


def kubeconfig_stamp(ref: ClusterRef) -> object:
    """The identity of a named cluster's kubeconfig file now (None: missing): a Secret volume
    swaps it for a new file when the token in it is rotated."""
    try:
        st = os.stat(ref.kubeconfig) if ref.kubeconfig else None
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size) if st else None


def build_engine(parts: Parts | None, settings: Settings) -> Engine:
    """An Engine wired to GitHub, the cluster and registries (or to the injected parts)."""
    parts = parts or Parts()
    heads = parts.heads or GitHubSource(settings.github)
    cluster = parts.cluster
    if cluster is None:
        api = kube.api_client(
            parts.kubeconfig or settings.kubeconfig,
            parts.kube_context,
            in_cluster=settings.in_cluster,
        )
        cluster = kube.KubeCluster(
            api, reporter=settings.identity, writes=settings.apply_concurrency
        )
    verifier = parts.verifier
    if verifier is None:
        by_mode: dict[str, ImageVerifier] = {"registry": RegistryVerifier.from_settings(settings)}
        if isinstance(heads, GitHubSource):
            by_mode["checks"] = heads
        verifier = Verifiers(by_mode)
    clusters = Clusters(cluster, parts.connect or kube_connect(settings), kubeconfig_stamp)
    return Engine(
        heads=heads,
        cluster=cluster,
        verifier=verifier,
        apply_concurrency=settings.apply_concurrency,
        clusters=clusters,
        deliveries=_deliveries(parts, settings, heads, clusters),
        **({"clock": parts.clock} if parts.clock else {}),
    )


def _deliveries(
    parts: Parts, settings: Settings, heads: HeadSource, clusters: Clusters
) -> Deliveries:
    """Helm and git delivery in the home cluster (unless injected) and in each named one: helm
    runs with the home kubeconfig or the cluster's own (one HelmCLI, one helm home, per
    cluster), reads and records go through the cluster's port. Helm runs only for sites with a
    [sites.NAME.helm] table; GitHub is asked only for sites with a [sites.NAME.git] table."""
    injected = dict(parts.deliveries or {})
    home_config = parts.kubeconfig or settings.kubeconfig
    repos = parts.repos or GitRepoWriter(settings.github, bearer=_bearer(heads))
    helms: dict[ClusterRef | None, HelmCLI] = {}
    lock = threading.Lock()

    def helm_of(ref: ClusterRef | None) -> HelmCLI:
        kubeconfig = (ref.kubeconfig if ref else None) or home_config
        with lock:
            if ref not in helms:
                helms[ref] = HelmCLI(
                    settings.helm_binary,
                    kubeconfig=Path(kubeconfig) if kubeconfig else None,
                    kube_context=ref.context if ref else parts.kube_context,
                )
            return helms[ref]

    def build(name: str, ref: ClusterRef | None) -> SiteDelivery:
        port = clusters.get(ref)  # a ClusterError naming the cluster: its sites' error
        if name == HELM:
            return HelmDelivery(helm_of(ref), port)
        if name == GIT:
            commits = heads if isinstance(heads, CommitLog) else None
            clock = parts.clock or time.time
            return GitDelivery(
                repos, port, commits=commits, clock=clock, web_url=settings.github.web_url
            )
        raise ReconcilerError(f'delivery "{name}" is not available', kind=ErrorKind.INTERNAL)

    home = {name: injected.get(name) or build(name, None) for name in (HELM, GIT)}

    def remote(name: str, ref: ClusterRef) -> SiteDelivery:
        if name in injected:  # a test's own delivery serves its home cluster only
            why = f'delivery "{name}" is not available for {ref} in this process'
            raise ReconcilerError(why, kind=ErrorKind.INTERNAL)
        return build(name, ref)

    return Deliveries({**injected, **home}, remote)


def _bearer(heads: object) -> Callable[[], str | None] | None:
    """The token the reads use (a GitHub App installation's too), for config-repository writes."""
    return heads.bearer if isinstance(heads, GitHubSource) else None


def build_notifier(engine: Engine, settings: Settings) -> Notifier:
    """A Notifier posting over HTTPS, listing commits from GitHub, recording GitHub Deployments
    (with credentials) and remembering what it said on the Deployments (each when the engine's
    parts can do it)."""
    commits = engine.heads if isinstance(engine.heads, CommitLog) else None
    store = engine.cluster if isinstance(engine.cluster, NoteStore) else None
    deployments = None
    if isinstance(engine.heads, GitHubSource) and settings.github.authenticated:
        deployments = GitHubDeployments(engine.heads)
    outbox = Outbox(WebhookSender(settings.environ), commits, deployments=deployments)
    return Notifier(
        outbox, store, web_url=settings.github.web_url, store_for=lambda s: _store(engine, s)
    )


def _store(engine: Engine, site: Site) -> NoteStore | None:
    """Where the notifier remembers what it said about `site`: on its own cluster."""
    try:
        port = engine.cluster_of(site)
    except ReconcilerError:
        return None
    return port if isinstance(port, NoteStore) else None


def build_service(
    config_path: str,
    engine: Engine,
    *,
    lease: Lease | None = None,
    lease_record: Callable[[], LeaseRecord] | None = None,
    identity: str = "",
    lease_wait: float = LEASE_SECONDS + LEASE_WAIT_MARGIN,
    lease_renew_every: float = LEASE_SECONDS / 4,
    lease_renew_deadline: float = LEASE_SECONDS * 2 / 3,
    clock: Callable[[], float] = time.time,
    web_url: str = "https://github.com",
    notifier: Notifier | None = None,
    commit_info: CommitInfo | None = None,
    cli_name: str = "reconciler",
    cache: kubecache.WorkloadCaches | None = None,
) -> Service:
    """The Service and its parts: the runner, the schedule and the follower bound to it, the
    Lease shared by runner and follower (its holder fences the engine's patches), the metrics;
    with a watch-fed `cache` (the engine's cluster reads it), the follower waits on its events,
    it watches the namespaces of every sites.toml read, and /readyz waits for its first LISTs."""
    from reconciler.serve.follower import Follower, SharedLease
    from reconciler.serve.leader import LeaseHolder
    from reconciler.serve.metrics import Metrics
    from reconciler.serve.service import Service
    from reconciler.serve.site_metrics import SiteMetrics
    from reconciler.serve.triggers.schedule import Schedule
    from reconciler.sync.runner import Runner

    shared = SharedLease(lease) if lease is not None else None  # runner and follower
    leader = None
    if shared is not None:
        leader = LeaseHolder(
            shared,
            wait=lease_wait,
            renew_every=lease_renew_every,
            renew_deadline=lease_renew_deadline,
        )
        engine.fence = leader.fence  # a lost Lease stops this replica's patches
    metrics, site_metrics = Metrics(), SiteMetrics(clock)
    metrics.register(site_metrics)
    if notifier is not None:
        notifier.outbox.on_result = metrics.notification
    service = Service(
        config_path,
        engine,
        metrics=metrics,
        site_metrics=site_metrics,
        leader=leader,
        lease=shared,
        lease_record=lease_record,
        identity=identity,
        clock=clock,
        web_url=web_url,
        notifier=notifier,
        commit_info=commit_info,
        cli_name=cli_name,
    )
    engine.pushed = service.pushed_at  # push webhooks' times: the lead time's "pushed"
    if cache is not None:
        watch_namespaces(service, cache)
    service.attach(
        Runner(service.run),
        Schedule(service.submit),
        Follower(
            engine, service.good_config, on_result=service.followed, lease=shared, cache=cache
        ),
    )
    if shared is not None:
        shared.on_taken_over = service.taken_over  # follow what another replica left running
    metrics.leader.labels(identity).set_function(lambda: float(service.leading()))
    return service


def watch_namespaces(service: Service, cache: kubecache.WorkloadCaches) -> None:
    """The caches watch, per kind, the namespaces of every valid sites.toml's sites in the home
    cluster that have targets of that kind; /readyz says not ready until each has listed them."""
    watched: dict[str, set[str]] = {}

    def follow(config: Config) -> None:
        wanted: dict[str, set[str]] = {}
        for site in config.sites:
            if site.cluster is None:  # sites of named clusters are LISTed there
                for target in site.targets:
                    wanted.setdefault(target.kind, set()).add(site.namespace)
        if wanted == watched:
            return
        try:
            cache.set_namespaces(wanted)
        except RuntimeError as exc:  # a thread that would not end: the others go on
            log.warning("re-scoping the workload cache: %s", exc)
        watched.clear()
        watched.update(wanted)

    first = threading.Event()

    def ready() -> str | None:
        if not first.is_set():  # the first probe after start waits a moment for the LISTs
            first.set()
            cache.wait_until_synced(FIRST_READY_WAIT)
        if cache.synced:
            return None
        return "the workload cache has not listed every namespace of sites.toml yet"

    service.on_config.append(follow)
    service.extra_health["watch"] = ready
    from reconciler.serve.metrics import WatchCounts

    service.metrics.register(WatchCounts(cache.counts))


def _cluster_caches(settings: Settings) -> kubecache.ClusterCaches:
    """serve's watch-fed caches of the named clusters, each with clients of that cluster's
    kubeconfig and context, over the port kube_connect builds."""
    return kubecache.ClusterCaches(lambda ref: _named_api(settings, ref), kube_connect(settings))


def watch_clusters(service: Service, remote: kubecache.ClusterCaches) -> None:
    """The named clusters' caches watch the namespaces of their sites in every valid sites.toml
    read; their counts are reconciler_cluster_watch_cache_total{cluster=...}. /readyz does not
    wait for them: a site whose namespace is not listed yet is read by LIST."""
    from reconciler.serve.metrics import ClusterWatchCounts

    service.on_config.append(lambda config: remote.follow(config.sites))
    service.metrics.register(ClusterWatchCounts(remote.counts))


def build_process(config_path: str, settings: Settings) -> Process:
    """Everything `serve` runs in its worker: engine, Lease, Service, Pub/Sub, the WSGI app."""
    from reconciler.serve.app import create_app
    from reconciler.serve.commitinfo import CommitInfo
    from reconciler.serve.process import Process, cached

    api = kube.api_client(settings.kubeconfig, in_cluster=settings.in_cluster)
    listing = kube.KubeCluster(api, reporter=settings.identity, writes=settings.apply_concurrency)
    cluster: Cluster = listing
    cache = remote = None
    if settings.watch_cache:  # the namespaces come with the first read of sites.toml
        # clients of its own: one connection per watched namespace, none taken from the patches
        cache = kubecache.WorkloadCaches(
            lambda: kube.api_client(settings.kubeconfig, in_cluster=settings.in_cluster)
        )
        more = {k: c for k, c in cache.by_kind.items() if k != DEPLOYMENT}
        cluster = kubecache.CachedCluster(cache.deployments, listing, more)
        remote = _cluster_caches(settings)
    connect = remote.connect if remote is not None else None
    engine = build_engine(Parts(cluster=cluster, connect=connect), settings)
    the_lease = None
    if settings.lease_active:
        assert settings.lease_namespace is not None
        the_lease = lease.KubeLease(
            api,
            settings.lease_namespace,
            LEASE_NAME,
            settings.identity,
            duration=settings.lease_seconds,
        )
    service = build_service(
        config_path,
        engine,
        lease=the_lease,
        lease_record=the_lease.record if the_lease is not None else None,
        identity=settings.identity,
        lease_wait=settings.lease_wait,
        lease_renew_every=settings.lease_seconds / 4,
        lease_renew_deadline=settings.lease_seconds * 2 / 3,
        web_url=settings.github.web_url,
        cli_name=settings.cli_name,
        notifier=build_notifier(engine, settings),
        commit_info=CommitInfo(engine.heads) if isinstance(engine.heads, CommitLog) else None,
        cache=cache,
    )
    service.extra_health["kubernetes"] = cached(lambda: kube.ping(api), HEALTH_CHECK_TTL)
    triggers: list[BackgroundTrigger] = []
    if remote is not None:  # stopped with the triggers, before the home cache
        watch_clusters(service, remote)
        triggers.append(remote)
    for kind, subscription in settings.subscriptions:
        triggers.append(_pubsub(service, kind, subscription, settings))
    app = create_app(
        service,
        trigger_token=settings.trigger_token,
        webhook_secret=settings.webhook_secret,
        read_token=settings.read_token,
        reads_open=settings.reads_open,
    )
    return Process(service, app, triggers, cache=cache)


def _pubsub(service: Service, kind: str, subscription: str, settings: Settings) -> PubSubTrigger:
    """A Pub/Sub trigger for messages of ``kind`` on ``subscription``, with its health check."""
    from reconciler.adapters.pubsub import PubSubTrigger
    from reconciler.serve.triggers.messages import pubsub_classifier

    trigger = PubSubTrigger(
        subscription,
        service.submit_future,
        pubsub_classifier(service, kind),
        trigger="pubsub" if kind == "scheduler" else kind,
        emulator_host=settings.pubsub_emulator_host,
    )
    name = "pubsub" if kind == "scheduler" else f"pubsub-{kind}"
    service.extra_health[name] = lambda: (
        None if trigger.running else f"Pub/Sub {subscription}: {trigger.last_error}"
    )
    return trigger
