"""Notifications, pure part: [notify] validation, the state-change decision, the renderings."""

from __future__ import annotations

from dataclasses import replace

import pytest

from reconciler.adapters.delivery import WebhookSender
from reconciler.core.config import sites as config
from reconciler.core.errors import ConfigError, ErrorKind
from reconciler.core.model import (
    Action,
    DeploymentPatch,
    Rollout,
    SitePlan,
    SiteResult,
    SiteState,
    Skip,
    SyncReport,
)
from reconciler.core.notify.config import ChannelKind, EventKind, SecretRef
from reconciler.core.notify.decide import Memory, Policy, Snapshot, decide, snapshot
from reconciler.core.notify.render import (
    Commit,
    Comparison,
    Notification,
    google_chat,
    payload,
    sign,
    slack,
)
from reconciler.core.windows import WINDOW_OVERRIDE_BY
from reconciler.sync.notifier import Notifier
from reconciler.sync.outbox import Outbox

BASE = """\
[defaults]
image = "gcr.io/p/{repo}:{sha}"

[notify]
status_url = "https://deploy.example.com/"
slack = { webhook_env = "SLACK_WEBHOOK_URL" }
webhook = { url_file = "/var/run/secrets/hook/url", secret_env = "HOOK_SECRET" }

[sites.blog]
repo = "acme/blog"

[sites.shop]
repo = "acme/shop"

[sites.shop.notify]
events = ["deployed", "failing"]
slack = { webhook_env = "SLACK_SHOP_URL" }
webhook = false
blocked_after = 600

[sites.quiet]
repo = "acme/quiet"
notify = false
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        config.parse(text, "sites.toml")
    return [str(p) for p in exc.value.problems]


def test_notify_defaults_and_per_site_overrides() -> None:
    cfg = config.parse(BASE)
    blog = cfg.notify.for_site("blog")
    assert [c.kind for c in blog.channels] == [ChannelKind.SLACK, ChannelKind.WEBHOOK]
    assert blog.channels[1].url == SecretRef(file="/var/run/secrets/hook/url")
    assert blog.channels[1].secret == SecretRef(env="HOOK_SECRET")
    assert blog.status_url == "https://deploy.example.com" and blog.blocked_after == 1800
    assert blog.events == frozenset(EventKind) - {EventKind.DEPLOYING}
    shop = cfg.notify.for_site("shop")
    assert [(c.kind, c.url) for c in shop.channels] == [
        (ChannelKind.SLACK, SecretRef(env="SLACK_SHOP_URL"))
    ]
    assert shop.events == {EventKind.DEPLOYED, EventKind.FAILING} and shop.blocked_after == 600
    assert shop.status_url == "https://deploy.example.com"  # inherited
    assert not cfg.notify.for_site("quiet").channels_for(EventKind.FAILING)
    assert len(cfg.notify.channels) == 3


def test_notify_errors_name_file_line_site_and_refuse_secrets_in_the_file() -> None:
    text = BASE.replace(
        'slack = { webhook_env = "SLACK_SHOP_URL" }',
        'slack = { webhook = "https://hooks.slack.com/services/T/B/X" }',
    ).replace('events = ["deployed", "failing"]', 'events = ["deployed", "exploded"]')
    text += '\n[sites.x]\nrepo = "acme/x"\nnotify = { webhook = { url_env = "bad name" } }\n'
    found = problems(text)
    assert found == [
        'sites.toml:16: site "shop": unknown event(s) exploded; known: deploying, deployed, '
        "rolled-back, held, blocked, failing, recovered, flapping, rate-limited, waiting, "
        "approved, window-override",
        'sites.toml:17: site "shop": "webhook" would put a secret in sites.toml: use '
        "webhook_env or webhook_file",
        'sites.toml:27: site "x": "url_env" must name an environment variable',
    ]


def test_unknown_notify_key_and_both_sources() -> None:
    text = BASE.replace(
        'status_url = "https://deploy.example.com/"',
        'statusurl = "x"\ngoogle_chat = { webhook_env = "A", webhook_file = "/b" }',
    )
    found = problems(text)
    assert found[0].startswith('sites.toml:5: unknown key "statusurl" in notify')
    assert found[1] == 'sites.toml:6: set "webhook_env" or "webhook_file", not both'


# -- decide ------------------------------------------------------------------------------------

OLD, NEW, NEWER = "a" * 40, "b" * 40, "c" * 40
POLICY = Policy(blocked_after=600)


def run(states: list[tuple[float, Snapshot]]) -> list[EventKind | None]:
    memory: Memory | None = None
    events = []
    for now, snap in states:
        d = decide(memory, snap, now, POLICY)
        # what the Deployment keeps survives a round trip through its annotation
        memory = Memory.loads(d.memory.dumps())
        assert memory == d.memory
        events.append(d.event)
    return events


def in_sync(sha: str) -> Snapshot:
    return Snapshot(SiteState.IN_SYNC, head=sha, running=sha)


def deploying(sha: str) -> Snapshot:
    return Snapshot(SiteState.DEPLOYING, head=sha, running=sha)


def test_one_message_per_state_change_not_per_sync() -> None:
    failing = Snapshot(SiteState.FAILING, head=NEW, running=NEW, detail="forbidden")
    events = run(
        [
            (0, in_sync(OLD)),  # first sight of a healthy site: nothing to say
            (3600, in_sync(OLD)),
            (7200, deploying(NEW)),  # patched: the rollout starts
            (9000, deploying(NEW)),
            (10800, in_sync(NEW)),  # available
            (12600, in_sync(NEW)),
            (14400, failing),
            (18000, failing),
            (21600, replace(failing, detail="repo_not_found")),  # a different failure
            (25200, in_sync(NEW)),
            (28800, in_sync(NEW)),
        ]
    )
    assert events == [
        None,
        None,
        EventKind.DEPLOYING,  # for GitHub Deployments; chat channels do not take it by default
        None,
        EventKind.DEPLOYED,
        None,
        EventKind.FAILING,
        None,
        EventKind.FAILING,
        EventKind.RECOVERED,
        None,
    ]


def test_blocked_once_the_head_stays_not_ready_longer_than_the_threshold() -> None:
    behind = Snapshot(SiteState.BEHIND, head=NEW, running=OLD, reason="image missing")
    events = run(
        [
            (0, in_sync(OLD)),
            (100, behind),
            (600, behind),  # 500 s: not yet
            (700, behind),  # 600 s: blocked
            (3600, behind),
            (3700, replace(behind, head=NEWER)),  # the branch moved: a new wait starts
            (4400, replace(behind, head=NEWER)),
        ]
    )
    assert events == [None, None, None, EventKind.BLOCKED, None, None, EventKind.BLOCKED]


def test_a_site_that_keeps_failing_is_summarised_then_quiet_until_it_settles() -> None:
    failing = Snapshot(SiteState.FAILING, head=OLD, running=OLD, detail="kubernetes")
    timeline = [(0.0, in_sync(OLD))]
    for i in range(1, 9):
        timeline.append((i * 60.0, failing if i % 2 else in_sync(OLD)))
    timeline += [(8 * 60 + 3600.0, in_sync(OLD)), (8 * 60 + 7200.0, in_sync(OLD))]
    events = run(timeline)
    assert events == [
        None,
        EventKind.FAILING,
        EventKind.RECOVERED,
        EventKind.FAILING,
        EventKind.RECOVERED,
        EventKind.FLAPPING,  # the third failure within the hour: one summary
        None,
        None,
        None,
        EventKind.RECOVERED,  # an hour without a new failure: settled, say where it ended
        None,
    ]


def test_deploys_and_waits_are_not_flapping() -> None:
    behind = Snapshot(SiteState.BEHIND, head=NEW, running=OLD)
    timeline: list[tuple[float, Snapshot]] = [(0, in_sync(OLD))]
    for i in range(1, 6):
        sha = f"{i}" * 40
        timeline += [
            (i * 60.0, behind),
            (i * 60.0 + 20, deploying(sha)),
            (i * 60.0 + 40, in_sync(sha)),
        ]
    events = run(timeline)
    assert events.count(EventKind.DEPLOYED) == 5 and EventKind.FLAPPING not in events


def test_held_and_rolled_back_are_notified_once() -> None:
    held = Snapshot(SiteState.HELD, head=NEW, running=OLD, detail="kubectl-rollout")
    rolled = Snapshot(SiteState.ROLLED_BACK, head=NEW, running=OLD, detail=NEW)
    assert run([(0, held), (60, held), (120, rolled), (180, rolled)]) == [
        EventKind.HELD,
        None,
        EventKind.ROLLED_BACK,
        None,
    ]


def test_snapshot_of_results() -> None:
    from reconciler.core.model import Site

    site = Site("blog", "acme/blog", "main", "web", "blog", "app", "img:{sha}")
    plan = SitePlan(site, Action.UPDATE, sha=NEW, running_sha=OLD, branch="main")
    assert snapshot(SiteResult(plan, applied=True)).status is SiteState.DEPLOYING
    synced = replace(plan, action=Action.IN_SYNC, running_sha=NEW)
    assert snapshot(SiteResult(synced)) == in_sync(NEW)
    progressing = replace(synced, rollout=Rollout.PROGRESSING)
    assert snapshot(SiteResult(progressing)).status is SiteState.DEPLOYING
    held = replace(plan, action=Action.HELD, held_by="kubectl-rollout", held_at="t")
    assert snapshot(SiteResult(held)) == Snapshot(
        SiteState.HELD, head=NEW, running=OLD, detail="kubectl-rollout", held_at="t"
    )
    failed = replace(plan, action=Action.SKIP, skip=Skip.FAILED_COMMIT, failed_sha=NEW)
    assert snapshot(SiteResult(failed)).status is SiteState.ROLLED_BACK
    skipped = replace(plan, action=Action.SKIP, skip=Skip.IMAGE_MISSING, reason="img missing")
    assert snapshot(SiteResult(skipped)).status is SiteState.BEHIND
    paused = replace(plan, action=Action.SKIP, skip=Skip.PAUSED, reason="paused in sites.toml")
    assert snapshot(SiteResult(paused)).status is SiteState.PAUSED
    error = replace(plan, action=Action.ERROR, error_kind=ErrorKind.FORBIDDEN)
    assert snapshot(SiteResult(error)) == Snapshot(
        SiteState.FAILING, head=NEW, running=OLD, detail="forbidden"
    )


# -- renderings --------------------------------------------------------------------------------


def notification() -> Notification:
    commits = tuple(
        Commit(f"{i}" * 40, f"Fix thing {i}", "Ada", f"https://github.com/acme/blog/commit/{i}")
        for i in range(3)
    )
    return Notification(
        id="n1",
        event=EventKind.DEPLOYED,
        at=0.0,
        reason="deployed main@bbbbbbb (was aaaaaaa)",
        site="blog",
        repo="acme/blog",
        branch="main",
        namespace="web",
        deployment="blog",
        old_sha=OLD,
        new_sha=NEW,
        status_url="https://deploy.example.com",
        comparison=Comparison(commits, 12),
    )


def test_generic_payload_is_versioned_and_complete() -> None:
    body = payload(notification())
    assert body["version"] == 1 and body["event"] == "deployed"
    assert body["compare_url"] == f"https://github.com/acme/blog/compare/{OLD}...{NEW}"
    assert body["total_commits"] == 12 and len(body["commits"]) == 3
    assert body["commits"][0] == {
        "sha": "0" * 40,
        "subject": "Fix thing 0",
        "author": "Ada",
        "url": "https://github.com/acme/blog/commit/0",
    }
    assert body["status_url"] == "https://deploy.example.com/#site-blog"
    assert body["at"] == "1970-01-01T00:00:00Z"


def test_slack_message_is_block_kit_with_a_fallback() -> None:
    msg = slack(notification())
    assert msg["text"].startswith("✅ blog deployed main@bbbbbbb")
    text = "\n".join(
        b["text"]["text"] if "text" in b else str(b["elements"][0].get("text"))
        for b in msg["blocks"]
    )
    assert "`web/blog`" in text and "compare>" in text and "Fix thing 2 — Ada" in text
    assert "_12 commits; the newest 3:_" in text
    assert msg["blocks"][-1]["elements"][0]["url"] == "https://deploy.example.com/#site-blog"


def test_signature_is_hmac_sha256_of_the_body() -> None:
    body = b"The quick brown fox jumps over the lazy dog"  # RFC 4231-style known vector
    assert sign(b"key", body) == (
        "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    )


def test_google_chat_message_is_text_with_links() -> None:
    body = google_chat(notification())
    assert list(body) == ["text"]
    text = body["text"]
    assert text.startswith("*✅ blog deployed main@bbbbbbb*")
    assert f"<https://github.com/acme/blog/compare/{OLD}...{NEW}|compare>" in text
    assert "<https://deploy.example.com/#site-blog|Status page>" in text


class _Store:
    """Records the notifier's annotation writes (KubeCluster.annotate)."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, str, str]] = []

    def annotate(
        self, namespace: str, deployment: str, key: str, value: str, kind: str = "Deployment"
    ) -> None:
        self.writes.append((deployment, key, value))


