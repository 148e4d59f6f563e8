"""Who may read what from `reconciler serve`: the read token, the trigger token, open probes."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from reconciler.serve.auth import RateLimitedLog
from testkit.serve_process import ServeProcess
from testkit.serve_world import TRIGGER, start

READ = "r3ad-token-for-the-status-page-and-metrics"
READS = ("/status", "/metrics", "/runs/unknown", "/", "/sites/blog")


def test_reads_need_the_trigger_token_by_default(served: ServeProcess) -> None:
    for path in READS:
        status, body = served.request("GET", path, token="")
        assert status == 401, path
        assert "RECONCILER_READ_TOKEN" in body["error"]
        assert served.request("GET", path, token="w" * 40)[0] == 401, path
    assert served.request("GET", "/status", TRIGGER)[0] == 200
    assert served.request("GET", "/metrics", TRIGGER)[0] == 200
    assert served.request("GET", "/runs/unknown", TRIGGER)[0] == 404
    # The probes stay open; /readyz says only whether it is ready.
    assert served.request("GET", "/healthz", token="")[0] == 200
    assert served.request("GET", "/readyz", token="") == (200, {"ready": True})
    status, ready = served.request("GET", "/readyz", TRIGGER)
    assert status == 200 and ready["checks"]["kubernetes"] == "ok"


def test_the_page_asks_a_browser_for_the_token(served: ServeProcess) -> None:
    try:
        urllib.request.urlopen(served.url + "/", timeout=30)
        raise AssertionError("the page answered without a token")
    except urllib.error.HTTPError as err:
        assert err.code == 401
        assert err.headers["WWW-Authenticate"] == 'Basic realm="reconciler"'
    basic = base64.b64encode(f"anyone:{TRIGGER}".encode()).decode()
    request = urllib.request.Request(served.url + "/", headers={"Authorization": f"Basic {basic}"})
    with urllib.request.urlopen(request, timeout=30) as r:
        assert r.status == 200 and b"acme/blog" in r.read()


def test_a_read_token_reads_but_does_not_trigger(world: dict[str, Any], tmp_path: Path) -> None:
    with start(world, tmp_path, RECONCILER_READ_TOKEN=READ) as proc:
        assert proc.request("GET", "/status", READ)[0] == 200
        assert proc.request("GET", "/status", TRIGGER)[0] == 200
        assert proc.request("GET", "/status", token="")[0] == 401
        assert proc.request("POST", "/sync", READ)[0] == 401


def test_reads_can_be_opened_explicitly(world: dict[str, Any], tmp_path: Path) -> None:
    with start(world, tmp_path, RECONCILER_READ_TOKEN="open") as proc:
        assert proc.request("GET", "/status", token="")[0] == 200
        assert proc.request("GET", "/readyz", token="")[1]["checks"]["config"] == "ok"
        assert proc.request("POST", "/sync", token="")[0] == 401


@pytest.mark.parametrize("token", ["short", "x" * 31])
def test_a_short_trigger_token_is_refused_at_start(
    world: dict[str, Any], tmp_path: Path, token: str
) -> None:
    with pytest.raises(RuntimeError, match=r"RECONCILER_TRIGGER_TOKEN is \d+ bytes; a token must"):
        start(world, tmp_path, RECONCILER_TRIGGER_TOKEN=token)


def test_rejected_requests_are_logged_once_a_minute(served: ServeProcess) -> None:
    for _ in range(30):
        assert served.request("POST", "/sync", "w" * 40)[0] == 401
        assert served.request("GET", "/status", token="")[0] == 401
    events = [e.get("event") for e in served.log_events()]
    assert events.count("trigger_unauthorized") == 1
    assert events.count("read_unauthorized") == 1


def test_the_rate_limited_log_counts_what_it_left_out(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limited = RateLimitedLog(interval=60, clock=lambda: now[0])
    with caplog.at_level("WARNING"):
        for t in (0, 1, 2, 59, 61, 62, 200):
            now[0] = t
            limited.warning("rejected", event="x")
    assert [r.getMessage() for r in caplog.records] == [
        "rejected",
        "rejected (3 more since the last such line, not logged)",
        "rejected (1 more since the last such line, not logged)",
    ]
