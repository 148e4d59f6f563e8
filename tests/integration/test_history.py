"""`reconciler history SITE` on the local cluster: deploys, a rollback, a person's rollout undo."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from reconciler.cli.main import main
from testkit.controlplane import LocalCluster, crashloop_sha
from testkit.github import GitHubStandIn
from testkit.rollout_world import on_local_cluster

pytestmark = pytest.mark.cluster
WAIT = ("--wait", "--wait-timeout", "180")


def test_history_names_commits_who_and_outcomes(
    local_cluster: LocalCluster,
    cluster_api_client: Any,
    cluster_namespace: str,
    github: GitHubStandIn,
    tmp_path: Path,
) -> None:
    world = on_local_cluster(
        local_cluster,
        cluster_api_client,
        cluster_namespace,
        github,
        tmp_path,
        site_extra="rollout_timeout = 1\n",
    )
    good = world.head()
    world.sync(*WAIT)
    bad = world.head(crashloop_sha())
    assert world.sync(*WAIT, code=1)["action"] == "rolled-back"
    fixed = world.head()
    world.sync(*WAIT)
    world.kubectl("rollout", "undo", "deployment/blog")  # a person goes back to `good`
    # the controller moves the revisions after the undo is accepted: wait for it to finish
    world.kubectl("rollout", "status", "deployment/blog", "--timeout=180s")

    code, deploys = world.cli("history", "blog")
    assert code == 0, deploys
    got = [(d["sha"], d["by"], d["outcome"]) for d in deploys]
    # the undo brought back the ReplicaSet the reconciler's rollback had brought back, so that
    # revision moved to the top; the image the site ran first was not the reconciler's
    assert got[1:] == [
        (fixed, "reconciler", "replaced"),
        (bad, "reconciler", "failed, rolled back"),
        (None, "a person or another tool", "replaced"),
    ]
    # who triggered each: the CLI's syncs; none for what kubectl or a person did
    assert [d["trigger"] for d in deploys] == [None, "cli", "cli", None]
    newest = deploys[0]
    assert newest["sha"] == good and newest["by"].startswith("kubectl (a person's change")
    assert newest["outcome"].startswith("running")
    assert [d["revision"] for d in deploys] == sorted(
        (d["revision"] for d in deploys), reverse=True
    )

    out = io.StringIO()
    assert main(["history", "blog", "--config", str(world.sites)], env=world.env, stdout=out) == 0
    assert "REVISION" in out.getvalue() and bad[:7] in out.getvalue()
