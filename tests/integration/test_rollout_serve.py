"""serve follows rollouts in the background and takes hold/resume/rollback over HTTP.

Against a real kube-apiserver without controllers: the Deployment's status is written here as
the deployment controller would write it.
"""

from __future__ import annotations

from typing import Any

import kubernetes
import pytest

from testkit.deployments import get_deployment, write_status
from testkit.github import GitHubStandIn, random_sha
from testkit.serve_process import ServeProcess
from testkit.serve_world import TRIGGER, image

pytestmark = pytest.mark.controlplane


def site(served: ServeProcess, name: str = "blog") -> dict[str, Any]:
    return next(s for s in served.request("GET", "/status")[1]["sites"] if s["site"] == name)


def test_a_failed_rollout_is_rolled_back_in_the_background(
    world: dict[str, Any], served: ServeProcess
) -> None:
    gh: GitHubStandIn = world["gh"]
    api, ns = world["api"], world["ns"]
    before = image(world, "blog", "app")
    bad = gh.set_branch("acme/blog", "main", random_sha())
    write_status(api, ns, "blog", rollout="available")
    status, body = served.request("POST", "/sync/blog", TRIGGER)
    assert status == 200 and body["results"][0]["applied"], body
    write_status(api, ns, "blog", rollout="progressing")
    served.request("POST", "/sync/blog", TRIGGER)  # the sync sees it progressing: followed
    assert site(served)["rollout"] == "progressing"
    assert site(served)["progress"] == "0/2 ready"
    assert "0/2 ready" in served.request("GET", "/")[1]

    write_status(api, ns, "blog", rollout="failed")  # the follower, not a sync, sees this
    rolled = served.wait_for(
        lambda: (s := site(served))["state"] == "rolled-back" and s, what="the rollback"
    )
    assert rolled["failed_sha"] == bad and rolled["action"] == "rolled-back"
    assert image(world, "blog", "app") == before
    metrics = served.request("GET", "/metrics")[1]
    assert "reconciler_rollbacks_total 1.0" in metrics
    assert 'reconciler_rollouts_total{outcome="failed"} 1.0' in metrics
    page = served.request("GET", "/")[1]
    assert "bad commit" in page and bad[:7] in page
    events = kubernetes.client.CoreV1Api(api).list_namespaced_event(ns).items
    assert {"RolloutFailed", "RolledBack"} <= {e.reason for e in events}

    write_status(api, ns, "blog", rollout="available")
    rv = get_deployment(api, ns, "blog")["metadata"]["resourceVersion"]
    status, body = served.request("POST", "/sync/blog", TRIGGER)
    assert body["results"][0]["action"] == "skip" and "failed" in body["results"][0]["reason"]
    assert get_deployment(api, ns, "blog")["metadata"]["resourceVersion"] == rv


def test_hold_resume_and_rollback_over_http(world: dict[str, Any], served: ServeProcess) -> None:
    gh: GitHubStandIn = world["gh"]
    first = gh.branch_sha("acme/blog", "main")
    second = gh.set_branch("acme/blog", "main", random_sha())
    served.request("POST", "/sync/blog", TRIGGER)
    assert image(world, "blog", "app") == f"gcr.io/p/blog:{second}"

    assert served.request("POST", "/sites/blog/hold")[0] == 401
    assert served.request("POST", "/sites/nope/hold", TRIGGER)[0] == 404
    assert served.request("POST", "/sites/blog/explode", TRIGGER)[0] == 404

    status, body = served.request(
        "POST", "/sites/blog/hold", TRIGGER, body={"reason": "launch freeze", "by": "carol"}
    )
    assert status == 200, body
    held = served.wait_for(lambda: (s := site(served))["state"] == "held" and s, what="held")
    assert held["held_by"] == "carol (http)" and "launch freeze" in held["reason"]
    assert 'reconciler_sites{state="held"} 1.0' in served.request("GET", "/metrics")[1]
    gh.set_branch("acme/blog", "main", random_sha())
    served.request("POST", "/sync/blog", TRIGGER)
    assert image(world, "blog", "app") == f"gcr.io/p/blog:{second}"
    page = served.request("GET", "/")[1]
    assert "held by <strong>carol (http)</strong>" in page

    status, body = served.request("POST", "/sites/blog/resume", TRIGGER)
    assert status == 200, body
    served.wait_for(lambda: site(served)["state"] == "in-sync", what="resumed and deployed")
    third = gh.branch_sha("acme/blog", "main")
    assert image(world, "blog", "app") == f"gcr.io/p/blog:{third}"

    status, body = served.request("POST", "/sites/blog/rollback", TRIGGER, body={"to": first})
    assert status == 200 and body["image"] == f"gcr.io/p/blog:{first}", body
    assert image(world, "blog", "app") == f"gcr.io/p/blog:{first}"
    served.wait_for(lambda: site(served)["state"] == "held", what="held after the rollback")
    status, body = served.request("POST", "/sites/blog/rollback", TRIGGER, body={"to": "x"})
    assert status == 409 and "40-character" in body["error"]
