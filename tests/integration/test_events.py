"""Events in a real `reconciler serve` process: GitHub webhook deliveries (Octokit's examples,
adapted and schema-validated) and Cloud Build / Artifact Registry messages on the Pub/Sub
emulator, against the GitHub stand-in and a real API server."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from testkit import webhooks as w
from testkit.github import GitHubStandIn, random_sha
from testkit.pubsub_fixtures import PubSubTopic
from testkit.serve_process import ServeProcess
from testkit.serve_world import image, start
from tests.integration.test_kube import events_for

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(180)]

SECRET = "webhook-s3cret"
MARKER = "body-must-not-be-logged"


def _metric(proc: ServeProcess, name: str, **labels: str) -> float:
    text = proc.request("GET", "/metrics")[1]
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _image_updates(world: dict[str, Any], name: str) -> int:
    """How many times the reconciler changed the Deployment's image (its ImageUpdated Events;
    the generation also moves with the reconciler's own annotation writes)."""
    return len(events_for(world["api"], world["ns"], name))


def _run_done(proc: ServeProcess, run: str) -> Any:
    status = proc.request("GET", f"/runs/{run}")[1]
    return status if status["state"] == "done" else None


@pytest.fixture
def hooked(world: dict[str, Any], tmp_path: Path) -> Any:
    with start(world, tmp_path, GITHUB_WEBHOOK_SECRET=SECRET) as proc:
        proc.wait_for(lambda: proc.request("GET", "/status")[1]["last_sync"], what="startup")
        yield proc


def _deliver(proc: ServeProcess, event: str, payload: Any, **kw: Any) -> tuple[int, Any]:
    return w.deliver(proc.url + "/hooks/github", event, payload, SECRET, **kw)


def test_push_webhook_deploys_and_redelivery_does_not_sync_again(
    world: dict[str, Any], hooked: ServeProcess
) -> None:
    gh: GitHubStandIn = world["gh"]
    assert _deliver(hooked, "ping", w.example("ping"))[0] == 200
    old = gh.head("acme/blog", "main")
    new = gh.set_branch("acme/blog", "main", random_sha())
    shop = image(world, "shop")
    status, body = _deliver(hooked, "push", w.push("acme/blog", "main", new, old), delivery="d-1")
    assert status == 202 and body["outcome"] == "sync" and body["sites"] == ["blog"], body
    done = hooked.wait_for(lambda: _run_done(hooked, body["id"]), what="the webhook's run")
    assert [r["site"] for r in done["results"]] == ["blog"] and done["results"][0]["applied"]
    assert image(world, "blog", "app") == f"gcr.io/p/blog:{new}"
    assert image(world, "shop") == shop, "only the pushed repo's site"
    updates = _image_updates(world, "blog")

    status, again = _deliver(hooked, "push", w.push("acme/blog", "main", new, old), delivery="d-1")
    assert status == 202 and again["outcome"] == "duplicate" and "id" not in again
    # A signed push claiming the branch went back: the sync asks GitHub, which says `new`.
    status, back = _deliver(hooked, "push", w.push("acme/blog", "main", old, new))
    assert status == 202 and back["outcome"] == "sync"
    done = hooked.wait_for(lambda: _run_done(hooked, back["id"]), what="the second run")
    assert done["results"][0]["action"] == "in-sync"
    assert image(world, "blog", "app") == f"gcr.io/p/blog:{new}", "never an older commit"
    assert _image_updates(world, "blog") == updates, "no second image change"
    assert _metric(hooked, "reconciler_syncs_total", trigger="webhook") == 2
    assert _metric(hooked, "reconciler_events_total", event="push", outcome="duplicate") == 1
    assert _metric(hooked, "reconciler_events_total", event="ping", outcome="ping") == 1


