"""The app factory: builds the engine from the environment; tests inject their own parts here."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from reconciler.adapters.github import GitHubSettings, GitHubSource
from reconciler.adapters.kube import KubeCluster, api_client
from reconciler.adapters.registry import RegistryVerifier, Verifiers
from reconciler.adapters.webhook import WebhookSender
from reconciler.core.engine import Engine
from reconciler.core.notifier import NoteStore, Notifier
from reconciler.core.outbox import CommitLog, Outbox
from reconciler.core.ports import Cluster, HeadSource, ImageVerifier


@dataclass
class Parts:
    """What an Engine is made of; any part left None is built from the environment."""

    heads: HeadSource | None = None
    cluster: Cluster | None = None
    verifier: ImageVerifier | None = None
    kubeconfig: str | None = None
    kube_context: str | None = None


def build_engine(parts: Parts | None = None, env: Mapping[str, str] | None = None) -> Engine:
    """An Engine wired to GitHub, the cluster and registries (or to the injected parts)."""
    parts = parts or Parts()
    env = os.environ if env is None else env
    heads = parts.heads or GitHubSource(GitHubSettings.from_env(env))
    cluster = parts.cluster
    if cluster is None:
        kubeconfig = parts.kubeconfig or env.get("KUBECONFIG") or None
        cluster = KubeCluster(api_client(kubeconfig, parts.kube_context))
    verifier = parts.verifier
    if verifier is None:
        by_mode: dict[str, ImageVerifier] = {"registry": RegistryVerifier.from_env(env)}
        if isinstance(heads, GitHubSource):
            by_mode["checks"] = heads
        verifier = Verifiers(by_mode)
    return Engine(heads=heads, cluster=cluster, verifier=verifier)


def build_notifier(
    engine: Engine, env: Mapping[str, str] | None = None, *, web_url: str = "https://github.com"
) -> Notifier:
    """A Notifier posting through HTTPS, listing commits from GitHub and remembering what it
    said on the Deployments (each when the engine's parts can do it)."""
    env = os.environ if env is None else env
    commits = engine.heads if isinstance(engine.heads, CommitLog) else None
    store = engine.cluster if isinstance(engine.cluster, NoteStore) else None
    return Notifier(Outbox(WebhookSender(env), commits), store, web_url=web_url)