def test_a_site_without_channels_gets_no_notification_writes() -> None:
    """No channel: nothing to tell, so nothing is written on the Deployment, neither when a
    deploy starts nor when the next sync (with nothing to change) sees it done; a site with
    channels still remembers its state there (restarts and other replicas read it)."""
    cfg = config.parse(BASE)
    quiet = next(s for s in cfg.sites if s.name == "quiet")
    blog = next(s for s in cfg.sites if s.name == "blog")
    store = _Store()
    outbox = Outbox(WebhookSender({}), backoff=())
    notifier = Notifier(outbox, store)
    old, new = "a" * 40, "b" * 40

    def sync(*steps: tuple[SitePlan, bool]) -> None:
        results = tuple(SiteResult(p, applied=applied) for p, applied in steps)
        notifier.observe(cfg, SyncReport("r", "schedule", False, False, 0.0, 0.0, results))

    try:
        for site in (quiet, blog):
            seen = SitePlan(site, Action.IN_SYNC, branch="main", sha=old, running_sha=old)
            sync((seen, False))  # first sight
            sync((replace(seen, action=Action.UPDATE, sha=new), True))  # deploys
            done = replace(seen, sha=new, running_sha=new)
            sync((done, False))  # nothing to change
            sync((done, False))
        assert [d for d, _, _ in store.writes if d == "quiet"] == []
        assert {d for d, _, _ in store.writes} == {"blog"}
        assert notifier.memory()["quiet"].key == f"in-sync:{new}"
    finally:
        outbox.close(0)