def test_deleted_other_branch_and_unsigned_deliveries(
    world: dict[str, Any], hooked: ServeProcess
) -> None:
    gh: GitHubStandIn = world["gh"]
    running = image(world, "blog", "app")
    head = gh.head("acme/blog", "main")
    status, body = _deliver(hooked, "push", w.push("acme/blog", "main", w.ZERO_SHA, head))
    assert status == 202 and body["outcome"] == "reported" and body["sites"] == ["blog"]
    assert "deleted" in body["reason"] and "id" not in body
    shown = {x["site"]: x for x in hooked.request("GET", "/status")[1]["sites"]}
    assert "deleted" in shown["blog"]["notice"]["reason"] and "notice" not in shown["shop"]
    assert "was deleted" in hooked.request("GET", "/")[1], "the page shows it too"
    status, body = _deliver(hooked, "push", w.push("acme/blog", "feature", random_sha(), head))
    assert status == 202 and body["outcome"] == "ignored"
    assert _deliver(hooked, "deployment", w.example("deployment", "created"))[1]["outcome"] == (
        "ignored"
    )

    payload = w.push("acme/blog", "main", random_sha(), head)
    payload["head_commit"]["message"] = MARKER
    assert _deliver(hooked, "push", payload, signature="sha256=" + "0" * 64)[0] == 401
    assert w.deliver(hooked.url + "/hooks/github", "push", payload, None)[0] == 401
    assert _deliver(hooked, "push", payload, signature="sha1=abc")[0] == 401
    hooked.wait_for(
        lambda: sum(e.get("event") == "webhook.unauthorized" for e in hooked.log_events()) == 3,
        what="three rejections logged",
    )
    assert MARKER not in hooked.logs()
    assert _metric(hooked, "reconciler_events_total", outcome="rejected") == 3
    assert _metric(hooked, "reconciler_events_total", event="push", outcome="reported") == 1
    assert _metric(hooked, "reconciler_syncs_total", trigger="webhook") == 0
    assert image(world, "blog", "app") == running


def test_burst_of_pushes_is_merged(world: dict[str, Any], hooked: ServeProcess) -> None:
    gh: GitHubStandIn = world["gh"]
    heads = {}
    for repo in ("acme/blog", "acme/shop"):
        before = gh.head(repo, "main")
        heads[repo] = (gh.set_branch(repo, "main", random_sha()), before)
    pushes = [w.push(repo, "main", new, old) for repo, (new, old) in heads.items()] * 5
    gh.latency_median_ms = 1000  # each sync takes a while: the burst lands during the first
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda p: _deliver(hooked, "push", p), pushes))
    gh.latency_median_ms = 0
    assert all(s == 202 and b["outcome"] == "sync" for s, b in answers), answers
    for repo, (new, _) in heads.items():
        name = repo.split("/")[1]
        hooked.wait_for(
            lambda n=name, s=new: image(world, n, "app" if n == "blog" else None).endswith(s),
            what=f"{repo} deployed",
        )
    runs = {b["id"] for _, b in answers}
    hooked.wait_for(lambda: all(_run_done(hooked, r) for r in runs), what="every run")
    assert 1 <= _metric(hooked, "reconciler_syncs_total", trigger="webhook") <= 2


def test_webhooks_disabled_without_a_secret(world: dict[str, Any], tmp_path: Path) -> None:
    with start(world, tmp_path) as proc:
        status, body = w.deliver(proc.url + "/hooks/github", "ping", w.example("ping"), "x")
        assert status == 403 and "GITHUB_WEBHOOK_SECRET" in body["error"]


def _second_topic(topic: PubSubTopic, name: str) -> tuple[str, str]:
    t = f"{topic.topic}-{name}"
    s = f"{topic.subscription}-{name}"
    topic.publisher.create_topic(name=t)
    topic.subscriber.create_subscription(name=s, topic=t, ack_deadline_seconds=10)
    return t, s


def _publish(topic: PubSubTopic, path: str, doc: Any, **attributes: str) -> str:
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return str(topic.publisher.publish(path, data, **attributes).result(timeout=30))


