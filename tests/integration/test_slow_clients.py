"""`reconciler serve` keeps answering while hundreds of clients send part of a request and stall."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from testkit.github import random_sha
from testkit.serve_process import ServeProcess
from testkit.serve_world import TRIGGER, image, start
from testkit.slow_clients import stalled_clients

pytestmark = pytest.mark.controlplane

STALLED = 250


def test_health_and_an_authenticated_trigger_answer_while_clients_stall(
    world: dict[str, Any], tmp_path: Path
) -> None:
    with start(world, tmp_path) as proc:
        proc.wait_for(lambda: proc.request("GET", "/status")[1]["last_sync"], what="startup sync")
        sha = world["gh"].set_branch("acme/blog", "main", random_sha())
        with stalled_clients(proc.port, STALLED) as held:
            # Generous bounds: an answer at all is the point, not its speed.
            assert proc.request("GET", "/healthz", timeout=60)[0] == 200
            assert proc.request("GET", "/readyz", timeout=60)[0] == 200
            status, body = proc.request("POST", "/sync/blog", TRIGGER, timeout=120)
            assert status == 200 and body["results"][0]["applied"] is True, body
            assert image(world, "blog", "app") == f"gcr.io/p/blog:{sha}"
            # The stalled connections are all still open: nothing was answered by dropping them.
            assert len(held) == STALLED
            assert proc.proc is not None and proc.proc.poll() is None


def test_sigterm_answers_the_trigger_in_flight_and_refuses_new_ones(
    world: dict[str, Any], tmp_path: Path
) -> None:
    import threading

    proc: ServeProcess = start(world, tmp_path)
    proc.wait_for(lambda: proc.request("GET", "/status")[1]["last_sync"], what="startup sync")
    world["gh"].latency_median_ms = 1500  # a sync that is still running at SIGTERM
    answers: list[tuple[int, Any]] = []
    inflight = threading.Thread(
        target=lambda: answers.append(proc.request("POST", "/sync", TRIGGER)), daemon=True
    )
    inflight.start()
    proc.wait_for(lambda: proc.request("GET", "/status")[1]["syncing"], what="the sync to start")
    assert proc.proc is not None
    proc.proc.send_signal(15)
    proc.wait_for(
        lambda: proc.request("GET", "/readyz")[0] == 503, what="readiness to report shutdown"
    )
    assert proc.request("GET", "/healthz")[0] == 200
    status, body = proc.request("POST", "/sync", TRIGGER)
    assert status == 503 and "shutting down" in body["error"]
    assert proc.proc.wait(40) == 0
    world["gh"].latency_median_ms = 0
    inflight.join(5)
    assert answers and answers[0][0] in (200, 502, 503), answers
