"""The page says what each site runs and what waits (subjects, authors, commits behind), in
headless Chromium, and the per-site metrics agree."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from testkit.github import GitHubStandIn
from testkit.serve_world import TRIGGER, start
from tests.integration.test_status_page import browser, page_url, text_of

pytestmark = [pytest.mark.controlplane, pytest.mark.browser]
__all__ = ["browser"]


def test_page_shows_commit_subjects_authors_and_commits_behind(
    world: dict[str, Any], tmp_path: Path, browser: Any
) -> None:
    gh: GitHubStandIn = world["gh"]
    blog = gh.set_branch("acme/blog", "main", message="Faster search page", author="Ada Lovelace")
    gh.set_branch("acme/shop", "main", message="Checkout in one step", author="Grace Hopper")
    with start(world, tmp_path) as proc:
        proc.wait_for(lambda: proc.request("GET", "/status")[1]["last_sync"], what="startup")
        apps = kubernetes.client.AppsV1Api(world["api"])
        paused = {"metadata": {"annotations": {"reconciler.dev/paused": "true"}}}
        apps.patch_namespaced_deployment("shop", world["ns"], paused)
        gh.set_branch("acme/shop", "main", message="Coupons", author="Alan Turing")
        head = gh.set_branch(
            "acme/shop", "main", message="Fix coupon rounding", author="Alan Turing"
        )
        assert proc.request("POST", "/sync", TRIGGER)[0] == 200

        def sites() -> dict[str, Any] | None:
            found = {s["site"]: s for s in proc.request("GET", "/status")[1]["sites"]}
            ready = found["shop"].get("commits_behind") == 2 and "running_commit" in found["blog"]
            return found if ready else None

        found = proc.wait_for(sites, what="the commits to be looked up")
        assert found["blog"]["running_commit"]["subject"] == "Faster search page"
        assert found["blog"]["running_commit"]["sha"] == blog
        assert found["shop"]["head_commit"] == {
            "sha": head,
            "subject": "Fix coupon rounding",
            "author": "Alan Turing",
            "url": f"https://github.com/acme/shop/commit/{head}",
        }
        assert found["shop"]["running_commit"]["author"] == "Grace Hopper"

        browser.get(page_url(proc))
        shop = text_of(browser, "#site-shop")
        assert "paused" in shop and "2 commits behind" in shop
        assert "Fix coupon rounding — Alan Turing" in shop
        assert "Checkout in one step — Grace Hopper" in shop
        assert "Faster search page — Ada Lovelace" in text_of(browser, "#site-blog")
        link = browser.find_element("css selector", "#site-shop a.behind").get_attribute("href")
        assert link.endswith(f"/acme/shop/compare/{found['shop']['running_sha']}...{head}")
        browser.save_screenshot(str(tmp_path / "commits.png"))
        shutil.copy(tmp_path / "commits.png", "/tmp/reconciler-status-commits.png")

        metrics = str(proc.request("GET", "/metrics")[1])
        assert 'reconciler_site_commits_behind{site="shop"} 2.0' in metrics
        [shop_info] = [
            m
            for m in metrics.splitlines()
            if m.startswith("reconciler_site_info{") and 'site="shop"' in m
        ]
        assert f'head_sha="{head}"' in shop_info and 'state="paused"' in shop_info
        assert 'reconciler_site_behind_seconds{site="blog"} 0.0' in metrics
        assert 'reconciler_site_rollouts_total{outcome="started",site="blog"} 1.0' in metrics
        assert 'reconciler_site_last_deploy_timestamp_seconds{site="blog"}' in metrics
