"""GitHub Deployments following rollouts: every request and answer checked against the schema."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from reconciler.adapters.github import GitHubDeployments, GitHubSource
from reconciler.core.config import sites as config
from reconciler.core.notify.config import Channel, ChannelKind, EventKind
from reconciler.core.notify.render import Notification
from reconciler.settings import GitHubSettings
from reconciler.sync.outbox import Outbox
from testkit.controlplane import LocalCluster, crashloop_sha, wait_for
from testkit.github import GitHubStandIn
from testkit.github import rest as standin_rest
from testkit.github_fixtures import TOKEN
from testkit.rollout_world import on_local_cluster

STATUS = "http://status.test"


class NoHttp:
    def send(self, channel: Channel, notification: Notification) -> None:
        raise AssertionError(f"no chat channel is configured, got {notification.event}")


def notification(event: EventKind, new: str, old: str | None = None) -> Notification:
    return Notification(
        id=uuid.uuid4().hex,
        event=event,
        at=0.0,
        reason="rollout of x failed (CrashLoopBackOff)",
        site="blog",
        repo="acme/blog",
        branch="main",
        namespace="web",
        deployment="blog",
        old_sha=old,
        new_sha=new,
        status_url=STATUS,
    )


def states(github: GitHubStandIn) -> dict[str, list[str]]:
    return {d.sha: [s.state for s in d.statuses] for d in github.deployments("acme/blog")}


def test_statuses_follow_deploying_deployed_and_rolled_back(github: GitHubStandIn) -> None:
    standin_rest.REQUEST_VIOLATIONS.clear()
    github.add_repo("acme/blog", {"main": "0" * 40})
    good = github.set_branch("acme/blog", "main")
    bad = github.set_branch("acme/blog", "main")
    source = GitHubSource(GitHubSettings(api_url=github.url, token=TOKEN))
    box = Outbox(NoHttp(), deployments=GitHubDeployments(source), backoff=())
    channel = Channel(ChannelKind.GITHUB_DEPLOYMENTS, environment="production-blog")
    for n in (
        notification(EventKind.DEPLOYING, good),
        notification(EventKind.DEPLOYED, good),
        notification(EventKind.DEPLOYING, bad),
        notification(EventKind.ROLLED_BACK, bad, old=good),
    ):
        box.post(n, [channel])
        assert box.flush(30)
    assert (box.delivered, box.undelivered) == (4, 0), list(box.failures)
    assert states(github) == {
        good: ["in_progress", "success", "success"],  # active again after the rollback
        bad: ["in_progress", "failure"],
    }
    [first, second] = github.deployments("acme/blog")
    assert first.environment == second.environment == "production-blog"
    assert first.payload == {"site": "blog", "namespace": "web", "deployment": "blog"}
    assert first.statuses[1].environment_url == f"{STATUS}/#site-blog"
    assert standin_rest.REQUEST_VIOLATIONS == []
    routes = github.stats()["by_route"]
    assert routes["rest:deployments-create"] == 2
    assert routes["rest:deployment-statuses-create"] == 5
    box.close(0)


def test_a_token_without_the_permission_is_undelivered_not_retried(github: GitHubStandIn) -> None:
    github.add_repo("acme/blog", {"main": "0" * 40})
    source = GitHubSource(GitHubSettings(api_url=github.url, token=TOKEN))
    box = Outbox(NoHttp(), deployments=GitHubDeployments(source), backoff=(0.01,) * 3)
    box.post(notification(EventKind.DEPLOYED, "f" * 40), [Channel(ChannelKind.GITHUB_DEPLOYMENTS)])
    assert box.flush(30)
    assert box.undelivered == 1 and "422" in box.failures[0].error  # no such commit
    assert github.stats()["by_route"].get("rest:deployments-create") == 1
    box.close(0)


def test_github_deployments_config() -> None:
    cfg = config.parse(
        '[defaults]\nimage = "r/{repo}:{sha}"\n[notify]\ngithub_deployments = true\n'
        '[sites.blog]\nrepo = "acme/blog"\n'
        '[sites.shop]\nrepo = "acme/shop"\nnotify = { github_deployments = "production" }\n'
        '[sites.docs]\nrepo = "acme/docs"\nnotify = { github_deployments = false }\n'
    )
    blog, shop = cfg.notify.for_site("blog"), cfg.notify.for_site("shop")
    assert blog.channels_for(EventKind.DEPLOYING) == (Channel(ChannelKind.GITHUB_DEPLOYMENTS),)
    assert blog.channels_for(EventKind.FAILING) == ()
    assert shop.channels[0].environment == "production"
    assert cfg.notify.for_site("docs").channels == ()
    assert cfg.notify.channels == ()  # no chat channel: the rate limit goes nowhere


@pytest.mark.cluster
def test_deployments_follow_a_real_rollout_and_rollback(
    local_cluster: LocalCluster,
    cluster_api_client: Any,
    cluster_namespace: str,
    github: GitHubStandIn,
    tmp_path: Path,
) -> None:
    standin_rest.REQUEST_VIOLATIONS.clear()
    world = on_local_cluster(
        local_cluster,
        cluster_api_client,
        cluster_namespace,
        github,
        tmp_path,
        site_extra=(
            "rollout_timeout = 1\n"
            f'notify = {{ github_deployments = true, status_url = "{STATUS}" }}\n'
        ),
    )
    wait = ("--wait", "--wait-timeout", "180")
    good = world.head()
    assert world.sync(*wait)["rollout"] == "available"
    assert states(github) == {good: ["success"]}
    bad = world.head(crashloop_sha())
    assert world.sync(*wait, code=1)["action"] == "rolled-back"
    assert states(github) == {good: ["success", "success"], bad: ["failure"]}
    fixed = world.head()
    world.sync()  # no --wait: the rollout starts, the Deployment is in progress
    assert states(github)[fixed] == ["in_progress"]
    # later syncs observe the rollout; the one that sees it available says so
    wait_for(lambda: world.sync()["rollout"] == "available", what="the rollout to finish")
    assert states(github)[fixed] == ["in_progress", "success"]
    assert states(github)[good][-1] == "inactive"  # GitHub's auto_inactive: one active deploy
    [deployment] = [d for d in github.deployments("acme/blog") if d.sha == fixed]
    assert deployment.environment == "blog"
    assert deployment.statuses[-1].log_url == f"{STATUS}/#site-blog"
    assert standin_rest.REQUEST_VIOLATIONS == []


def test_a_lost_answer_to_the_create_makes_no_duplicate_deployment(github: GitHubStandIn) -> None:
    """GitHub creates the deployment and then answers 502: the client does not retry the POST,
    the outbox's retry finds the deployment it created and reuses it."""
    standin_rest.REQUEST_VIOLATIONS.clear()
    github.add_repo("acme/blog", {"main": "0" * 40})
    sha = github.set_branch("acme/blog", "main")
    source = GitHubSource(GitHubSettings(api_url=github.url, token=TOKEN))
    box = Outbox(NoHttp(), deployments=GitHubDeployments(source), backoff=(0.01,) * 3)
    github.fail_after("rest:deployments-create", status=502)
    channel = Channel(ChannelKind.GITHUB_DEPLOYMENTS)
    box.post(notification(EventKind.DEPLOYING, sha), [channel])
    assert box.flush(30)
    box.post(notification(EventKind.DEPLOYED, sha), [channel])
    assert box.flush(30)
    assert (box.delivered, box.undelivered) == (2, 0), list(box.failures)
    assert states(github) == {sha: ["in_progress", "success"]}
    assert len(github.deployments("acme/blog")) == 1
    routes = github.stats()["by_route"]
    assert routes["rest:deployments-create"] == 1  # the 502 was not retried by the client
    assert routes["rest:deployments"] == 3  # looked up before each create: none, then it
    assert standin_rest.REQUEST_VIOLATIONS == []
    box.close(0)


