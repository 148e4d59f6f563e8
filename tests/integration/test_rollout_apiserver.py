"""Rollback, holds and the commands through the CLI against a real kube-apiserver.

This control plane runs no controllers, so the Deployment's status is written here as its
controller would write it; kubectl plays the person. The whole loop with real controllers and
pods is in test_rollout_cluster.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from reconciler.core import annotations as ann
from testkit.controlplane import ControlPlane
from testkit.deployments import write_status
from testkit.github import GitHubStandIn
from testkit.rollout_world import RolloutWorld

pytestmark = pytest.mark.controlplane


class World(RolloutWorld):
    def status(self, *, failed: bool = False) -> None:
        write_status(self.api, self.ns, "blog", rollout="failed" if failed else "available")


@pytest.fixture
def world(
    control_plane: ControlPlane,
    kube_api_client: Any,
    k8s_namespace: str,
    github: GitHubStandIn,
    tmp_path: Path,
    *,
    kubectl: str,
) -> World:

    def run(*args: str) -> None:
        argv = [kubectl, "--kubeconfig", str(control_plane.kubeconfig_path), *args]
        subprocess.run(argv, check=True, capture_output=True, timeout=60)

    return World(
        kube_api_client,
        k8s_namespace,
        github,
        tmp_path,
        kubeconfig=control_plane.kubeconfig_path,
        kubectl=run,
    )


def test_failed_rollout_is_rolled_back_remembered_and_the_next_commit_deploys(
    world: World,
) -> None:
    good = world.sync()["sha"]  # the rollback goes back to a commit of the branch
    world.status()
    bad = world.head()
    first = world.sync()
    assert first["action"] == "update" and first["applied"]
    assert world.image() == f"gcr.io/p/blog:{bad}"
    world.status(failed=True)

    code, planned = world.cli("plan")
    assert code == 0 and planned[0]["action"] == "rolled-back" and not planned[0]["applied"]
    assert planned[0]["rollout"] == "failed"
    assert world.image() == f"gcr.io/p/blog:{bad}"  # plan writes nothing

    back = world.sync()
    assert back["action"] == "rolled-back" and back["applied"] and back["failed_sha"] == bad
    assert "timed out" in back["reason"]
    assert world.image() == f"gcr.io/p/blog:{good}"
    notes = world.get()["metadata"]["annotations"]
    assert notes[ann.FAILED_SHA] == bad and ann.PREVIOUS_IMAGE not in notes
    assert {"RolloutFailed", "RolledBack"} <= set(world.events())

    world.status()
    rv = world.resource_version()
    for _ in range(2):
        skipped = world.sync()
        assert skipped["action"] == "skip" and "failed" in skipped["reason"]
        assert skipped["rollout"] == "available"
    assert world.resource_version() == rv  # no write

    fixed = world.head()
    again = world.sync()
    assert again["action"] == "update" and again["applied"]
    assert world.image() == f"gcr.io/p/blog:{fixed}"


def test_kubectl_set_image_holds_until_a_new_commit_and_set_env_does_not(world: World) -> None:
    world.head()
    world.sync()
    world.kubectl("set", "env", "deployment/blog", "-c", "app", "FEATURE=on")
    assert world.sync()["action"] == "in-sync"

    world.kubectl("set", "image", "deployment/blog", "app=gcr.io/p/blog:hotfix")
    held = world.sync()
    assert held["action"] == "held" and held["held_by"] == "kubectl-set"
    assert "reconciler resume blog" in held["reason"]
    rv = world.resource_version()
    for _ in range(2):
        assert world.sync()["action"] == "held"
    assert world.resource_version() == rv
    assert world.image() == "gcr.io/p/blog:hotfix"
    assert "Held" in world.events()

    fix = world.head()
    resumed = world.sync()
    assert resumed["action"] == "update" and resumed["applied"]
    assert world.image() == f"gcr.io/p/blog:{fix}"
    assert ann.HELD_HEAD not in world.get()["metadata"]["annotations"]
    assert world.sync()["action"] == "in-sync"


def test_hold_resume_and_rollback_commands(world: World) -> None:
    one = world.head()
    world.sync()
    two = world.head()
    world.sync()

    code, done = world.cli("rollback", "blog")
    assert code == 0 and done["image"] == f"gcr.io/p/blog:{one}"
    assert world.image() == f"gcr.io/p/blog:{one}"
    held = world.sync()
    assert held["action"] == "held" and held["held_by"] == "alice (cli)"

    code, resumed = world.cli("resume", "blog")
    assert code == 0 and resumed["sync"][0]["action"] == "update"
    assert world.image() == f"gcr.io/p/blog:{two}"

    code, _ = world.cli("hold", "blog", "--reason", "launch freeze")
    assert code == 0
    world.head()
    held = world.sync()
    assert held["action"] == "held" and "launch freeze" in held["reason"]
    assert world.image() == f"gcr.io/p/blog:{two}"

    code, _ = world.cli("rollback", "blog", "--to", one)
    assert code == 0 and world.image() == f"gcr.io/p/blog:{one}"
    code, err = world.cli("rollback", "blog", "--to", "nope")
    assert code == 1 and "40-character" in err
    assert {"Held", "Resumed", "RolledBack"} <= set(world.events())
