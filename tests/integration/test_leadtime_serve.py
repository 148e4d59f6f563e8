"""Lead time, stage by stage, end to end: a real kube-apiserver, the GitHub stand-in (webhooks
validated against GitHub's schema), `reconciler serve`, its page in headless Chromium, /metrics
and `reconciler plan`.

The API server runs no controllers: the Deployment's rollout status is written here as the
deployment controller would write it (testkit.deployments.write_status).
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import pytest

from reconciler.cli.main import main
from reconciler.core import annotations as ann
from reconciler.core import leadtime
from reconciler.core.rollout.state import parse_time, stamp
from testkit import webhooks as w
from testkit.deployments import get_deployment, write_status
from testkit.github import GitHubStandIn, random_sha
from testkit.github_fixtures import TOKEN
from testkit.serve_process import ServeProcess
from testkit.serve_world import QUIET_SCHEDULE, TRIGGER, image, start
from tests.integration.test_status_page import browser, page_url, text_of

pytestmark = [pytest.mark.controlplane, pytest.mark.browser]
__all__ = ["browser"]  # the Chromium fixture of the status page tests

SECRET = "webhook-secret-for-the-lead-time-test"


def sites(ns: str) -> str:
    return (
        QUIET_SCHEDULE + f'[defaults]\nnamespace = "{ns}"\nimage = "gcr.io/p/{{repo}}:{{sha}}"\n\n'
        '[sites.blog]\nrepo = "acme/blog"\nbranch = "main"\ncontainer = "app"\n'
        'verify = "checks"\n\n[sites.shop]\nrepo = "acme/shop"\nverify = "none"\n'
    )


def blog(proc: ServeProcess) -> dict[str, Any]:
    return next(s for s in proc.request("GET", "/status")[1]["sites"] if s["site"] == "blog")


def notes(world: dict[str, Any]) -> dict[str, str]:
    d = get_deployment(world["api"], world["ns"], "blog")
    return dict(d["metadata"].get("annotations") or {})


def plan(world: dict[str, Any], config: Path, *extra: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    env = {
        "GITHUB_API_URL": world["gh"].url,
        "GITHUB_TOKEN": TOKEN,
        "KUBECONFIG": str(world["cp"].kubeconfig_path),
    }
    code = main(["plan", "--config", str(config), *extra], env=env, stdout=out, stderr=err)
    assert code in (0, 1), err.getvalue()
    return out.getvalue()


def test_the_stages_of_a_deploy_are_recorded_shown_and_measured(
    world: dict[str, Any], tmp_path: Path, browser: Any
) -> None:
    gh: GitHubStandIn = world["gh"]
    api, ns = world["api"], world["ns"]
    config = tmp_path / "sites.toml"
    config.write_text(sites(ns))
    with start(world, tmp_path, GITHUB_WEBHOOK_SECRET=SECRET) as proc:
        proc.wait_for(lambda: proc.request("GET", "/status")[1]["last_sync"], what="startup")
        old = gh.head("acme/blog", "main")

        # a commit is pushed; its checks run; the push webhook says when it was pushed
        new = gh.set_branch("acme/blog", "main", random_sha())
        gh.set_checks("acme/blog", new, "pending")
        pushed = int(time.time()) - 150  # distinct from the commit's committedDate (now)
        payload = w.push("acme/blog", "main", new, old)
        payload["repository"]["pushed_at"] = pushed
        status, body = w.deliver(proc.url + "/hooks/github", "push", payload, SECRET)
        assert status == 202 and body["outcome"] == "sync", body

        # the head waits for its checks, since it was pushed: on the workload, /status, the page
        waiting = proc.wait_for(
            lambda: ((s := blog(proc))["lead"]["head"] or {}).get("sha") == new and s,
            what="the head waiting for checks",
        )
        assert waiting["lead"]["waiting"] == "checks"
        recorded = leadtime.loads(notes(world).get(ann.HEAD_STAGES))
        assert recorded is not None and recorded.sha == new and recorded.pushed == pushed
        assert waiting["lead"]["since"] == stamp(pushed)
        assert waiting["lead"]["text"].startswith(
            f"head {new[:7]} waiting for checks since {leadtime.clock(pushed)}, "
        )
        browser.get(page_url(proc) + "sites/blog")
        assert text_of(browser, "#lead-waiting").startswith(f"head {new[:7]} waiting for checks")
        browser.save_screenshot(str(tmp_path / "lead-waiting.png"))
        assert f"head {new[:7]} waiting for checks" in proc.request("GET", "/")[1]

        # `reconciler plan` says the same, in text and JSON, and writes nothing
        version = get_deployment(api, ns, "blog")["metadata"]["resourceVersion"]
        assert f"blog: head {new[:7]} waiting for checks since" in plan(world, config)
        rows = {r["site"]: r for r in json.loads(plan(world, config, "--output", "json"))}
        assert rows["blog"]["lead"]["waiting"] == "checks"
        assert rows["blog"]["lead"]["head"]["pushed"] == stamp(pushed)
        assert get_deployment(api, ns, "blog")["metadata"]["resourceVersion"] == version

        # the checks go green: the check_suite webhook syncs it out, with its stages
        gh.set_checks("acme/blog", new, "success")
        suite = w.check_suite("acme/blog", "main", new)
        assert w.deliver(proc.url + "/hooks/github", "check_suite", suite, SECRET)[0] == 202
        proc.wait_for(lambda: image(world, "blog", "app") == f"gcr.io/p/blog:{new}", what="deploy")
        deployed = leadtime.loads(notes(world)[ann.STAGES])
        assert deployed is not None and deployed.sha == new and deployed.pushed == pushed
        assert deployed.checks is not None and pushed <= deployed.checks
        assert ann.HEAD_STAGES not in notes(world)

        # its rollout progresses, then becomes available: the follower records when
        write_status(api, ns, "blog", rollout="progressing")
        assert proc.request("POST", "/sync/blog", TRIGGER)[0] == 200
        rolling = blog(proc)["lead"]
        assert rolling["waiting"] == "available" and rolling["text"].startswith(f"{new[:7]} ")
        write_status(api, ns, "blog", rollout="available")
        live = proc.wait_for(
            lambda: (s := blog(proc))["lead"]["deployed"].get("available") and s,
            what="the rollout recorded available",
        )
        annotations = notes(world)
        assert live["lead"]["waiting"] is None
        available = parse_time(annotations[ann.AVAILABLE_AT])
        patched = parse_time(annotations[ann.UPDATED_AT])
        assert available is not None and patched is not None
        assert deployed.checks <= patched <= available
        line = live["lead"]["deployed"]["line"]
        assert line.startswith(f"pushed {leadtime.clock(pushed)} → checks green +")
        assert " → patched +" in line and " → available +" in line
        browser.get(page_url(proc) + "sites/blog")
        assert text_of(browser, "#lead-deployed") == line
        browser.save_screenshot(str(tmp_path / "lead-deployed.png"))

        # /metrics: one deploy in the histogram per stage, and the site's last deploy
        metrics = proc.request("GET", "/metrics")[1]
        for stage in ("checks", "patched", "available"):
            assert f'reconciler_lead_time_seconds_count{{stage="{stage}"}} 1.0' in metrics
        total = available - pushed
        assert f'reconciler_site_lead_time_seconds{{site="blog",stage="available"}} {total}' in (
            metrics
        )

    # another replica (or this one restarted) reads the same stages from the workload
    with start(world, tmp_path, GITHUB_WEBHOOK_SECRET=SECRET) as again:
        seen = again.wait_for(lambda: blog(again).get("lead"), what="the first sync")
        assert seen["deployed"]["line"] == line and seen["waiting"] is None