def test_a_deployment_someone_else_made_for_the_commit_is_not_taken_over(
    github: GitHubStandIn,
) -> None:
    github.add_repo("acme/blog", {"main": "0" * 40})
    sha = github.set_branch("acme/blog", "main")
    source = GitHubSource(GitHubSettings(api_url=github.url, token=TOKEN))
    theirs = source.request(
        "POST",
        "/repos/acme/blog/deployments",
        body={"ref": sha, "environment": "blog", "required_contexts": [], "payload": {}},
    )
    assert theirs.status == 201
    deployments = GitHubDeployments(source)
    deployments.send(Channel(ChannelKind.GITHUB_DEPLOYMENTS), notification(EventKind.DEPLOYED, sha))
    mine = [d for d in github.deployments("acme/blog") if d.payload.get("site") == "blog"]
    assert len(github.deployments("acme/blog")) == 2 and len(mine) == 1
    assert [s.state for s in mine[0].statuses] == ["success"]


def test_a_held_site_shows_the_commit_it_runs(github: GitHubStandIn) -> None:
    """#17: after a person's rollback (c1 -> c0) GitHub shows c0 live and c1 inactive; an image
    that is no commit of the branch is said so on what was shown."""
    standin_rest.REQUEST_VIOLATIONS.clear()
    github.add_repo("acme/blog", {"main": "0" * 40})
    c0 = github.set_branch("acme/blog", "main")
    c1 = github.set_branch("acme/blog", "main")
    source = GitHubSource(GitHubSettings(api_url=github.url, token=TOKEN))
    box = Outbox(NoHttp(), deployments=GitHubDeployments(source), backoff=())
    channel = Channel(ChannelKind.GITHUB_DEPLOYMENTS)
    held = replace(notification(EventKind.HELD, c1), detail="kubectl", running_sha=c0)
    elsewhere = replace(held, detail="kubectl-set", running_sha=None, image="nginx:1.27")
    for n in (
        notification(EventKind.DEPLOYED, c0),
        notification(EventKind.DEPLOYED, c1, old=c0),
        held,
    ):
        box.post(n, [channel])
        assert box.flush(30)
    assert states(github) == {c0: ["success", "inactive", "success"], c1: ["success", "inactive"]}
    box.post(elsewhere, [channel])
    assert box.flush(30)
    assert (box.delivered, box.undelivered) == (4, 0), list(box.failures)
    assert states(github) == {
        c0: ["success", "inactive", "success", "inactive"],
        c1: ["success", "inactive"],
    }
    [d0] = [d for d in github.deployments("acme/blog") if d.sha == c0]
    assert d0.statuses[2].description == f"held by kubectl on {c0[:7]}"
    assert (
        d0.statuses[3].description == "held by kubectl-set: runs nginx:1.27, not a commit of main"
    )
    assert standin_rest.REQUEST_VIOLATIONS == []
    box.close(0)


