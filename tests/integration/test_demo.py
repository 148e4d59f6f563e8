"""scripts/demo end to end, offline: the page in Chromium, a deploy, a rollback, a hold, Ctrl-C.

Runs the command a newcomer runs, as a subprocess; the cluster binaries are the cached builds
(scripts/test builds them; the demo would build them itself).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from demo.run import GITHUB_API_ENV
from testkit.controlplane import ControlPlaneUnavailable, find_binaries, find_cluster_binaries
from testkit.controlplane.cluster import wait_for
from testkit.github import GitHubStandIn, random_sha
from tests.integration.test_status_page import browser  # noqa: F401  # the headless Chromium fixture

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "scripts" / "demo"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _need_binaries() -> None:
    try:
        find_binaries()
        find_cluster_binaries()
    except ControlPlaneUnavailable as e:
        if _in_ci() or not e.go_missing:
            pytest.fail(f"local cluster binaries unavailable: {e}", pytrace=False)
        pytest.skip(f"local cluster binaries unavailable: {e}; install Go >= 1.26 to enable")


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of a live process, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), fields[19]


def descendants(root: int) -> dict[int, str]:
    """Every live process below ``root``: pid -> start time (to tell a reused pid apart)."""
    procs = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            procs[int(entry.name)] = st
    out: dict[int, str] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, start) in procs.items():
            if ppid == parent and pid not in out:
                out[pid] = start
                frontier.append(pid)
    return out


def _listening(url: str) -> bool:
    host, port = url.split("//")[1].split("/", maxsplit=1)[0].rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((host, int(port))) == 0


class Demo:
    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "demo"
        self.env = {**os.environ, "RECONCILER_DEMO_DIR": str(self.dir)}
        self.log_path = tmp_path / "demo.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.state: dict[str, Any] = {}

    def start(self, *, offline: bool = True) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(DEMO), *(["--offline"] if offline else []), "--port", "0"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        self.state = wait_for(self._ready, timeout=300, what=f"the demo to start:\n{self.log}")

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def _ready(self) -> dict[str, Any] | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the demo exited {self.proc.returncode}:\n{self.log}")
        if "demo is up" not in self.log_path.read_text(errors="replace"):
            return None
        state: dict[str, Any] = json.loads((self.dir / "demo.json").read_text())
        return state

    def run(self, *args: str) -> str:
        out = subprocess.run(
            [str(DEMO), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    def request(self, method: str, path: str) -> Any:
        req = urllib.request.Request(self.state["url"] + path, method=method)
        req.add_header("Authorization", f"Bearer {self.state['trigger_token']}")
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def site(self, name: str) -> dict[str, Any]:
        sites = self.request("GET", "/status")["sites"]
        return next(s for s in sites if s["site"] == name)

    def until(self, name: str, what: str, sha: str = "", **want: Any) -> dict[str, Any]:
        """The site once its fields are ``want`` (and it runs commit ``sha...`` if given)."""

        def check() -> dict[str, Any] | None:
            s = self.site(name)
            if not (s.get("running_sha") or "").startswith(sha):
                return None
            return s if all(s.get(k) == v for k, v in want.items()) else None

        return wait_for(check, timeout=120, what=f"{name}: {what} ({want})")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    _need_binaries()
    d = Demo(tmp_path)
    try:
        yield d
    finally:
        d.stop()


@pytest.mark.cluster
@pytest.mark.browser
def test_the_demo_deploys_rolls_back_holds_and_stops_clean(
    demo: Demo,
    browser: Any,  # noqa: F811
) -> None:
    from selenium.webdriver.common.by import By

    demo.start()
    assert demo.proc is not None
    started = descendants(demo.proc.pid)
    assert {"etcd", "kube-apiserver", "kwok"} <= {
        Path(os.readlink(f"/proc/{p}/exe")).name for p in started if os.path.exists(f"/proc/{p}")
    }
    assert "status page:" in demo.log and demo.state["trigger_token"] in demo.log
    assert 'verify = "none"' in (demo.dir / "sites.toml").read_text()

    browser.get(demo.state["url"] + "/")
    rows = browser.find_elements(By.CSS_SELECTOR, "#sites tbody tr")
    names = {r.get_attribute("data-site") for r in rows}
    assert names == {"blog", "shop", "checkout", "blog-prod", "reports"}
    for name in ("blog", "shop", "checkout", "reports"):
        demo.until(name, "the startup sync deploys the branch head", state="in-sync")
    # the staging → production pair: blog-prod promotes what blog ran for a minute, once approved
    pipeline = browser.find_element(By.CLASS_NAME, "pipeline").text
    assert "blog" in pipeline and "blog-prod" in pipeline and "→" in pipeline
    prod = demo.site("blog-prod")
    assert prod["promote_from"] == "blog" and "blog" in prod["reason"], prod

    # one release: the worker Deployment and the nightly CronJob move together
    out = demo.run("push", "reports")
    moved = out.split(" is now ")[1][:7]
    reports = demo.until("reports", "both targets move", moved, state="in-sync")
    assert [(t["kind"], t["name"]) for t in reports["targets"]] == [
        ("Deployment", "reports-worker"),
        ("CronJob", "reports-nightly"),
    ], reports
    assert all(moved in (t["target_image"] or "") for t in reports["targets"]), reports

    out = demo.run("push", "blog")
    sha = out.split(" is now ")[1][:7]
    demo.until("blog", "the pushed commit rolls out", sha, state="in-sync", rollout="available")

    out = demo.run("push", "checkout", "--bad")
    bad = out.split(" is now ")[1][:7]
    checkout = demo.until(
        "checkout", "the crash-looping commit is rolled back", state="rolled-back"
    )
    assert checkout["failed_sha"].startswith(bad), checkout
    assert not checkout["running_sha"].startswith(bad), checkout

    demo.run("kubectl", "-n", "demo", "rollout", "undo", "deployment/shop")
    demo.request("POST", "/sync/shop")  # "sync now" (else the next minute's scheduled sync)
    shop = demo.until("shop", "held after kubectl rollout undo", state="held")
    assert shop["held_by"], shop

    browser.refresh()
    page = browser.find_element(By.ID, "sites").text
    assert "rolled-back" in page and "held" in page

    urls = [demo.state["url"], demo.state["control_url"], demo.state["api_server"]]
    urls.append(demo.state["github"])
    started = descendants(demo.proc.pid)
    demo.proc.send_signal(signal.SIGINT)
    assert demo.proc.wait(90) == 0, demo.log
    assert "stopped; nothing the demo started is running." in demo.log
    left = {p for p, start in started.items() if (st := _stat(p)) and st[1] == start}
    assert not left, f"processes left behind: {left}"
    assert not [u for u in urls if _listening(u)], "a port still listens"
    assert not (demo.dir / "demo.json").exists()


@pytest.mark.cluster
def test_online_the_demo_follows_public_repositories_anonymously_and_rolls_back(
    demo: Demo, github: GitHubStandIn
) -> None:
    # The stand-in plays GitHub: the repositories the online demo follows, their default branches.
    for repo, branch in (
        ("octocat/Hello-World", "master"),
        ("kubernetes/kubernetes", "master"),
        ("python/cpython", "main"),
    ):
        github.add_repo(repo, {branch: random_sha()}, default_branch=branch)
    demo.env[GITHUB_API_ENV] = github.url
    demo.start(offline=False)
    assert "anonymous REST API" in demo.log and "60 requests an hour" in demo.log
    config = (demo.dir / "sites.toml").read_text()
    assert 'repo = "python/cpython"' in config and "crashloop" in config
    blog = demo.until("blog", "follows octocat/Hello-World", state="in-sync")
    assert blog["running_sha"] == github.branch_sha("octocat/Hello-World", "master")
    # Every commit of checkout crash-loops: its first deploy is rolled back.
    checkout = demo.until("checkout", "its crash-looping commit rolled back", state="rolled-back")
    assert checkout["failed_sha"] == github.branch_sha("python/cpython", "main")
    stats = github.stats()
    assert all(k.startswith("anonymous:") for k in stats["by_token"]), stats  # no token
    assert stats["graphql_queries"] == 0, stats  # anonymous GraphQL is not allowed: REST
    assert demo.proc is not None
    demo.proc.send_signal(signal.SIGINT)
    assert demo.proc.wait(90) == 0, demo.log


def test_without_github_the_demo_says_so_and_offers_offline(tmp_path: Path) -> None:
    # GitHub made unreachable through a proxy that refuses connections (loopback, closed port).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    proxy = f"http://127.0.0.1:{closed}"
    env = {**os.environ, "RECONCILER_DEMO_DIR": str(tmp_path / "demo")}
    env.update(https_proxy=proxy, HTTPS_PROXY=proxy, no_proxy="", NO_PROXY="")
    out = subprocess.run(
        [str(DEMO)], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 3, out.stdout + out.stderr
    assert "GitHub cannot be reached" in out.stderr and "scripts/demo --offline" in out.stderr
    assert "starting the local cluster" not in out.stdout  # nothing was started


def test_push_without_a_running_demo_says_so(tmp_path: Path) -> None:
    env = {**os.environ, "RECONCILER_DEMO_DIR": str(tmp_path / "demo")}
    out = subprocess.run(
        [str(DEMO), "push", "blog"], env=env, capture_output=True, text=True, check=False
    )
    assert out.returncode == 1 and "no demo is running" in out.stderr, out.stderr


@pytest.mark.cluster
def test_the_pages_hint_lifts_a_hold_as_printed(demo: Demo) -> None:
    """#17: the page tells the person how to resume a held site; in the demo that command works
    as printed (`scripts/demo run resume shop`: the demo's sites.toml, cluster and GitHub)."""
    import re
    import shlex

    demo.start()
    assert f"{DEMO.relative_to(REPO)} run resume shop" in demo.log  # the banner says it too
    demo.until("shop", "the startup sync deploys the branch head", state="in-sync")
    demo.run("kubectl", "-n", "demo", "rollout", "undo", "deployment/shop")
    demo.request("POST", "/sync/shop")
    shop = demo.until("shop", "held after kubectl rollout undo", state="held")
    hints = re.findall(r"`([^`]* resume shop)`", shop["reason"])
    assert hints and hints[0].endswith("scripts/demo run resume shop"), shop["reason"]
    out = subprocess.run(
        shlex.split(hints[0]),
        env=demo.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    demo.request("POST", "/sync/shop")
    demo.until("shop", "resumed: back on the branch head", state="in-sync")
