"""Notifications end to end: sync reports → decisions → a local HTTP receiver (Slack, webhook)."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from reconciler.adapters.delivery import WebhookSender
from reconciler.adapters.github import GitHubSource
from reconciler.core.config import sites as config
from reconciler.core.errors import ErrorKind
from reconciler.core.model import Action, Site, SitePlan, SiteResult, SyncReport
from reconciler.core.notify.config import Channel, ChannelKind, EventKind, SecretRef
from reconciler.core.notify.decide import NOTIFIED_ANNOTATION
from reconciler.core.notify.render import SIGNATURE_HEADER, Notification
from reconciler.serve.metrics import Metrics
from reconciler.settings import GitHubSettings
from reconciler.sync.notifier import Notifier
from reconciler.sync.outbox import Outbox
from testkit.github import GitHubStandIn
from testkit.github_fixtures import TOKEN
from testkit.webhook_receiver import Received, Receiver

SECRET = "s3cret-hmac-key"


SITES = """\
[defaults]
namespace = "web"
image = "gcr.io/acme/{repo}:{sha}"

[notify]
status_url = "http://status.test"
blocked_after = 0
slack = { webhook_env = "SLACK_URL" }
webhook = { url_env = "HOOK_URL", secret_env = "HOOK_SECRET" }

[sites.blog]
repo = "acme/blog"
branch = "main"
"""


class Store:
    """The Deployment's annotations, as the notifier writes them (KubeCluster.annotate)."""

    def __init__(self) -> None:
        self.notes: dict[tuple[str, str, str], str] = {}

    def annotate(
        self, namespace: str, deployment: str, key: str, value: str, kind: str = "Deployment"
    ) -> None:
        self.notes[(namespace, deployment, key)] = value


@dataclass
class World:
    cfg: config.Config
    notifier: Notifier
    store: Store
    receiver: Receiver
    github: GitHubStandIn
    metrics: Metrics
    shas: list[str]
    site: Site

    def report(self, plan: SitePlan, applied: bool = False) -> SyncReport:
        notified = self.store.notes.get(("web", "blog", NOTIFIED_ANNOTATION))
        result = SiteResult(replace(plan, notified=notified), applied=applied)
        return SyncReport(uuid.uuid4().hex, "schedule", False, False, 0.0, 0.0, (result,))


@pytest.fixture
def world(receiver: Receiver, github: GitHubStandIn, tmp_path: Any) -> Iterator[World]:
    github.add_repo("acme/blog", {"main": "0" * 40})
    shas = ["0" * 40]
    for i in range(1, 13):
        shas.append(
            github.set_branch("acme/blog", "main", message=f"Change {i}\n\nbody", author=f"Dev {i}")
        )
    cfg = config.parse(SITES)
    env = {
        "SLACK_URL": receiver.url("/slack"),
        "HOOK_URL": receiver.url("/hook"),
        "HOOK_SECRET": SECRET,
    }
    metrics = Metrics()
    source = GitHubSource(GitHubSettings(api_url=github.url, token=TOKEN))
    outbox = Outbox(
        WebhookSender(env), source, backoff=(0.01, 0.01, 0.01), on_result=metrics.notification
    )
    store = Store()
    notifier = Notifier(outbox, store, web_url="https://github.com")
    yield World(cfg, notifier, store, receiver, github, metrics, shas, cfg.sites[0])
    outbox.close(1.0)


