"""The status page's per-site history (the ReplicaSets `reconciler history` reads, with who
triggered each deploy) and the "why" of a site not in sync, in headless Chromium against
serve on the local cluster (real Deployment controller)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from testkit.controlplane import LocalCluster
from testkit.deployments import create_deployment
from testkit.github import GitHubStandIn, random_sha
from testkit.serve_world import TRIGGER, sites_toml, start
from tests.integration.test_status_page import browser, page_url, text_of

pytestmark = [pytest.mark.cluster, pytest.mark.browser]
__all__ = ["browser"]


def test_site_page_shows_history_with_triggers_and_why_a_site_waits(  # noqa: PLR0917
    local_cluster: LocalCluster,
    cluster_api_client: Any,
    cluster_namespace: str,
    github: GitHubStandIn,
    tmp_path: Path,
    browser: Any,
) -> None:
    from selenium.webdriver.common.by import By

    ns = cluster_namespace
    world = {"ns": ns, "api": cluster_api_client, "gh": github, "cp": local_cluster}
    first = random_sha()
    github.add_repo("acme/blog", {"main": first})
    waiting = random_sha()
    github.add_repo("acme/shop", {"main": waiting})
    github.set_checks("acme/shop", waiting, "pending")
    create_deployment(cluster_api_client, ns, "blog", "gcr.io/p/blog:before", sidecar=True)
    create_deployment(cluster_api_client, ns, "shop", "gcr.io/p/shop:before", sidecar=False)
    (tmp_path / "sites.toml").write_text(sites_toml(ns, 'verify = "checks"\n'))

    with start(world, tmp_path) as proc:
        proc.wait_for(lambda: proc.request("GET", "/status")[1]["last_sync"], what="startup")
        second = github.set_branch("acme/blog", "main", random_sha())
        assert proc.request("POST", "/sync/blog", TRIGGER)[0] == 200

        def history() -> Any:
            status, body = proc.request("GET", "/sites/blog?format=json", TRIGGER)
            assert status == 200, body
            return body if len(body["deploys"]) == 3 else None

        body = proc.wait_for(history, timeout=120, what="three ReplicaSets of blog")
        got = [(d["sha"], d["trigger"]) for d in body["deploys"]]
        assert got == [(second, "http"), (first, "startup"), (None, None)]
        assert proc.request("GET", "/sites/blog", token="")[0] == 401  # the page's read-token rule
        assert proc.request("GET", "/sites/nope", TRIGGER)[0] == 404

        browser.get(page_url(proc))
        shop = text_of(browser, "#site-shop")
        assert f"waiting for checks on {waiting[:7]}" in shop and "(for " in shop, shop
        link = browser.find_element(By.CSS_SELECTOR, "#site-blog a.site-link")
        assert link.get_attribute("href").endswith("/sites/blog")
        for row in browser.find_elements(By.CSS_SELECTOR, "#sites tbody tr"):
            if "in-sync" not in (row.get_attribute("class") or ""):
                assert row.find_element(By.CSS_SELECTOR, ".reason").text.strip(), row.text
        browser.save_screenshot(str(tmp_path / "page.png"))
        shutil.copy(tmp_path / "page.png", "/tmp/reconciler-status-why.png")

        browser.get(page_url(proc) + "sites/blog")
        rows = browser.find_elements(By.CSS_SELECTOR, "#history tbody tr")
        assert [r.get_attribute("data-revision") for r in rows] == ["3", "2", "1"]
        assert "http" in rows[0].text and second[:7] in rows[0].text
        assert "running" in rows[0].text and "reconciler" in rows[0].text
        assert "startup" in rows[1].text and "replaced" in rows[1].text
        assert "a person or another tool" in rows[2].text
        browser.save_screenshot(str(tmp_path / "history.png"))
        shutil.copy(tmp_path / "history.png", "/tmp/reconciler-site-history.png")

        browser.get(page_url(proc) + "sites/shop")
        assert f"waiting for checks on {waiting[:7]}" in text_of(browser, "#why")
