"""The one composition root: builds the engine (CLI and serve) and the serve Process from Settings.

Tests inject their own parts here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from reconciler.adapters import kube, lease
from reconciler.adapters.delivery import WebhookSender
from reconciler.adapters.github import GitHubDeployments, GitHubSource
from reconciler.adapters.registry import RegistryVerifier, Verifiers
from reconciler.core.engine import Engine
from reconciler.core.notifier import NoteStore, Notifier
from reconciler.core.outbox import CommitLog, Outbox
from reconciler.core.ports import Cluster, HeadSource, ImageVerifier
from reconciler.settings import Settings

if TYPE_CHECKING:  # serve (Flask, APScheduler) is imported only when serving
    from reconciler.adapters.pubsub import PubSubTrigger
    from reconciler.serve.process import Process
    from reconciler.serve.service import Service

LEASE_NAME = "reconciler"  # k8s/lease-rbac.yaml grants get/update on this name only
HEALTH_CHECK_TTL = 10.0


@dataclass
class Parts:
    """What an Engine is made of; any part left None is built from the settings."""

    heads: HeadSource | None = None
    cluster: Cluster | None = None
    verifier: ImageVerifier | None = None
    kubeconfig: str | None = None
    kube_context: str | None = None


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
    return Engine(
        heads=heads,
        cluster=cluster,
        verifier=verifier,
        apply_concurrency=settings.apply_concurrency,
    )


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
    return Notifier(outbox, store, web_url=settings.github.web_url)


def build_process(config_path: str, settings: Settings) -> Process:
    """Everything `serve` runs in its worker: engine, Lease, Service, Pub/Sub, the WSGI app."""
    from reconciler.serve.app import create_app
    from reconciler.serve.commitinfo import CommitInfo
    from reconciler.serve.process import BackgroundTrigger, Process, cached
    from reconciler.serve.service import Service

    api = kube.api_client(settings.kubeconfig, in_cluster=settings.in_cluster)
    engine = build_engine(
        Parts(
            cluster=kube.KubeCluster(
                api, reporter=settings.identity, writes=settings.apply_concurrency
            )
        ),
        settings,
    )
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
    service = Service(
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
    )
    service.extra_health["kubernetes"] = cached(lambda: kube.ping(api), HEALTH_CHECK_TTL)
    triggers: list[BackgroundTrigger] = []
    for kind, subscription in settings.subscriptions:
        triggers.append(_pubsub(service, kind, subscription, settings))
    app = create_app(
        service,
        trigger_token=settings.trigger_token,
        webhook_secret=settings.webhook_secret,
        read_token=settings.read_token,
        reads_open=settings.reads_open,
    )
    return Process(service, app, triggers)


def _pubsub(service: Service, kind: str, subscription: str, settings: Settings) -> PubSubTrigger:
    """A Pub/Sub trigger for messages of ``kind`` on ``subscription``, with its health check."""
    from reconciler.adapters.pubsub import PubSubTrigger
    from reconciler.serve.events import pubsub_classifier

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