class _Nowhere:
    def send(self, channel: object, notification: Notification) -> None:
        pass


def test_the_text_of_every_event_kind_says_what_happened() -> None:
    """#17: each kind's Slack, Google Chat and webhook text, not only that it was sent. A deploy
    seen done by the rollout follower (whose plan has no branch head) says what was deployed."""
    events = ", ".join(f'"{e.value}"' for e in EventKind)
    cfg = config.parse(
        '[defaults]\nimage = "gcr.io/p/{repo}:{sha}"\n'
        f'[notify]\nslack = {{ webhook_env = "S" }}\nevents = [{events}]\nblocked_after = 600\n'
        '[sites.blog]\nrepo = "acme/blog"\nbranch = "main"\n'
    )
    (site,) = cfg.sites
    a, b, c, d = ("a" * 40, "b" * 40, "c" * 40, "d" * 40)
    clock = [0.0]
    outbox = Outbox(_Nowhere(), backoff=())
    notifier = Notifier(outbox, clock=lambda: clock[0])
    base = SitePlan(site, Action.IN_SYNC, "runs main@aaaaaaa", "main", a, "app", running_sha=a)
    followed = SitePlan(  # what the rollout follower plans: no branch head
        site,
        Action.ERROR,
        "no branch head for acme/blog@main",
        "main",
        error_kind=ErrorKind.INTERNAL,
        running_sha=b,
        rollout=Rollout.AVAILABLE,
        progress="2/2 ready",
    )
    sent: list[Notification] = []

    def sync(p: SitePlan, applied: bool = False, step: float = 1.0) -> None:
        clock[0] += step
        report = SyncReport("r", "schedule", False, False, 0.0, 0.0, (SiteResult(p, applied),))
        sent.extend(notifier.observe(cfg, report))

    def follow(p: SitePlan) -> None:
        clock[0] += 1
        n = notifier.observe_followed(cfg, SiteResult(p, applied=p.action is Action.ROLLED_BACK))
        sent.extend([n] if n else [])

    sync(base)  # first sight: nothing to say
    sync(
        replace(base, action=Action.UPDATE, sha=b, reason="deployed main@bbbbbbb (was aaaaaaa)"),
        True,
    )
    follow(followed)
    sync(replace(base, action=Action.UPDATE, sha=c, running_sha=b, reason="x"), True)
    follow(
        replace(
            followed,
            action=Action.ROLLED_BACK,
            reason="rollout of ccccccc failed (CrashLoopBackOff); back to gcr.io/p/blog:" + b,
            running_sha=c,
            failed_sha=c,
            rollout=Rollout.FAILED,
            error_kind=None,
        )
    )
    held = (
        "image changed by kubectl-set at 2026-12-01T10:00:00Z; resume with `reconciler resume blog`"
    )
    sync(
        replace(base, action=Action.HELD, sha=c, running_sha=a, reason=held, held_by="kubectl-set")
    )
    sync(replace(base, sha=b, running_sha=b, reason="runs main@bbbbbbb"))
    missing = f"image gcr.io/p/blog:{d} does not exist; not rolled out"
    waiting = replace(base, action=Action.SKIP, skip=Skip.IMAGE_MISSING, sha=d, running_sha=b)
    sync(replace(waiting, reason=missing))
    sync(replace(waiting, reason=missing), step=601)
    gone = replace(base, action=Action.ERROR, error_kind=ErrorKind.REPO_NOT_FOUND, running_sha=b)
    for _ in range(3):
        sync(replace(gone, reason="repository acme/blog not found"))
        sync(replace(base, sha=b, running_sha=b, reason="runs main@bbbbbbb"))
    limited = replace(gone, error_kind=ErrorKind.RATE_LIMITED, reason="GitHub rate limit exhausted")
    sync(limited, step=7200)
    asked = "waiting for approval of ddddddd (`reconciler approve blog`)"
    waits = replace(waiting, skip=Skip.APPROVAL, reason=asked)
    sync(waits)
    sync(waits, step=601)  # once per commit: a person is asked, never "blocked"
    approved = "deployed main@ddddddd (was bbbbbbb); ddddddd approved by ada (cli)"
    go = replace(waits, action=Action.UPDATE, skip=None, approved_by="ada (cli)", reason=approved)
    sync(go, True)
    override = (
        "deployed main@ccccccc (was ddddddd); deployed ccccccc through window freeze: "
        "override by ada (cli): CVE"
    )
    note = DeploymentPatch("default", "blog", {WINDOW_OVERRIDE_BY: "ada (cli)"})
    sync(
        replace(base, action=Action.UPDATE, sha=c, running_sha=d, note=note, reason=override), True
    )
    outbox.close(0)

    texts = [(n.event.value, slack(n)["text"]) for n in sent]
    assert texts == [
        ("deploying", "🚀 blog is deploying main@bbbbbbb: deployed main@bbbbbbb (was aaaaaaa)"),
        ("deployed", "✅ blog deployed main@bbbbbbb: deployed main@bbbbbbb, available 2/2"),
        ("deploying", "🚀 blog is deploying main@ccccccc: x"),
        (
            "rolled-back",
            "⏪ blog: rollout of ccccccc failed and was rolled back: rollout of ccccccc failed"
            f" (CrashLoopBackOff); back to gcr.io/p/blog:{b}",
        ),
        ("held", f"✋ blog is held by kubectl-set: {held}"),
        ("recovered", "✅ blog recovered: runs main@bbbbbbb again"),
        ("blocked", f"⏳ blog is blocked: head ddddddd is not ready: {missing}"),
        ("failing", "❌ blog is failing: repository acme/blog not found"),
        ("recovered", "✅ blog recovered: runs main@bbbbbbb again"),
        ("failing", "❌ blog is failing: repository acme/blog not found"),
        ("recovered", "✅ blog recovered: runs main@bbbbbbb again"),
        (
            "flapping",
            "🔁 blog is flapping (3 state changes within an hour): repository acme/blog not found",
        ),
        (
            "rate-limited",
            "🚦 GitHub rate limit exhausted: GitHub rate limit exhausted (1 site(s) not checked)",
        ),
        ("waiting", f"⏸️ blog is waiting for approval of ddddddd: {asked}"),
        ("approved", f"👍 blog: ddddddd approved by ada (cli), deploying: {approved}"),
        (
            "window-override",
            f"⚠️ blog: ccccccc deployed through a closed window by ada (cli): {override}",
        ),
    ]
    assert {n.event for n in sent} == set(EventKind)
    for n in sent:  # every channel says the same thing
        assert google_chat(n)["text"].split("\n")[1] == n.reason == payload(n)["reason"]
        assert "no branch head" not in n.reason


def test_a_held_site_moved_to_another_commit_is_news() -> None:
    """#17: a second `kubectl rollout undo` by the same manager holds the site on another
    commit: GitHub Deployments must hear of it (the same hold seen again stays quiet)."""
    first = Snapshot(SiteState.HELD, head=NEW, running=OLD, detail="kubectl")
    again = replace(first, running="c" * 40)
    assert run([(0, first), (60, first), (120, again), (180, again)]) == [
        EventKind.HELD,
        None,
        EventKind.HELD,
        None,
    ]
