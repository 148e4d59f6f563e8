"""Notifications after real syncs: the state lives on the Deployment, so a restart is quiet."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from reconciler.adapters.delivery import WebhookSender
from reconciler.adapters.github import GitHubSource
from reconciler.adapters.kube import KubeCluster, api_client
from reconciler.core.config import sites as config
from reconciler.core.model import SyncRequest
from reconciler.core.notify.decide import NOTIFIED_ANNOTATION
from reconciler.settings import GitHubSettings
from reconciler.sync.engine import Engine
from reconciler.sync.notifier import Notifier
from reconciler.sync.outbox import Outbox
from testkit.controlplane import ControlPlane
from testkit.deployments import create_deployment, get_deployment, write_status
from testkit.github import GitHubStandIn
from testkit.github_fixtures import TOKEN
from testkit.webhook_receiver import Receiver
from tests.fakes import FakeVerifier

pytestmark = pytest.mark.controlplane


@pytest.fixture
def cluster(control_plane: ControlPlane) -> Iterator[KubeCluster]:
    api = api_client(str(control_plane.kubeconfig_path))
    yield KubeCluster(api, reporter="test")
    api.close()


def test_deploy_is_announced_once_across_restarts(
    cluster: KubeCluster,
    kube_api_client: Any,
    k8s_namespace: str,
    github: GitHubStandIn,
    receiver: Receiver,
) -> None:
    old = "0" * 40
    github.add_repo("acme/blog", {"main": old})
    new = github.set_branch("acme/blog", "main", message="Add search", author="Grace")
    create_deployment(kube_api_client, k8s_namespace, "blog", f"gcr.io/acme/blog:{old}")
    cfg = config.parse(
        f"""
[notify]
webhook = {{ url_env = "HOOK_URL" }}

[sites.blog]
repo = "acme/blog"
branch = "main"
namespace = "{k8s_namespace}"
container = "app"
image = "gcr.io/acme/blog:{{sha}}"
"""
    )
    source = GitHubSource(GitHubSettings(api_url=github.url, token=TOKEN))
    engine = Engine(heads=source, cluster=cluster, verifier=FakeVerifier())
    env = {"HOOK_URL": receiver.url("/hook")}

    def restarted_pod() -> Notifier:
        return Notifier(Outbox(WebhookSender(env), source, backoff=()), cluster)

    first = restarted_pod()
    report = engine.run(cfg, SyncRequest(trigger="schedule"))
    assert report.updated == 1
    assert first.observe(cfg, report) == []  # the rollout starts: nothing to announce yet
    # the next sync sees it done (no controller reports on it here: it counts as available)
    first.observe(cfg, engine.run(cfg, SyncRequest(trigger="schedule")))
    [got] = receiver.wait_for(1)
    body = got.json()
    assert (body["event"], body["old_sha"], body["new_sha"]) == ("deployed", None, new)
    d = get_deployment(kube_api_client, k8s_namespace, "blog")
    memory = json.loads(d["metadata"]["annotations"][NOTIFIED_ANNOTATION])
    assert memory["status"] == "in-sync" and memory["running"] == new
    generation = d["metadata"]["generation"]

    for _ in range(2):  # later syncs, each by a freshly started pod: nothing new to say
        pod = restarted_pod()
        report = engine.run(cfg, SyncRequest(trigger="schedule"))
        assert report.updated == 0
        assert pod.observe(cfg, report) == []
        assert pod.outbox.flush(10)
    assert len(receiver.got) == 1
    # the annotation is metadata: it never starts a rollout
    assert get_deployment(kube_api_client, k8s_namespace, "blog")["metadata"]["generation"] == (
        generation
    )

    newer = github.set_branch("acme/blog", "main", message="Fix search", author="Alan")
    for _ in range(2):  # deploy, then see it available, each sync by another pod
        restarted_pod().observe(cfg, engine.run(cfg, SyncRequest(trigger="schedule")))
    second = receiver.wait_for(2)[1].json()
    assert (second["old_sha"], second["new_sha"]) == (new, newer)
    assert [(c["subject"], c["author"]) for c in second["commits"]] == [("Fix search", "Alan")]
    first.outbox.close(1)


def test_a_deploy_the_follower_sees_done_says_what_was_deployed(
    cluster: KubeCluster,
    kube_api_client: Any,
    k8s_namespace: str,
    github: GitHubStandIn,
    receiver: Receiver,
) -> None:
    """#17: the rollout follower's plan has no branch head; its "deployed" message says what was
    deployed, not "no branch head for acme/blog@main"."""
    old = "0" * 40
    github.add_repo("acme/blog", {"main": old})
    new = github.set_branch("acme/blog", "main")
    create_deployment(kube_api_client, k8s_namespace, "blog", f"gcr.io/acme/blog:{old}")
    cfg = config.parse(
        f'[notify]\nwebhook = {{ url_env = "HOOK_URL" }}\nslack = {{ webhook_env = "SLACK" }}\n'
        f'[sites.blog]\nrepo = "acme/blog"\nbranch = "main"\nnamespace = "{k8s_namespace}"\n'
        'container = "app"\nimage = "gcr.io/acme/blog:{sha}"\n'
    )
    source = GitHubSource(GitHubSettings(api_url=github.url, token=TOKEN))
    engine = Engine(heads=source, cluster=cluster, verifier=FakeVerifier())
    env = {"HOOK_URL": receiver.url("/hook"), "SLACK": receiver.url("/slack")}
    notifier = Notifier(Outbox(WebhookSender(env), backoff=()), cluster)
    report = engine.run(cfg, SyncRequest(trigger="schedule"))
    assert report.updated == 1
    notifier.observe(cfg, report)  # the rollout starts
    write_status(kube_api_client, k8s_namespace, "blog", rollout="available")
    (site,) = cfg.sites
    followed = engine.follow(site)
    assert followed.plan.reason == "no branch head for acme/blog@main"  # the follower's plan
    assert notifier.observe_followed(cfg, followed) is not None
    got = {r.path: r.json() for r in receiver.wait_for(2)}
    want = f"deployed main@{new[:7]}, available 2/2"
    assert got["/hook"]["event"] == "deployed" and got["/hook"]["reason"] == want
    assert got["/slack"]["text"] == f"✅ blog deployed main@{new[:7]}: {want}"
    notifier.outbox.close(1)
