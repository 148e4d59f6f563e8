"""Rollouts on the local cluster (controllers, scheduler, kwok nodes), kubectl as the person.

A commit whose SHA carries the cluster's crash-loop (or pull-fail) marker gives pods that never
become ready; every other image rolls out. Nothing here sleeps or times anything: each step
waits on what the API server says.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from reconciler.core import annotations as ann
from testkit.controlplane import (
    LocalCluster,
    crashloop_sha,
    kubeconfig_for_token,
    pullfail_sha,
    serviceaccount_token,
)
from testkit.github import GitHubStandIn
from testkit.github_fixtures import TOKEN
from testkit.rollout_world import RolloutWorld
from testkit.serve_process import ServeProcess
from testkit.serve_world import TRIGGER
from testkit.wait import wait_until

REPO = Path(__file__).resolve().parents[2]
WAIT = ("--wait", "--wait-timeout", "180")


@pytest.fixture
def world(
    local_cluster: LocalCluster,
    cluster_api_client: Any,
    cluster_namespace: str,
    github: GitHubStandIn,
    tmp_path: Path,
) -> RolloutWorld:
    return RolloutWorld(
        cluster_api_client,
        cluster_namespace,
        github,
        tmp_path,
        kubeconfig=local_cluster.kubeconfig_path,
        kubectl=local_cluster.kubectl,
        site_extra="rollout_timeout = 1\n",
    )


def as_shipped_serviceaccount(world: RolloutWorld, cluster: LocalCluster, tmp_path: Path) -> None:
    """The CLI from now on runs as the ServiceAccount with the Role k8s/ ships, nothing more."""
    ns = world.ns
    cluster.kubectl("apply", "-n", ns, "-f", str(REPO / "k8s" / "rbac" / "role.yaml"))
    cluster.kubectl(
        "create",
        "rolebinding",
        "reconciler",
        "-n",
        ns,
        "--role=reconciler",
        f"--serviceaccount={ns}:reconciler",
    )
    token = serviceaccount_token(cluster, ns, "reconciler")
    world.env["KUBECONFIG"] = str(kubeconfig_for_token(cluster, token, tmp_path / "sa.kubeconfig"))


def test_a_good_commit_rolls_out_and_becomes_available(
    world: RolloutWorld, local_cluster: LocalCluster
) -> None:
    sha = world.head()
    done = world.sync(*WAIT)
    assert done["action"] == "update" and done["applied"]
    assert done["rollout"] == "available" and done["progress"] == "2/2 ready"
    lead = done["lead"]  # what waiting saw: the rollout recorded available
    assert lead["deployed"]["sha"] == sha and lead["deployed"]["available"], lead
    assert lead["waiting"] is None and " → available +" in lead["deployed"]["line"]
    history = local_cluster.kubectl("rollout", "history", "deployment/blog", "-n", world.ns)
    assert f"reconciler: acme/blog@main {sha[:7]}" in history.stdout
    again = world.sync()
    assert again["action"] == "in-sync" and again["rollout"] == "available"


@pytest.mark.parametrize(
    ("bad_sha", "why"), [(crashloop_sha, "CrashLoopBackOff"), (pullfail_sha, "ImagePullBackOff")]
)
def test_a_failing_commit_is_rolled_back_remembered_and_the_next_one_deploys(
    world: RolloutWorld,
    local_cluster: LocalCluster,
    tmp_path: Path,
    bad_sha: Callable[[], str],
    why: str,
) -> None:
    as_shipped_serviceaccount(world, local_cluster, tmp_path)
    good = world.head()
    world.sync(*WAIT)
    bad = world.head(bad_sha())
    back = world.sync(*WAIT, code=1)
    assert back["action"] == "rolled-back" and back["applied"], back
    assert back["failed_sha"] == bad and why in back["reason"]
    assert world.image() == f"gcr.io/p/blog:{good}"
    assert set(world.events()) >= {"RolloutFailed", "RolledBack"}

    # The rollback's patch is the reconciler's last write. The Deployment controller then gives
    # the good ReplicaSet the next revision and, in a later pass, copies it onto the Deployment
    # (revision 3 -> 4): take "before" once it has done both for the rolled-back template.
    revision = "deployment.kubernetes.io/revision"

    def controller_done() -> bool:
        d = world.get()
        apps = kubernetes.client.AppsV1Api(world.api)
        sets: list[Any] = apps.list_namespaced_replica_set(world.ns).items
        newest = max(sets, key=lambda rs: int((rs.metadata.annotations or {}).get(revision, "0")))
        return bool(
            newest.spec.template.spec.containers[0].image == f"gcr.io/p/blog:{good}"
            and d["metadata"]["annotations"].get(revision) == newest.metadata.annotations[revision]
            and (d.get("status") or {}).get("observedGeneration") == d["metadata"]["generation"]
        )

    wait_until(controller_done, "the controller to finish the rollback's revision", timeout=120)
    before = world.get()["metadata"]
    skipped = world.sync()
    assert skipped["action"] == "skip" and "failed" in skipped["reason"]
    after = world.get()["metadata"]
    assert after["annotations"] == before["annotations"]
    assert after["generation"] == before["generation"]  # no write
    assert len(world.events("RolledBack")) == 1

    fixed = world.head()
    done = world.sync(*WAIT)
    assert done["action"] == "update" and done["rollout"] == "available"
    assert world.image() == f"gcr.io/p/blog:{fixed}"


def test_rollout_undo_holds_the_site_until_a_new_commit(world: RolloutWorld) -> None:
    one = world.head()
    world.sync(*WAIT)
    world.head()
    world.sync(*WAIT)
    world.kubectl("rollout", "undo", "deployment/blog")
    assert world.image() == f"gcr.io/p/blog:{one}"
    for _ in range(3):
        held = world.sync()
        assert held["action"] == "held", held
        assert held["held_by"] == "kubectl" and held["held_at"]  # no fieldManager: its user agent
        assert world.image() == f"gcr.io/p/blog:{one}"
    three = world.head()
    resumed = world.sync(*WAIT)
    assert resumed["action"] == "update" and resumed["rollout"] == "available"
    assert world.image() == f"gcr.io/p/blog:{three}"
    assert ann.HELD_HEAD not in world.get()["metadata"]["annotations"]


def test_set_image_holds_and_set_env_does_not(world: RolloutWorld) -> None:
    world.head()
    world.sync(*WAIT)
    world.kubectl("set", "env", "deployment/blog", "-c", "app", "FEATURE=on")
    assert world.sync()["action"] == "in-sync"  # its own rollout goes on: not the reconciler's
    world.kubectl("set", "image", "deployment/blog", "app=gcr.io/p/blog:hotfix")
    for _ in range(2):
        held = world.sync()
        assert held["action"] == "held" and held["held_by"] == "kubectl-set"
    assert world.image() == "gcr.io/p/blog:hotfix"
    fixed = world.head()
    assert world.sync(*WAIT)["action"] == "update"
    assert world.image() == f"gcr.io/p/blog:{fixed}"


def serve(world: RolloutWorld, tmp_path: Path, name: str) -> ServeProcess:
    env = {
        "GITHUB_API_URL": world.github.url,
        "GITHUB_TOKEN": TOKEN,
        "KUBECONFIG": world.env["KUBECONFIG"],
        "RECONCILER_TRIGGER_TOKEN": TRIGGER,
        "POD_NAMESPACE": world.ns,
        "POD_NAME": name,
    }
    return ServeProcess(world.sites, env, tmp_path / f"{name}.log").start()


def blog(proc: ServeProcess) -> dict[str, Any]:
    return dict(proc.request("GET", "/status")[1]["sites"][0])


@pytest.fixture
def replicas(world: RolloutWorld, tmp_path: Path) -> Iterator[list[ServeProcess]]:
    procs: list[ServeProcess] = []
    yield procs
    for proc in procs:
        proc.stop()


def test_a_restart_in_the_middle_of_a_rollout_reaches_the_same_verdict(
    world: RolloutWorld, tmp_path: Path, replicas: list[ServeProcess]
) -> None:
    good = world.head()
    world.sync(*WAIT)
    world.write_sites("rollout_timeout = 3600\n")  # the first pod will not judge it in time
    bad = world.head(crashloop_sha())
    first = serve(world, tmp_path, "reconciler-0")
    replicas.append(first)
    seen = first.wait_for(
        lambda: (s := blog(first)).get("applied") and s, what="the crash-looping deploy"
    )
    assert seen["rollout"] == "progressing"
    first.terminate()

    world.write_sites("rollout_timeout = 1\n")
    second = serve(world, tmp_path, "reconciler-1")
    replicas.append(second)
    verdict = second.wait_for(
        lambda: (s := blog(second))["state"] == "rolled-back" and s, timeout=120, what="rollback"
    )
    assert verdict["failed_sha"] == bad
    assert world.image() == f"gcr.io/p/blog:{good}"


def test_two_replicas_never_both_roll_back(
    world: RolloutWorld, tmp_path: Path, replicas: list[ServeProcess]
) -> None:
    good = world.head()
    world.sync(*WAIT)
    bad = world.head(crashloop_sha())
    assert world.sync()["applied"]
    replicas.extend(serve(world, tmp_path, f"reconciler-{i}") for i in range(2))
    for proc in replicas:
        proc.wait_for(lambda p=proc: blog(p)["state"] == "rolled-back", timeout=120, what="verdict")
    assert world.image() == f"gcr.io/p/blog:{good}"
    assert world.get()["metadata"]["annotations"][ann.FAILED_SHA] == bad
    assert len(world.events("RolledBack")) == 1
    assert len(world.events("RolloutFailed")) == 1


def test_a_persons_rollout_undo_shows_held_from_the_watch_without_a_sync(
    world: RolloutWorld, tmp_path: Path, replicas: list[ServeProcess]
) -> None:
    one = world.head()
    world.sync(*WAIT)
    world.head()
    world.sync(*WAIT)
    proc = serve(world, tmp_path, "reconciler-0")
    replicas.append(proc)
    proc.wait_for(lambda: blog(proc)["state"] == "in-sync", what="the startup sync")
    last = proc.request("GET", "/status")[1]["last_sync"]["run_id"]

    world.kubectl("rollout", "undo", "deployment/blog")
    held = proc.wait_for(lambda: (s := blog(proc))["state"] == "held" and s, what="held")
    assert held["held_by"] == "kubectl" and world.image() == f"gcr.io/p/blog:{one}"
    assert proc.request("GET", "/status")[1]["last_sync"]["run_id"] == last  # no sync ran
