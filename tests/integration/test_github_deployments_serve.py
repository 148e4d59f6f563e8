"""GitHub Deployments through the real serve process: in_progress when a sync deploys, success
when the follower sees the rollout available, and no duplicate when GitHub's answer to the
create is lost. The GitHub stand-in checks every request and answer against the schema; the
Deployment's status is written here as the deployment controller would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from testkit.deployments import write_status
from testkit.github import GitHubStandIn, random_sha
from testkit.github import rest as standin_rest
from testkit.serve_world import TRIGGER, sites_toml, start

pytestmark = pytest.mark.controlplane
STATUS = "http://status.test"


def states(gh: GitHubStandIn) -> dict[str, list[str]]:
    return {d.sha: [s.state for s in d.statuses] for d in gh.deployments("acme/blog")}


def test_serve_reports_deployments_from_sync_and_follower(
    world: dict[str, Any], tmp_path: Path
) -> None:
    standin_rest.REQUEST_VIOLATIONS.clear()
    gh: GitHubStandIn = world["gh"]
    api, ns = world["api"], world["ns"]
    notify = f'\n[notify]\nstatus_url = "{STATUS}"\ngithub_deployments = true\n'
    (tmp_path / "sites.toml").write_text(sites_toml(ns) + notify)
    first = gh.head("acme/blog", "main")
    with start(world, tmp_path) as proc:
        proc.wait_for(lambda: proc.request("GET", "/status")[1]["last_sync"], what="startup")
        # the startup sync deployed; no controller has reported on the rollout yet
        proc.wait_for(lambda: states(gh).get(first) == ["in_progress"], what="in_progress")
        write_status(api, ns, "blog", rollout="progressing")
        assert proc.request("POST", "/sync/blog", TRIGGER)[0] == 200  # sees it: followed
        write_status(api, ns, "blog", rollout="available")  # the follower, not a sync, sees it
        proc.wait_for(lambda: states(gh).get(first) == ["in_progress", "success"], what="success")
        [deployment] = gh.deployments("acme/blog")
        assert deployment.environment == "blog"
        assert deployment.payload["site"] == "blog"
        assert deployment.statuses[-1].environment_url == f"{STATUS}/#site-blog"

        # GitHub creates the next deployment but its answer is lost (502): the outbox retries,
        # finds the one it created, and goes on with it
        gh.fail_after("rest:deployments-create", status=502)
        second = gh.set_branch("acme/blog", "main", random_sha())
        assert proc.request("POST", "/sync/blog", TRIGGER)[0] == 200
        proc.wait_for(lambda: states(gh).get(second) == ["in_progress"], what="the retry")
        write_status(api, ns, "blog", rollout="progressing")
        assert proc.request("POST", "/sync/blog", TRIGGER)[0] == 200
        write_status(api, ns, "blog", rollout="available")
        proc.wait_for(
            lambda: states(gh).get(second) == ["in_progress", "success"], what="success again"
        )
        assert states(gh)[first][-1] == "inactive"  # one active deployment per environment
        assert len([d for d in gh.deployments("acme/blog") if d.sha == second]) == 1
        assert len(gh.deployments("acme/blog")) == 2
        assert gh.stats()["by_route"]["rest:deployments-create"] == 3  # blog twice, shop once
        n = proc.request("GET", "/status")[1]["notifications"]
        assert n["undelivered"] == 0, n
    assert standin_rest.REQUEST_VIOLATIONS == []
