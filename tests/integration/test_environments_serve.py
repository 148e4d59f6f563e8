"""Environments (#20) in `reconciler serve` on the local cluster (real Deployment controller),
with the GitHub stand-in and headless Chromium: staging → production where production waits
for a person's approval, given with the page's button and over HTTP, and a freeze window that
only an explicit override on POST /sync/<site> goes through."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from reconciler.core import annotations as ann
from reconciler.core import gates
from reconciler.core.promotion import AVAILABLE_AT
from reconciler.core.windows import WINDOW_OVERRIDE, WINDOW_OVERRIDE_BY
from testkit.controlplane import LocalCluster
from testkit.deployments import create_deployment, get_deployment
from testkit.github import GitHubStandIn, random_sha
from testkit.serve_process import ServeProcess
from testkit.serve_world import QUIET_SCHEDULE, TRIGGER, start
from tests.integration.test_status_page import browser, page_url, text_of

pytestmark = [pytest.mark.cluster, pytest.mark.browser]
__all__ = ["browser"]


def sites_toml(ns: str, windows: str = "", prod_extra: str = "") -> str:
    return (
        QUIET_SCHEDULE
        + windows
        + f'\n[defaults]\nnamespace = "{ns}"\ncontainer = "app"\nverify = "none"\n\n'
        '[sites.staging]\nrepo = "acme/blog"\nbranch = "main"\ndeployment = "blog-staging"\n'
        'image = "stage.example/blog:{sha}"\n\n'
        '[sites.production]\nrepo = "acme/blog"\ndeployment = "blog-prod"\n'
        'image = "prod.example/blog:{sha}"\npromote_from = "staging"\napproval = "manual"\n'
        'soak = "1m"\n' + prod_extra
    )


def site(proc: ServeProcess, name: str) -> dict[str, Any]:
    return next(s for s in proc.request("GET", "/status")[1]["sites"] if s["site"] == name)


def waits_for(proc: ServeProcess, sha: str) -> dict[str, Any]:
    """Wait, triggering nothing, until production waits for the approval of `sha`: the
    follower records when staging's rollout became available and syncs production, which
    soaks; serve syncs it again when the soak ends."""

    def asked() -> Any:
        r = site(proc, "production")
        return r if r.get("waiting_sha") == sha else None

    return dict(proc.wait_for(asked, timeout=240, what=f"production waiting for {sha[:7]}"))


def test_production_waits_for_approval_by_the_page_button_and_over_http(  # noqa: PLR0917
    local_cluster: LocalCluster,
    cluster_api_client: Any,
    cluster_namespace: str,
    github: GitHubStandIn,
    tmp_path: Path,
    browser: Any,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    ns, api = cluster_namespace, cluster_api_client
    world = {"ns": ns, "api": api, "gh": github, "cp": local_cluster}
    first = random_sha()
    github.add_repo("acme/blog", {"main": first})
    create_deployment(api, ns, "blog-staging", "stage.example/blog:before")
    create_deployment(api, ns, "blog-prod", "prod.example/blog:before")
    (tmp_path / "sites.toml").write_text(sites_toml(ns))

    with start(world, tmp_path) as proc:
        proc.wait_for(lambda: proc.request("GET", "/status")[1]["last_sync"], what="startup")
        soaking = proc.wait_for(
            lambda: (r := site(proc, "production"))["reason"].endswith("of 1 min") and r,
            timeout=120,
            what="production soaking",
        )
        assert soaking["reason"] == f"staging runs {first[:7]}, available 0 of 1 min"
        assert soaking["gate"] == "promotion" and soaking["trigger"] == "promotion"
        asked = waits_for(proc, first)
        assert asked["trigger"] == "gate"  # the sync serve scheduled for the soak's end
        assert asked["gate"] == "approval" and asked["action"] == "skip"
        assert (
            asked["reason"]
            == f"waiting for approval of {first[:7]} (`reconciler approve production`)"
        )
        assert AVAILABLE_AT in get_deployment(api, ns, "blog-staging")["metadata"]["annotations"]

        browser.get(page_url(proc))
        pipeline = text_of(browser, ".pipeline")
        assert "staging" in pipeline and "production" in pipeline and "→" in pipeline
        assert f"waiting for approval of {first[:7]}" in pipeline

        browser.find_element(By.ID, "token").send_keys(TRIGGER)
        browser.find_element(
            By.CSS_SELECTOR, '.stage[data-site="production"] button.approve'
        ).click()
        WebDriverWait(browser, 60).until(
            lambda d: "approved by status page (http)" in d.find_element(By.ID, "result").text
        )
        notes = get_deployment(api, ns, "blog-prod")["metadata"]["annotations"]
        assert notes[gates.APPROVED_SHA] == first
        assert notes[gates.APPROVED_BY] == "status page (http)"
        done = proc.wait_for(
            lambda: (s := site(proc, "production"))["running_sha"] == first and s,
            what="production deployed after the approval",
        )
        assert done["target_image"] == f"prod.example/blog:{first}"
        assert notes.get(ann.SHA) in (None, first)

        # over HTTP, naming the commit; an approval of another commit changes nothing
        second = github.set_branch("acme/blog", "main", random_sha())
        assert proc.request("POST", "/sync/staging", TRIGGER)[0] == 200
        waits_for(proc, second)
        for name in ("staging", "production"):  # the follower reports both rollouts done
            proc.wait_for(
                lambda n=name: site(proc, n).get("rollout") == "available",
                timeout=120,
                what=f"{name} available on the page",
            )
        browser.get(page_url(proc))
        assert f"waiting for approval of {second[:7]}" in text_of(browser, ".pipeline")
        browser.save_screenshot(str(tmp_path / "pipeline.png"))
        shutil.copy(tmp_path / "pipeline.png", "/tmp/reconciler-pipeline.png")
        status, body = proc.request(
            "POST", "/sites/production/approve", TRIGGER, body={"sha": first[:7]}
        )
        assert status == 409 and "not the commit it waits for" in body["error"], body
        assert proc.request("POST", "/sites/production/approve", "wrong", body={})[0] == 401
        status, body = proc.request(
            "POST", "/sites/production/approve", TRIGGER, body={"sha": second, "by": "ada"}
        )
        assert status == 200 and body["message"].startswith(
            f"production: {second[:7]} approved by ada (http)"
        )
        proc.wait_for(
            lambda: site(proc, "production")["running_sha"] == second,
            what="production deployed after the HTTP approval",
        )
        core = kubernetes.client.CoreV1Api(api)
        approvals = [
            e.message
            for e in core.list_namespaced_event(ns).items
            if e.involved_object.name == "blog-prod" and e.reason == "Approved"
        ]
        assert len(approvals) == 2 and any("by ada (http)" in (m or "") for m in approvals)


def test_a_freeze_defers_and_an_override_on_post_sync_deploys(
    local_cluster: LocalCluster,
    cluster_api_client: Any,
    cluster_namespace: str,
    github: GitHubStandIn,
    tmp_path: Path,
) -> None:
    ns, api = cluster_namespace, cluster_api_client
    world = {"ns": ns, "api": api, "gh": github, "cp": local_cluster}
    first = random_sha()
    github.add_repo("acme/blog", {"main": first})
    create_deployment(api, ns, "blog-staging", "stage.example/blog:before")
    create_deployment(api, ns, "blog-prod", "prod.example/blog:before")
    today = datetime.now(UTC).date()
    freeze = (
        '[windows.launch-freeze]\nkind = "deny"\ntimezone = "UTC"\n'
        f'start = "{today - timedelta(days=1)}"\nend = "{today + timedelta(days=1)}"\n'
    )
    (tmp_path / "sites.toml").write_text(
        sites_toml(ns, freeze, 'windows = ["launch-freeze"]\napproval = "auto"\n')
        .replace('approval = "manual"\n', "")
        .replace('soak = "1m"\n', "")
    )
    with start(world, tmp_path) as proc:
        proc.wait_for(lambda: proc.request("GET", "/status")[1]["last_sync"], what="startup")

        def frozen() -> Any:
            r = proc.request("POST", "/sync/production", TRIGGER)[1]["results"][0]
            return r if r.get("gate") == "window" else None

        r = proc.wait_for(frozen, timeout=120, what="production frozen")
        until = (today + timedelta(days=2)).strftime("%a")
        assert (
            r["reason"].startswith(f"frozen until {until}")
            and "window launch-freeze" in r["reason"]
        )
        assert "frozen until" in proc.request("GET", "/")[1]
        assert (
            get_deployment(api, ns, "blog-prod")["spec"]["template"]["spec"]["containers"][0][
                "image"
            ]
            == "prod.example/blog:before"
        )

        status, body = proc.request(
            "POST", "/sync/production", TRIGGER, body={"override_window": True}
        )
        assert status == 400 and "reason" in body["error"]
        status, body = proc.request(
            "POST",
            "/sync/production",
            TRIGGER,
            body={"override_window": True, "reason": "launch hotfix", "by": "ada"},
        )
        assert status == 200, body
        (r,) = body["results"]
        assert r["applied"] and "override by ada (http): launch hotfix" in r["reason"]
        notes = get_deployment(api, ns, "blog-prod")["metadata"]["annotations"]
        assert (
            notes[WINDOW_OVERRIDE] == "launch hotfix" and notes[WINDOW_OVERRIDE_BY] == "ada (http)"
        )
        core = kubernetes.client.CoreV1Api(api)
        assert any(
            e.reason == "WindowOverride" and "launch hotfix" in (e.message or "")
            for e in core.list_namespaced_event(ns).items
            if e.involved_object.name == "blog-prod"
        )
