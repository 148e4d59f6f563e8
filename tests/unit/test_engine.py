"""The engine and the single-flight runner, with in-memory ports injected."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import pytest

from reconciler.core.config import sites as config
from reconciler.core.errors import ErrorKind
from reconciler.core.model import Action, Container, ObservedDeployment, SyncReport, SyncRequest
from reconciler.sync.engine import CONFLICT_RETRIES, Engine
from reconciler.sync.runner import Runner, ShuttingDown
from tests.fakes import FakeCluster, FakeHeads, FakeVerifier

SITES = """\
[defaults]
namespace = "web"
image = "gcr.io/p/{repo}:{sha}"

[sites.blog]
repo = "acme/blog"
container = "app"

[sites.shop]
repo = "acme/shop"
branch = "release"

[sites.docs]
repo = "acme/docs"
namespace = "docs"
verify = "none"
"""


def world() -> tuple[config.Config, FakeHeads, FakeCluster, FakeVerifier]:
    cfg = config.parse(SITES)
    heads = FakeHeads()
    heads.set("acme/blog", None, "1" * 40)
    heads.set("acme/shop", "release", "2" * 40)
    heads.set("acme/docs", None, "3" * 40)
    cluster = FakeCluster()
    for ns, name, containers in [
        ("web", "blog", [("app", "gcr.io/p/blog:old"), ("proxy", "envoy")]),
        ("web", "shop", [("shop", "gcr.io/p/shop:" + "2" * 40)]),
        ("docs", "docs", [("docs", "gcr.io/p/docs:old")]),
    ]:
        cluster.add(
            ObservedDeployment(
                ns, name, tuple(Container(n, i) for n, i in containers), resource_version="1"
            )
        )
    return cfg, heads, cluster, FakeVerifier()


def test_sync_updates_only_what_is_behind_and_second_sync_writes_nothing() -> None:
    cfg, heads, cluster, verifier = world()
    engine = Engine(heads=heads, cluster=cluster, verifier=verifier)
    report = engine.run(cfg, SyncRequest())
    assert {r.plan.site.name: r.action for r in report.results} == {
        "blog": Action.UPDATE,
        "shop": Action.IN_SYNC,
        "docs": Action.UPDATE,
    }
    assert report.ok and report.updated == 2
    assert heads.calls[0] == {s.ref for s in cfg.sites}  # one batched call
    assert [v.image for v in verifier.seen] == ["gcr.io/p/blog:" + "1" * 40]  # docs: none
    assert cluster.settled == 1  # the run waited for its patches' Events
    cluster.applied.clear()
    again = engine.run(cfg, SyncRequest())
    assert cluster.applied == [] and again.count(Action.IN_SYNC) == 3
    assert cluster.settled == 1  # nothing patched: nothing to wait for


def test_a_conflict_keeps_the_verified_digest() -> None:
    cfg, heads, cluster, verifier = world()
    image = "gcr.io/p/blog:" + "1" * 40
    verifier.digests[image] = "sha256:" + "d" * 64
    cluster.conflicts = 1
    report = Engine(heads=heads, cluster=cluster, verifier=verifier).run(cfg, SyncRequest())
    assert report.ok
    applied = {c.deployment: c.image for c, _ in cluster.applied}
    assert applied["blog"] == f"{image}@sha256:{'d' * 64}"
    assert len(verifier.seen) == 1, "verified once, before the conflict"


def test_plan_only_and_dry_run_change_nothing() -> None:
    cfg, heads, cluster, verifier = world()
    engine = Engine(heads=heads, cluster=cluster, verifier=verifier)
    plan = engine.run(cfg, SyncRequest(plan_only=True))
    assert cluster.applied == [] and plan.count(Action.UPDATE) == 2
    dry = engine.run(cfg, SyncRequest(dry_run=True))
    assert all(d for _, d in cluster.applied) and len(cluster.applied) == 2
    assert engine.run(cfg, SyncRequest(plan_only=True)).count(Action.UPDATE) == 2
    assert dry.updated == 2


def test_one_broken_site_does_not_stop_the_others() -> None:
    cfg, heads, cluster, verifier = world()
    cluster.fail["blog"] = "admission webhook said no"
    cluster.broken_namespaces["docs"] = "forbidden"
    report = Engine(heads=heads, cluster=cluster, verifier=verifier).run(cfg, SyncRequest())
    by = {r.plan.site.name: r for r in report.results}
    assert by["blog"].action is Action.ERROR and "webhook" in by["blog"].plan.reason
    assert by["docs"].action is Action.ERROR and by["shop"].action is Action.IN_SYNC
    assert not report.ok


def test_missing_image_is_never_rolled_out() -> None:
    cfg, heads, cluster, verifier = world()
    verifier.missing.add("gcr.io/p/blog:" + "1" * 40)
    report = Engine(heads=heads, cluster=cluster, verifier=verifier).run(cfg, SyncRequest())
    blog = next(r for r in report.results if r.plan.site.name == "blog")
    assert blog.action is Action.SKIP and not blog.applied
    assert all(c.deployment != "blog" for c, _ in cluster.applied)


def test_conflict_is_replanned_and_retried() -> None:
    cfg, heads, cluster, verifier = world()
    cluster.conflicts = 1
    report = Engine(heads=heads, cluster=cluster, verifier=verifier).run(
        cfg, SyncRequest(sites=frozenset({"blog"}))
    )
    assert report.results[0].applied, report.results[0]


def test_a_run_of_conflicts_like_a_rolling_deployments_status_updates_is_outlasted() -> None:
    cfg, heads, cluster, verifier = world()
    cluster.conflicts = 5  # a Deployment whose status the controller keeps updating
    engine = Engine(heads=heads, cluster=cluster, verifier=verifier)
    engine.conflict_pause = lambda attempt: 0.0
    report = engine.run(cfg, SyncRequest(sites=frozenset({"blog"})))
    assert report.results[0].applied, report.results[0]


def test_conflicts_without_end_fail_that_site_only() -> None:
    cfg, heads, cluster, verifier = world()
    cluster.conflicts = 100
    engine = Engine(heads=heads, cluster=cluster, verifier=verifier)
    engine.conflict_pause = lambda attempt: 0.0
    report = engine.run(cfg, SyncRequest(sites=frozenset({"blog"})))
    [blog] = report.results
    assert blog.plan.error_kind is ErrorKind.CONFLICT and not blog.applied
    assert cluster.conflicts == 100 - CONFLICT_RETRIES


def test_selected_sites_only() -> None:
    cfg, heads, cluster, verifier = world()
    report = Engine(heads=heads, cluster=cluster, verifier=verifier).run(
        cfg, SyncRequest(sites=frozenset({"shop"}))
    )
    assert [r.plan.site.name for r in report.results] == ["shop"]


class SlowRun:
    """A run function that blocks until released and records what it was asked."""

    def __init__(self) -> None:
        self.requests: list[SyncRequest] = []
        self.gate = threading.Event()
        self.started = threading.Event()

    def __call__(self, request: SyncRequest) -> SyncReport:
        self.requests.append(request)
        self.started.set()
        self.gate.wait(5)
        return SyncReport("id", request.trigger, False, False, 0, 0)


def test_runner_merges_requests_during_a_run_into_one_follow_up() -> None:
    run = SlowRun()
    runner = Runner(run)
    first = runner.submit(SyncRequest(sites=frozenset({"a"}), trigger="http"))
    assert run.started.wait(5)
    later: list[Future[SyncReport]] = [
        runner.submit(SyncRequest(sites=frozenset({n}), trigger=t))
        for n, t in [("b", "http"), ("c", "pubsub"), ("b", "schedule")]
    ]
    run.gate.set()
    first.result(5)
    for f in later:
        f.result(5)
    assert len(run.requests) == 2
    assert run.requests[1].sites == frozenset({"b", "c"})
    assert run.requests[1].trigger == "http+pubsub+schedule"


def test_runner_all_sites_wins_over_some() -> None:
    run = SlowRun()
    runner = Runner(run)
    runner.submit(SyncRequest(sites=frozenset({"a"})))
    assert run.started.wait(5)
    runner.submit(SyncRequest(sites=frozenset({"b"})))
    last = runner.submit(SyncRequest(sites=None))
    run.gate.set()
    last.result(5)
    assert run.requests[1].sites is None


def test_runner_close_fails_queued_and_refuses_new() -> None:
    run = SlowRun()
    runner = Runner(run)
    running = runner.submit(SyncRequest())
    assert run.started.wait(5)
    queued = runner.submit(SyncRequest())
    closer = threading.Thread(target=runner.close, args=(5,))
    closer.start()
    with pytest.raises(ShuttingDown):  # waits for close() to fail the queued request
        queued.result(5)
    with pytest.raises(ShuttingDown):
        runner.submit(SyncRequest())
    run.gate.set()
    assert running.result(5).trigger == "cli"
    closer.join(5)
    assert len(run.requests) == 1


def test_wait_follows_a_rollout_until_its_controller_has_reported() -> None:
    """`sync --wait` right after the Deployment was created: the controller (slow under load)
    has not written any status yet. That is not the end of the rollout."""
    from dataclasses import dataclass, replace

    from reconciler.core.model import DeploymentStatus, Rollout

    @dataclass
    class ReportsOnThirdRead(FakeCluster):
        reads: int = 0

        def read(
            self, namespace: str, name: str, kind: str = "Deployment"
        ) -> ObservedDeployment | None:
            d = super().read(namespace, name, kind)
            self.reads += 1
            if d is None or self.reads < 3:
                return d
            done = DeploymentStatus(d.generation, desired=1, replicas=1, updated=1, available=1)
            return replace(d, status=done)

    cfg, heads, plain, verifier = world()
    cluster = ReportsOnThirdRead(deployments=plain.deployments)
    engine = Engine(heads=heads, cluster=cluster, verifier=verifier)
    assert engine.run(cfg, SyncRequest(sites=frozenset({"docs"}))).updated == 1
    followed = engine.wait(cfg, ["docs"], timeout=60, interval=0)
    assert followed["docs"].plan.rollout is Rollout.AVAILABLE and cluster.reads == 3

    del cluster.deployments[("docs", "docs")]  # an error is not waited on
    cluster.reads = 0
    gone = engine.wait(cfg, ["docs"], timeout=60, interval=0)
    assert gone["docs"].action is Action.ERROR and cluster.reads == 1