@pytest.mark.cluster
def test_a_persons_rollout_undo_shows_on_github_as_what_runs(
    local_cluster: LocalCluster,
    cluster_api_client: Any,
    cluster_namespace: str,
    github: GitHubStandIn,
    tmp_path: Path,
) -> None:
    """#17: `kubectl rollout undo` (c1 -> c0) holds the site on c0; GitHub then shows c0 as the
    live deployment and c1's as inactive, not c1 as still running."""
    standin_rest.REQUEST_VIOLATIONS.clear()
    world = on_local_cluster(
        local_cluster,
        cluster_api_client,
        cluster_namespace,
        github,
        tmp_path,
        site_extra="notify = { github_deployments = true }\n",
    )
    wait = ("--wait", "--wait-timeout", "180")
    c0 = world.head()
    assert world.sync(*wait)["rollout"] == "available"
    c1 = world.head()
    assert world.sync(*wait)["rollout"] == "available"
    assert states(github) == {c0: ["success", "inactive"], c1: ["success"]}
    world.kubectl("rollout", "undo", "deployment/blog")
    wait_for(lambda: world.image() == f"gcr.io/p/blog:{c0}", what="the undo")
    held = world.sync()
    assert held["action"] == "held" and held["running_sha"] == c0
    assert states(github) == {c0: ["success", "inactive", "success"], c1: ["success", "inactive"]}
    world.kubectl("rollout", "undo", "deployment/blog")  # and back again: c1 runs, still held
    wait_for(lambda: world.image() == f"gcr.io/p/blog:{c1}", what="the second undo")
    held = world.sync()
    assert held["action"] == "held" and held["running_sha"] == c1
    assert states(github)[c1][-1] == "success" and states(github)[c0][-1] == "inactive"
    assert standin_rest.REQUEST_VIOLATIONS == []
