"""The demo's small dead ends (#17): the port probe after a restart, the stand-in's web links,
the schedule's name in the log, one word for a rolled-back site."""

from __future__ import annotations

import socket
import urllib.request

from demo.run import _port_free
from reconciler.core.config import sites as config
from reconciler.core.model import Action, SitePlan, SiteResult, Skip, SyncReport
from reconciler.serve.triggers.schedule import JOB_ID, Schedule
from testkit.github import GitHubStandIn


def test_a_port_whose_last_connections_wait_in_time_wait_is_free() -> None:
    """A demo stopped a moment ago leaves its accepted connections in TIME_WAIT; serve can
    listen there again (it allows reuse), so the probe must not call the port taken."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()  # the server side closes first: its end waits in TIME_WAIT
        client.recv(1)
        client.close()
    assert _port_free(port)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert not _port_free(busy.getsockname()[1])  # a listening port is still taken


def test_the_standins_commit_links_answer_a_page() -> None:
    """Offline, the page links commits to the stand-in (its web base): they open a page."""
    with GitHubStandIn() as gh:
        gh.add_repo("demo/blog", {"main": "a" * 40})
        sha = gh.set_branch("demo/blog", "main", message="A change to blog")
        for path in (f"/demo/blog/commit/{sha}", "/demo/blog/tree/main"):
            with urllib.request.urlopen(gh.url + path, timeout=10) as r:
                text = r.read().decode()
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/html")
            assert sha in text and "A change to blog" in text
        with urllib.request.urlopen(f"{gh.url}/demo/blog/compare/{'a' * 40}...{sha}") as r:
            assert r.status == 200 and sha[:7] in r.read().decode()


def test_the_schedule_is_named_by_its_cron_not_hourly() -> None:
    cfg = config.parse(
        '[service]\nschedule = "* * * * *"\n[sites.blog]\nrepo = "acme/blog"\nimage = "r/b:{sha}"\n'
    )
    schedule = Schedule(lambda request: None)
    schedule.start()
    try:
        schedule.follow(cfg.service)
        assert schedule.scheduler is not None
        job = schedule.scheduler.get_job(JOB_ID)
        assert job.name == "scheduled sync (* * * * *)"
    finally:
        schedule.stop()


def test_the_summary_calls_a_rolled_back_site_rolled_back() -> None:
    site = config.parse('[sites.shop]\nrepo = "acme/shop"\nimage = "r/s:{sha}"\n').sites[0]
    skipped = SitePlan(site, Action.SKIP, skip=Skip.FAILED_COMMIT, reason="failed to roll out")
    report = SyncReport("r", "schedule", False, False, 0.0, 1.0, (SiteResult(skipped),))
    assert SiteResult(skipped).state.value == "rolled-back"
    assert report.summary() == "1 rolled-back"
