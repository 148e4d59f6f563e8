"""The status page as a person sees it, in headless Chromium (Debian's chromium + chromedriver)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit.ci import unavailable
from testkit.github import GitHubStandIn, random_sha
from testkit.serve_process import ServeProcess
from testkit.serve_world import TRIGGER, image, start

pytestmark = [pytest.mark.controlplane, pytest.mark.browser]

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        unavailable("headless Chromium", "apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="chromium-")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def page_url(proc: ServeProcess) -> str:
    """The page, with the token as the password a browser would be asked for (any user)."""
    return f"http://operator:{TRIGGER}@127.0.0.1:{proc.port}/"


def text_of(driver: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def test_status_page_shows_what_runs_where_and_sync_now_works(
    world: dict[str, Any], tmp_path: Path, browser: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    gh: GitHubStandIn = world["gh"]
    proc: ServeProcess
    with start(world, tmp_path) as proc:
        proc.wait_for(lambda: proc.request("GET", "/status")[1]["last_sync"], what="startup")
        browser.get(page_url(proc))
        rows = browser.find_elements(By.CSS_SELECTOR, "#sites tbody tr")
        assert [r.get_attribute("data-site") for r in rows] == ["blog", "shop"]
        blog = text_of(browser, 'tr[data-site="blog"]')
        sha = gh.branch_sha("acme/blog", "main")
        assert sha and sha[:7] in blog and "in-sync" in blog and "acme/blog@main" in blog
        link = browser.find_element(By.CSS_SELECTOR, 'tr[data-site="blog"] a.head')
        assert link.get_attribute("href").endswith(f"/acme/blog/commit/{sha}")
        assert "next run" in text_of(browser, "#next-run")
        assert "2 in-sync" in text_of(browser, "#counts")
        browser.save_screenshot(str(tmp_path / "status.png"))

        moved = gh.set_branch("acme/blog", "main", random_sha())
        browser.find_element(By.ID, "sync-all").click()
        assert "enter the trigger token" in text_of(browser, "#result")
        browser.find_element(By.ID, "token").send_keys("wrong")
        browser.find_element(By.ID, "sync-all").click()
        WebDriverWait(browser, 20).until(
            lambda d: "wrong bearer token" in d.find_element(By.ID, "result").text
        )
        token = browser.find_element(By.ID, "token")
        token.clear()
        token.send_keys(TRIGGER)
        browser.find_element(By.ID, "sync-all").click()
        WebDriverWait(browser, 30).until(
            lambda d: moved[:7] in d.find_element(By.CSS_SELECTOR, 'tr[data-site="blog"]').text
        )
        assert image(world, "blog", "app") == f"gcr.io/p/blog:{moved}"
        assert "http" in text_of(browser, "#last-sync")
        browser.save_screenshot(str(tmp_path / "status-after.png"))
        shutil.copy(tmp_path / "status-after.png", "/tmp/reconciler-status.png")


def test_broken_config_is_shown_on_the_page(
    world: dict[str, Any], tmp_path: Path, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    with start(world, tmp_path) as proc:
        proc.wait_for(lambda: proc.request("GET", "/status")[1]["last_sync"], what="startup")
        (tmp_path / "sites.toml").write_text("[sites.blog]\nrepo = 'acme/blog'\nimage = 3\n")
        proc.request("POST", "/sync", TRIGGER)
        browser.get(page_url(proc))
        banner = text_of(browser, "#config-error")
        assert "sites.toml is invalid" in banner
        assert 'sites.toml:3: site "blog": "image" must be a string' in banner
        assert len(browser.find_elements(By.CSS_SELECTOR, "#sites tbody tr")) == 2