def verify(r: Received) -> dict[str, Any]:
    """What a receiver does: check the HMAC over the raw body in constant time."""
    expected = "sha256=" + hmac.new(SECRET.encode(), r.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(r.headers[SIGNATURE_HEADER], expected)
    return dict(r.json())


def test_every_event_kind_reaches_slack_and_the_signed_webhook(world: World) -> None:
    w = world
    old, new = w.shas[0], w.shas[12]
    plan = SitePlan(w.site, Action.IN_SYNC, branch="main", sha=old, running_sha=old)
    steps: list[tuple[SitePlan, bool]] = [
        (plan, False),  # first sight: quiet
        (replace(plan, action=Action.UPDATE, sha=new, reason="deploying"), True),  # rolling out
        (replace(plan, sha=new, running_sha=new, reason="runs main"), False),  # available
        (
            replace(
                plan,
                action=Action.SKIP,
                sha=w.shas[11],
                running_sha=new,
                reason="image gcr.io/acme/blog:x does not exist; not rolled out",
            ),
            False,
        ),
        (
            replace(
                plan,
                action=Action.SKIP,
                sha=w.shas[11],
                running_sha=new,
                reason="image gcr.io/acme/blog:x does not exist; not rolled out",
            ),
            False,
        ),
        (
            replace(
                plan,
                action=Action.ERROR,
                sha=new,
                running_sha=new,
                error_kind=ErrorKind.FORBIDDEN,
                reason="cannot list deployments in namespace web: forbidden by RBAC",
            ),
            False,
        ),
        (replace(plan, sha=new, running_sha=new), False),  # recovered
    ]
    for p, applied in steps:
        w.notifier.observe(w.cfg, w.report(p, applied))
    # failing again and again: the third failure within an hour is summarised
    for p in [
        replace(
            plan, action=Action.ERROR, sha=new, running_sha=new, error_kind=ErrorKind.KUBERNETES
        ),
        replace(plan, sha=new, running_sha=new),
    ] * 2:
        w.notifier.observe(w.cfg, w.report(p))
    # the rate limit runs out for every site at once: one global message
    limited = replace(
        plan,
        action=Action.ERROR,
        error_kind=ErrorKind.RATE_LIMITED,
        reason="GitHub primary (graphql) rate limit reached",
    )
    w.notifier.observe(w.cfg, w.report(limited))
    w.notifier.observe(w.cfg, w.report(limited))
    # held and rolled back come from the rollout work's verdicts; their messages go the same way
    for event, detail in ((EventKind.HELD, "kubectl-rollout"), (EventKind.ROLLED_BACK, "")):
        n = Notification(
            id=uuid.uuid4().hex,
            event=event,
            at=0.0,
            reason=f"{event.value} for the test",
            site="blog",
            repo="acme/blog",
            branch="main",
            namespace="web",
            deployment="blog",
            old_sha=w.shas[10],
            new_sha=new,
            detail=detail,
            held_at="2026-11-30T21:00:00Z",
            status_url="http://status.test",
            web_url="https://github.com",
        )
        w.notifier.outbox.post(n, w.cfg.notify.defaults.channels)

    kinds = [
        "deployed",
        "blocked",
        "failing",
        "recovered",
        "failing",
        "recovered",
        "flapping",
        "rate-limited",
        "held",
        "rolled-back",
    ]
    got = w.receiver.wait_for(2 * len(kinds))
    assert w.notifier.outbox.flush(10)
    hooks = [verify(r) for r in got if r.path == "/hook"]
    slacks = [r.json() for r in got if r.path == "/slack"]
    assert sorted(h["event"] for h in hooks) == sorted(kinds)
    assert sorted(r.headers["X-Reconciler-Event"] for r in got if r.path == "/slack") == sorted(
        kinds
    )
    assert all(h["version"] == 1 for h in hooks)

    deployed = next(h for h in hooks if h["event"] == "deployed")
    assert deployed["old_sha"] == old and deployed["new_sha"] == new
    assert deployed["compare_url"] == f"https://github.com/acme/blog/compare/{old}...{new}"
    assert deployed["total_commits"] == 12 and len(deployed["commits"]) == 10
    assert deployed["commits"][-1]["subject"] == "Change 12"
    assert deployed["commits"][-1]["author"] == "Dev 12"
    assert deployed["status_url"] == "http://status.test/#site-blog"
    assert (deployed["namespace"], deployed["deployment"]) == ("web", "blog")
    blocked = next(h for h in hooks if h["event"] == "blocked")
    assert "does not exist" in blocked["reason"]
    assert blocked["old_sha"] == new and blocked["new_sha"] == w.shas[11]
    failing = next(h for h in hooks if h["event"] == "failing")
    assert failing["detail"] == "forbidden" and "RBAC" in failing["reason"]
    assert next(h for h in hooks if h["event"] == "rate-limited")["site"] is None

    slack_deployed = next(s for s in slacks if "deployed" in s["text"])
    assert slack_deployed["text"].startswith("✅ blog deployed main@" + new[:7])
    assert "Change 12" in json.dumps(slack_deployed["blocks"], ensure_ascii=False)

    # one compare request per notification that has an old...new range, never one per commit
    compares = w.github.stats()["by_route"].get("rest:compare", 0)
    with_range = {h["id"] for h in hooks if h["compare_url"]}
    assert compares == len(with_range)
    metrics = w.metrics.render().decode()
    assert (
        'reconciler_notifications_total{channel="webhook",event="deployed",outcome="delivered"}'
        " 1.0" in metrics
    )


def test_retries_with_backoff_then_counts_undelivered(world: World) -> None:
    w = world
    w.receiver.fail["/slack"] = [500, 503]  # recovers on the third try
    w.receiver.fail["/hook"] = [400]  # a client error is not retried
    plan = SitePlan(
        w.site, Action.ERROR, branch="main", sha=w.shas[1], error_kind=ErrorKind.FORBIDDEN
    )
    w.notifier.observe(w.cfg, w.report(plan))
    assert w.notifier.outbox.flush(30)
    assert [r.path for r in w.receiver.got] == ["/slack"]
    box = w.notifier.outbox
    assert (box.delivered, box.undelivered) == (1, 1)
    failure = box.failures[0]
    assert failure.channel == "webhook" and "400" in failure.error
    assert "http://" not in failure.error  # the URL (a secret for Slack) is never echoed
    metrics = w.metrics.render().decode()
    assert 'event="failing",outcome="undelivered"} 1.0' in metrics


def test_missing_secret_is_undelivered_not_a_crash(world: World) -> None:
    sender = WebhookSender({})
    box = Outbox(sender, None, backoff=())
    channel = Channel(ChannelKind.SLACK, SecretRef(env="NOPE"))
    n = Notification(id="x", event=EventKind.FAILING, at=0.0, reason="r", site="blog")
    box.post(n, [channel])
    assert box.flush(10)
    assert box.undelivered == 1 and "NOPE is not set" in box.failures[0].error
    box.close(0)


def test_a_second_replica_reading_the_annotation_does_not_repeat(world: World) -> None:
    w = world
    old, new = w.shas[0], w.shas[1]
    before = SitePlan(w.site, Action.IN_SYNC, branch="main", sha=old, running_sha=old)
    update = replace(before, action=Action.UPDATE, sha=new)
    synced = replace(before, sha=new, running_sha=new)
    assert w.notifier.observe(w.cfg, w.report(before)) == []
    assert w.notifier.observe(w.cfg, w.report(update, applied=True)) == []
    other = Notifier(w.notifier.outbox, w.store)  # a restarted pod: no memory but the annotation
    assert [n.event for n in other.observe(w.cfg, w.report(synced))] == [EventKind.DEPLOYED]
    again = Notifier(w.notifier.outbox, w.store)
    assert again.observe(w.cfg, w.report(synced)) == []
    assert w.notifier.observe(w.cfg, w.report(synced)) == []  # its own memory is older
    assert w.notifier.outbox.flush(10)


def test_secrets_from_mounted_files(world: World, tmp_path: Any) -> None:
    url, key = tmp_path / "url", tmp_path / "key"
    url.write_text(world.receiver.url("/from-file") + "\n")
    key.write_text("file-secret\n")
    channel = Channel(ChannelKind.WEBHOOK, SecretRef(file=str(url)), SecretRef(file=str(key)))
    box = Outbox(WebhookSender({}), None, backoff=())
    box.post(
        Notification(id="f", event=EventKind.FAILING, at=0.0, reason="r", site="blog"), [channel]
    )
    [got] = world.receiver.wait_for(1)
    expected = "sha256=" + hmac.new(b"file-secret", got.body, hashlib.sha256).hexdigest()
    assert got.path == "/from-file" and got.headers[SIGNATURE_HEADER] == expected
    box.close(1)
