"""Notifications from the real serve process: delivered in the background, failures on the page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from testkit.serve_world import TRIGGER, sites_toml, start
from testkit.webhook_receiver import Receiver

pytestmark = pytest.mark.controlplane


def test_serve_announces_deploys_and_shows_undelivered(
    world: dict[str, Any], tmp_path: Path, receiver: Receiver
) -> None:
    notify = (
        '\n[notify]\nstatus_url = "http://status.test"\n'
        'webhook = { url_env = "HOOK_URL", secret_env = "HOOK_SECRET" }\n'
        'slack = { webhook_env = "SLACK_URL" }\n'
    )
    (tmp_path / "sites.toml").write_text(sites_toml(world["ns"]) + notify)
    receiver.fail["/slack"] = [404] * 10  # a deleted Slack webhook answers 404: not retried
    env = {
        "HOOK_URL": receiver.url("/hook"),
        "HOOK_SECRET": "k",
        "SLACK_URL": receiver.url("/slack"),
    }
    with start(world, tmp_path, **env) as proc:
        proc.wait_for(lambda: proc.request("GET", "/status")[1]["last_sync"], what="startup")
        status, body = proc.request("POST", "/sync", TRIGGER)  # sees both rollouts done
        assert status == 200, body
        got = receiver.wait_for(2)
        events = sorted((r.json()["event"], r.json()["site"]) for r in got)
        assert events == [("deployed", "blog"), ("deployed", "shop")]

        def counted() -> dict[str, Any] | None:
            n = proc.request("GET", "/status")[1]["notifications"]
            return n if (n["delivered"], n["undelivered"]) == (2, 2) else None

        notifications = proc.wait_for(counted, what="deliveries and the Slack failures counted")
        assert "404" in notifications["recent_failures"][0]["error"]
        page = proc.request("GET", "/")[1]
        assert "2 undelivered" in str(page) and 'id="site-blog"' in str(page)
        metrics = str(proc.request("GET", "/metrics")[1])
        assert 'channel="slack",event="deployed",outcome="undelivered"} 2.0' in metrics
        assert proc.request("POST", "/sync", TRIGGER)[0] == 200  # nothing new: no message
    assert len(receiver.got) == 2