def test_cloud_build_and_registry_messages_deploy_once_and_never_back(
    world: dict[str, Any], tmp_path: Path, pubsub_topic: PubSubTopic
) -> None:
    gh: GitHubStandIn = world["gh"]
    gcr_topic, gcr_sub = pubsub_topic.topic, pubsub_topic.subscription
    build_topic, build_sub = _second_topic(pubsub_topic, "builds")
    proc = start(
        world,
        tmp_path,
        PUBSUB_GCR_SUBSCRIPTION=gcr_sub,
        PUBSUB_CLOUD_BUILD_SUBSCRIPTION=build_sub,
        PUBSUB_EMULATOR_HOST=pubsub_topic.emulator.host,
    )
    with proc:
        proc.wait_for(lambda: proc.request("GET", "/status")[1]["last_sync"], what="startup")
        ready = proc.request("GET", "/readyz")[1]["checks"]
        assert ready["pubsub-gcr"] == "ok" and ready["pubsub-cloud-build"] == "ok", ready
        old = gh.head("acme/blog", "main")
        updates = _image_updates(world, "blog")
        new = gh.set_branch("acme/blog", "main", random_sha())
        insert = {"action": "INSERT", "digest": "gcr.io/p/blog@sha256:" + "1" * 64}
        # At least once, out of order: the new image twice, then the old one again.
        ids = [
            _publish(pubsub_topic, gcr_topic, {**insert, "tag": f"gcr.io/p/blog:{new}"}),
            _publish(pubsub_topic, gcr_topic, {**insert, "tag": f"gcr.io/p/blog:{new}"}),
            _publish(pubsub_topic, gcr_topic, {**insert, "tag": f"gcr.io/p/blog:{old}"}),
        ]
        deleted = _publish(
            pubsub_topic, gcr_topic, {"action": "DELETE", "tag": f"gcr.io/p/blog:{old}"}
        )
        unrelated = _publish(pubsub_topic, gcr_topic, {**insert, "tag": "gcr.io/p/other:1"})
        bad = _publish(pubsub_topic, gcr_topic, b"{not json")

        def acked() -> set[str]:
            return {e["message_id"] for e in proc.log_events() if e.get("event") == "pubsub.ack"}

        proc.wait_for(lambda: set(ids) <= acked(), what="the INSERTs acked after their syncs")
        assert image(world, "blog", "app") == f"gcr.io/p/blog:{new}", "no downgrade"
        assert _image_updates(world, "blog") == updates + 1, "deployed exactly once"

        def outcomes() -> dict[str, str]:
            events = proc.log_events()
            return {e["message_id"]: e["event"] for e in events if "message_id" in e}

        # the other messages settle on their own schedule: wait for them, not for the INSERTs
        others = {deleted, unrelated, bad}
        proc.wait_for(lambda: others <= outcomes().keys(), what="the other messages settled")
        settled = outcomes()
        assert settled[deleted] == "pubsub.reported" and settled[unrelated] == "pubsub.ignored"
        blog = next(x for x in proc.request("GET", "/status")[1]["sites"] if x["site"] == "blog")
        assert blog["notice"]["event"] == "gcr" and "deleted" in blog["notice"]["reason"]
        assert settled[bad] == "pubsub.malformed"

        shop = gh.set_branch("acme/shop", "main", random_sha())
        build = {"id": "b-1", "substitutions": {"REPO_NAME": "shop", "COMMIT_SHA": shop}}
        working = _publish(pubsub_topic, build_topic, {**build, "status": "WORKING"})
        done = _publish(pubsub_topic, build_topic, {**build, "status": "SUCCESS"}, status="SUCCESS")
        proc.wait_for(lambda: done in acked(), what="the build message acked")
        assert image(world, "shop") == f"gcr.io/p/shop:{shop}"
        assert working not in acked()  # acked at once as ignored, not after a sync

        assert _metric(proc, "reconciler_events_total", event="gcr", outcome="sync") == 3
        assert _metric(proc, "reconciler_events_total", event="gcr", outcome="reported") == 1
        assert _metric(proc, "reconciler_events_total", event="gcr", outcome="malformed") == 1
        assert _metric(proc, "reconciler_events_total", event="cloud-build", outcome="ignored") == 1
        assert _metric(proc, "reconciler_syncs_total", trigger="cloud-build") == 1
