"""`reconciler serve` as a real waitress process, against the stand-in and a real API server."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from testkit.admission_gate import AdmissionGate
from testkit.github import GitHubStandIn, random_sha
from testkit.github_fixtures import TOKEN
from testkit.serve_process import ServeProcess
from testkit.serve_world import TRIGGER, image, sites_toml, start

pytestmark = pytest.mark.controlplane


def test_startup_sync_then_urgent_deploy_of_one_site(
    world: dict[str, Any], served: ServeProcess
) -> None:
    gh: GitHubStandIn = world["gh"]
    assert image(world, "blog", "app") == f"gcr.io/p/blog:{gh.branch_sha('acme/blog', 'main')}"
    sha = gh.set_branch("acme/blog", "main", random_sha())
    other = gh.set_branch("acme/shop", "main", random_sha())
    t0 = time.monotonic()
    status, body = served.request("POST", "/sync/blog", TRIGGER)
    elapsed = time.monotonic() - t0
    assert status == 200, body
    assert [r["site"] for r in body["results"]] == ["blog"]
    assert body["results"][0]["applied"] is True and body["ok"] is True
    assert image(world, "blog", "app") == f"gcr.io/p/blog:{sha}"
    assert image(world, "shop") != f"gcr.io/p/shop:{other}", "only the asked site moves"
    assert elapsed < 30
    summary = [e for e in served.log_events() if e.get("event") == "sync"]
    assert summary and summary[-1]["trigger"] == "http"
    assert TRIGGER not in served.logs() and TOKEN not in served.logs()


def test_trigger_auth_and_unknown_site(served: ServeProcess) -> None:
    assert served.request("POST", "/sync")[0] == 401
    assert served.request("POST", "/sync", "wrong")[0] == 401
    status, body = served.request("POST", "/sync/nope", TRIGGER)
    assert status == 404 and "nope" in body["error"]
    assert served.request("GET", "/sync")[0] == 405


def test_trigger_disabled_without_a_token(world: dict[str, Any], tmp_path: Path) -> None:
    with start(world, tmp_path, RECONCILER_TRIGGER_TOKEN="") as proc:
        status, body = proc.request("POST", "/sync", "anything")
        assert status == 403 and "RECONCILER_TRIGGER_TOKEN" in body["error"]


def test_no_wait_returns_a_run_to_poll(served: ServeProcess) -> None:
    status, body = served.request("POST", "/sync?wait=false", TRIGGER)
    assert status == 202 and body["status_url"] == f"/runs/{body['id']}"
    done = served.wait_for(
        lambda: (r := served.request("GET", body["status_url"])[1])["state"] == "done" and r,
        what="the run",
    )
    assert {r["site"] for r in done["results"]} == {"blog", "shop"}
    assert served.request("GET", "/runs/unknown")[0] == 404


def test_burst_of_triggers_is_merged(world: dict[str, Any], served: ServeProcess) -> None:
    world["gh"].latency_median_ms = 300  # make each sync take a while
    before = syncs(served)
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda _: served.request("POST", "/sync", TRIGGER), range(50)))
    world["gh"].latency_median_ms = 0
    assert [s for s, _ in answers] == [200] * 50
    ran = syncs(served) - before
    assert 1 <= ran <= 2, ran
    assert len({b["run_id"] for _, b in answers}) == ran


def syncs(proc: ServeProcess) -> int:
    metrics = proc.request("GET", "/metrics")[1]
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in metrics.splitlines()
        if line.startswith("reconciler_syncs_total{") and 'trigger="http"' in line
    )


def test_health_metrics_status(served: ServeProcess) -> None:
    status, ready = served.request("GET", "/readyz")
    assert status == 200 and ready["checks"]["kubernetes"] == "ok", ready
    assert served.request("GET", "/healthz")[0] == 200
    metrics = served.request("GET", "/metrics")[1]
    for name in (
        "reconciler_syncs_total",
        "reconciler_sync_duration_seconds_bucket",
        "reconciler_deployments_updated_total",
        "reconciler_github_rate_limit_remaining",
        "reconciler_last_successful_sync_timestamp_seconds",
        "reconciler_site_failures_total",
    ):
        assert name in metrics
    st = served.request("GET", "/status")[1]
    assert st["next_run"] and st["schedule"] == "0 0 1 1 *"
    assert {s["site"]: s["state"] for s in st["sites"]} == {"blog": "in-sync", "shop": "in-sync"}
    blog = next(s for s in st["sites"] if s["site"] == "blog")
    assert blog["head_url"].endswith(f"/acme/blog/commit/{blog['sha']}")
    assert blog["changed_at"]


def test_config_reload_add_site_and_survive_a_broken_edit(
    world: dict[str, Any], served: ServeProcess, tmp_path: Path
) -> None:
    config = tmp_path / "sites.toml"
    assert served.request("POST", "/sync/docs", TRIGGER)[0] == 404
    config.write_text(sites_toml(world["ns"], '\n[sites.docs]\nrepo = "acme/docs"\n'))
    status, body = served.request("POST", "/sync", TRIGGER)  # every sync re-reads sites.toml
    docs = next(r for r in body["results"] if r["site"] == "docs")
    assert status == 200 and docs["applied"] is True
    assert served.request("POST", "/sync/docs", TRIGGER)[1]["results"][0]["action"] == "in-sync"
    assert image(world, "docs").endswith(world["gh"].branch_sha("acme/docs", "main"))

    config.write_text(sites_toml(world["ns"], '\n[sites.docs]\nrepo = "acme/docs"\nbrnach = 1\n'))
    status, body = served.request("POST", "/sync", TRIGGER)
    assert status == 200, "the last good config keeps syncing"
    assert {r["site"] for r in body["results"]} == {"blog", "shop", "docs"}
    status, ready = served.request("GET", "/readyz")
    assert 'sites.toml:15: site "docs": unknown key "brnach"' in ready["checks"]["config_warning"]
    st = served.request("GET", "/status")[1]
    assert st["config"]["valid"] is False and "brnach" in st["config"]["error"]
    page = served.request("GET", "/")[1]
    assert "sites.toml is invalid" in page and "brnach" in page
    assert st["next_run"], "the schedule keeps running"


def test_sigterm_exits_promptly(world: dict[str, Any], tmp_path: Path) -> None:
    proc = start(world, tmp_path)
    proc.wait_for(lambda: proc.request("GET", "/status")[1]["last_sync"], what="startup sync")
    sha = world["gh"].set_branch("acme/blog", "main", random_sha())  # a patch to make
    with AdmissionGate(world["api"], world["ns"], "docs") as gate:
        gate.hold()
        t = threading.Thread(target=lambda: proc.request("POST", "/sync", TRIGGER), daemon=True)
        t.start()
        gate.wait_held()  # the blog patch is in flight: held inside the API server
        t0 = time.monotonic()
        proc.sigterm()
        proc.wait_for(
            lambda: any(e.get("event") == "shutdown" for e in proc.log_events()),
            what="the worker to begin shutting down with the patch in flight",
        )
        gate.release()
        code = proc.wait_exit(timeout=40)
    assert image(world, "blog", "app") == f"gcr.io/p/blog:{sha}", "the patch in flight finished"
    assert code == 0
    assert time.monotonic() - t0 < 30
    assert any(e.get("event") == "shutdown" for e in proc.log_events())


def test_a_bad_config_at_start_does_not_crash_loop(world: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "sites.toml").write_text("[sites.blog]\nrepo = 'nope'\n")
    with start(world, tmp_path) as proc:
        status, ready = proc.request("GET", "/readyz")
        assert status == 503 and "sites.toml:2" in ready["checks"]["config"]
        assert proc.request("GET", "/healthz")[0] == 200
        assert proc.proc is not None and proc.proc.poll() is None


def test_cloud_scheduler_job_over_pubsub(
    world: dict[str, Any], tmp_path: Path, pubsub_topic: Any
) -> None:
    import json

    gh: GitHubStandIn = world["gh"]
    proc = start(
        world,
        tmp_path,
        PUBSUB_SUBSCRIPTION=pubsub_topic.subscription,
        PUBSUB_EMULATOR_HOST=pubsub_topic.emulator.host,
    )
    with proc:
        proc.wait_for(lambda: proc.request("GET", "/status")[1]["last_sync"], what="startup sync")
        sha = gh.set_branch("acme/blog", "main", random_sha())
        other = gh.set_branch("acme/shop", "main", random_sha())
        bad = pubsub_topic.publish(b"{not json")
        unknown = pubsub_topic.publish(json.dumps({"job": "sync", "sites": ["nope"]}).encode())
        pubsub_topic.publish(json.dumps({"job": "sync", "sites": ["blog"]}).encode())
        proc.wait_for(
            lambda: image(world, "blog", "app") == f"gcr.io/p/blog:{sha}", what="the blog deploy"
        )
        assert image(world, "shop") != f"gcr.io/p/shop:{other}", "only the named site"
        events = proc.log_events()
        logged = json.dumps(events)
        assert bad in logged and unknown in logged, "malformed messages are logged with their id"
        syncs = [e for e in events if e.get("event") == "sync" and "pubsub" in e["trigger"]]
        assert syncs and syncs[-1]["updated"] == 1
        status, ready = proc.request("GET", "/readyz")
        assert status == 200 and ready["checks"]["pubsub"] == "ok", ready
        pubsub_topic.publish(b"", job="sync")  # the attribute form, every site
        proc.wait_for(
            lambda: image(world, "shop") == f"gcr.io/p/shop:{other}", what="the all-sites job"
        )


def test_a_trigger_while_the_rate_limit_is_exhausted_is_503_with_retry_after(
    world: dict[str, Any], served: ServeProcess
) -> None:
    """#17: not a 502 (nothing is broken): 503 and Retry-After, the seconds until the reset."""
    import json
    import urllib.error
    import urllib.request

    gh: GitHubStandIn = world["gh"]
    gh.set_branch("acme/blog", "main", random_sha())
    gh.set_remaining(TOKEN, 0, "graphql")
    try:
        request = urllib.request.Request(
            served.url + "/sync/blog", method="POST", headers={"Authorization": f"Bearer {TRIGGER}"}
        )
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=60)
        reset = gh.rate_limit(TOKEN, "graphql")["reset"]
        assert answer.value.code == 503
        retry_after = int(answer.value.headers["Retry-After"])
        assert 0 < retry_after <= reset - time.time() + 2
        body = json.loads(answer.value.read())
        assert body["results"][0]["error_kind"] == "rate_limited"
    finally:
        gh.set_remaining(TOKEN, 5000, "graphql")
