"""The pure rollout rules and the engine's rollback, hold and resume, on in-memory fakes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from reconciler.core import annotations as ann
from reconciler.core.config import sites as config
from reconciler.core.errors import ReconcilerError
from reconciler.core.model import (
    Action,
    BranchHead,
    Container,
    DeploymentStatus,
    FieldOwner,
    ObservedDeployment,
    Rollout,
    Site,
    SitePlan,
    SiteResult,
    SyncRequest,
)
from reconciler.core.plan import planner
from reconciler.core.rollout import state as rollout
from reconciler.serve.follower import Follower, SharedLease
from reconciler.serve.state import merged
from reconciler.sync import commands
from reconciler.sync.engine import Engine
from testkit.wait import wait_until
from tests.fakes import FakeCluster, FakeHeads, FakeVerifier

GOOD, BAD, NEXT = "1" * 40, "2" * 40, "3" * 40
SITE = Site("blog", "acme/blog", "main", "web", "blog", "app", "gcr.io/p/blog:{sha}")
NOW = 1_800_000_000.0


def img(sha: str) -> str:
    return f"gcr.io/p/blog:{sha}"


def deployed(
    sha: str = BAD,
    *,
    previous: str = GOOD,
    status: DeploymentStatus | None = None,
    owner: str = "reconciler",
    owner_time: str = "2027-01-15T08:00:00Z",
    **notes: str,
) -> ObservedDeployment:
    """A Deployment on which the reconciler deployed `sha` over `previous`."""
    annotations = {
        ann.SHA: sha,
        ann.UPDATED_AT: rollout.stamp(NOW - 60),
        ann.PREVIOUS_IMAGE: img(previous),
        ann.PREVIOUS_SHA: previous,
        **{k.replace("_", "-").join(["reconciler.dev/", ""]): v for k, v in notes.items()},
    }
    return ObservedDeployment(
        "web",
        "blog",
        (Container("app", img(sha)), Container("proxy", "envoy:1")),
        annotations=annotations,
        resource_version="7",
        generation=2,
        status=status
        or DeploymentStatus(
            observed_generation=2, desired=3, updated=3, replicas=3, ready=3, available=3
        ),
        image_owners={"app": FieldOwner(owner, "Update", owner_time)},
        selector={"app": "blog"},
    )


def plan(d: ObservedDeployment, head: str = BAD, **kw: object) -> SitePlan:
    heads = {SITE.ref: BranchHead("acme/blog", "main", head)}
    return planner.plan_site(SITE, heads, {"web": {"blog": d}}, now=NOW, **kw)  # type: ignore[arg-type]


STUCK = DeploymentStatus(observed_generation=2, desired=3, updated=1, replicas=4, available=0)
DEADLINE = replace(STUCK, deadline_exceeded=True, message='ReplicaSet "blog-x" has timed out')


@pytest.mark.parametrize(
    ("status", "generation", "expected", "progress"),
    [
        (None, 1, None, ""),
        (
            DeploymentStatus(observed_generation=1, desired=3, updated=3, replicas=3, available=3),
            2,
            Rollout.PROGRESSING,
            "3/3 ready",
        ),
        (
            DeploymentStatus(observed_generation=2, desired=3, updated=3, replicas=4, available=2),
            2,
            Rollout.PROGRESSING,
            "2/3 ready",
        ),
        (
            DeploymentStatus(observed_generation=2, desired=3, updated=3, replicas=3, available=3),
            2,
            Rollout.AVAILABLE,
            "3/3 ready",
        ),
        (DEADLINE, 2, Rollout.FAILED, "0/3 ready"),
    ],
)
def test_rollout_state(
    status: DeploymentStatus | None, generation: int, expected: Rollout | None, progress: str
) -> None:
    d = replace(deployed(), status=status, generation=generation)
    assert rollout.state(d) == (expected, progress)


def test_image_owner_comes_from_managed_fields_update_or_apply() -> None:
    fields = [
        {
            "manager": "kubectl-create",
            "operation": "Update",
            "time": "t0",
            "fieldsV1": {
                "f:spec": {
                    "f:template": {
                        "f:spec": {
                            "f:containers": {
                                'k:{"name":"app"}': {".": {}, "f:image": {}, "f:name": {}},
                                'k:{"name":"proxy"}': {".": {}, "f:image": {}, "f:name": {}},
                            }
                        }
                    }
                }
            },
        },
        {
            "manager": "kube-controller-manager",
            "operation": "Update",
            "subresource": "status",
            "fieldsV1": {"f:status": {}},
        },
        {
            "manager": "kubectl",
            "operation": "Apply",
            "time": "t2",
            "fieldsV1": {
                "f:spec": {
                    "f:template": {
                        "f:spec": {"f:containers": {'k:{"name":"app"}': {"f:image": {}}}}
                    }
                }
            },
        },
    ]
    owners = rollout.image_owners(fields)
    assert owners == {
        "app": FieldOwner("kubectl", "Apply", "t2"),
        "proxy": FieldOwner("kubectl-create", "Update", "t0"),
    }


def test_a_failed_rollout_is_rolled_back_and_the_commit_remembered() -> None:
    p = plan(deployed(status=DEADLINE))
    assert p.action is Action.ROLLED_BACK and p.rollout is Rollout.FAILED
    assert p.failed_sha == BAD and "timed out" in p.reason
    w = p.write
    assert w is not None and w.image == img(GOOD) and w.resource_version == "7"
    assert w.annotations[ann.FAILED_SHA] == BAD
    assert w.annotations[ann.SHA] == GOOD
    assert w.annotations[ann.PREVIOUS_IMAGE] is None
    assert [e.reason for e in w.events] == ["RolloutFailed", "RolledBack"]
    assert all(k.startswith("reconciler.dev/") for k in w.annotations)


def test_stuck_pods_fail_a_rollout_only_after_the_rollout_timeout() -> None:
    d = deployed(status=STUCK)
    short = replace(SITE, rollout_timeout=30)
    assert rollout.wants_pods(short, d, "app", NOW)  # updated 60 s ago
    assert not rollout.wants_pods(replace(SITE, rollout_timeout=120), d, "app", NOW)
    assert not rollout.wants_pods(short, deployed(), "app", NOW)  # available
    p = plan(d, troubles=("pod blog-x: CrashLoopBackOff (4 restarts)",))
    assert p.action is Action.ROLLED_BACK and "CrashLoopBackOff" in p.reason
    assert plan(d).action is Action.IN_SYNC and plan(d).rollout is Rollout.PROGRESSING


def test_a_remembered_bad_commit_is_skipped_until_the_branch_moves() -> None:
    after = deployed(GOOD, failed_sha=BAD, failed_reason="timed out")
    after = replace(
        after,
        annotations={
            k: v
            for k, v in after.annotations.items()
            if k not in (ann.PREVIOUS_IMAGE, ann.PREVIOUS_SHA)
        },
    )
    p = plan(after, head=BAD)
    assert p.action is Action.SKIP and "failed" in p.reason and p.write is None
    assert plan(after, head=NEXT).action is Action.UPDATE


def test_a_rollback_that_fails_too_is_not_rolled_back_again() -> None:
    after = deployed(GOOD, status=DEADLINE, failed_sha=BAD)
    after = replace(
        after,
        annotations={k: v for k, v in after.annotations.items() if k != ann.PREVIOUS_IMAGE},
    )
    p = plan(after, head=BAD)
    assert p.action is Action.SKIP and p.rollout is Rollout.FAILED


@pytest.mark.parametrize("manager", ["kubectl-rollout", "kubectl-set", "kubectl-edit", "argocd"])
def test_another_managers_image_change_holds_the_site(manager: str) -> None:
    d = deployed(GOOD, owner=manager)
    first = plan(d, head=BAD)
    assert first.action is Action.HELD and first.held_by == manager
    assert manager in first.reason and "reconciler resume blog" in first.reason
    assert first.write is not None and first.write.image is None
    assert first.write.annotations == {ann.HELD_HEAD: BAD}
    held = replace(d, annotations={**d.annotations, ann.HELD_HEAD: BAD})
    again = plan(held, head=BAD)
    assert again.action is Action.HELD and again.write is None
    moved = plan(held, head=NEXT)
    assert moved.action is Action.UPDATE and ann.HELD_HEAD in moved.clear
    change = planner.change_for(moved)
    assert change.previous_sha == ""  # the person's image came from no commit we know


def test_never_managed_deployment_is_adopted_not_held() -> None:
    d = replace(
        deployed(GOOD, owner="kubectl-create"),
        annotations={ann.NOTIFIED: "{}"},  # annotations of its own do not make it managed
    )
    assert plan(d, head=NEXT).action is Action.UPDATE


def test_explicit_hold_until_resumed_and_resume_outranks_an_older_manual_change() -> None:
    d = deployed(GOOD, hold="incident 42", hold_by="alice", hold_at="2027-01-15T08:00:00Z")
    p = plan(d, head=NEXT)
    assert p.action is Action.HELD and "incident 42" in p.reason and p.held_by == "alice"
    manual = deployed(GOOD, owner="kubectl-set", resumed_at="2027-01-15T09:00:00Z")
    assert plan(manual, head=NEXT).action is Action.UPDATE


def world() -> tuple[config.Config, FakeHeads, FakeCluster, Engine]:
    cfg = config.parse(
        '[sites.blog]\nrepo = "acme/blog"\nbranch = "main"\nnamespace = "web"\n'
        'container = "app"\nimage = "gcr.io/p/blog:{sha}"\nverify = "none"\n'
    )
    heads = FakeHeads()
    heads.set("acme/blog", "main", BAD)
    cluster = FakeCluster(now=NOW)
    cluster.add(deployed(status=DEADLINE))
    engine = Engine(heads=heads, cluster=cluster, verifier=FakeVerifier(), clock=lambda: NOW)
    return cfg, heads, cluster, engine


def test_sync_rolls_back_then_writes_nothing_then_deploys_the_next_commit() -> None:
    cfg, heads, cluster, engine = world()
    first = engine.run(cfg, SyncRequest()).results[0]
    assert first.action is Action.ROLLED_BACK and first.applied
    assert first.as_dict()["action"] == "rolled-back" and first.as_dict()["rollout"] == "failed"
    d = cluster.deployments[("web", "blog")]
    assert d.containers[0].image == img(GOOD)
    cluster.deployments[("web", "blog")] = replace(d, status=deployed().status)
    assert len(cluster.patches) == 1
    second = engine.run(cfg, SyncRequest()).results[0]
    assert second.action is Action.SKIP and "failed" in second.plan.reason
    assert len(cluster.patches) == 1 and cluster.applied == []
    heads.set("acme/blog", "main", NEXT)
    third = engine.run(cfg, SyncRequest()).results[0]
    assert third.action is Action.UPDATE and third.applied
    assert cluster.deployments[("web", "blog")].containers[0].image == img(NEXT)


def test_follow_rolls_back_once_even_when_two_followers_race() -> None:
    cfg, _, cluster, engine = world()
    other = Engine(heads=FakeHeads(), cluster=cluster, verifier=FakeVerifier(), clock=lambda: NOW)
    stale = cluster.deployments[("web", "blog")]
    assert engine.follow(cfg.sites[0]).applied
    cluster.deployments[("web", "blog")] = replace(
        cluster.deployments[("web", "blog")], status=stale.status
    )  # the controller has not caught up: still "failed" on the API server
    assert not other.follow(cfg.sites[0]).applied
    assert len(cluster.patches) == 1


def test_wait_returns_when_no_rollout_is_progressing() -> None:
    cfg, _, _, engine = world()
    out = engine.wait(cfg, ["blog"], timeout=0)
    assert out["blog"].action is Action.ROLLED_BACK


def test_hold_resume_and_rollback_commands() -> None:
    cfg, heads, cluster, engine = world()
    site = cfg.sites[0]
    cluster.deployments[("web", "blog")] = deployed(NEXT, previous=GOOD)
    heads.set("acme/blog", "main", NEXT)
    done = commands.rollback(engine, site, by="alice")
    assert done.image == img(GOOD)
    d = cluster.deployments[("web", "blog")]
    assert d.containers[0].image == img(GOOD) and d.annotations[ann.HOLD_BY] == "alice"
    assert [e.reason for e in cluster.patches[-1].events] == ["RolledBack"]
    held = engine.run(cfg, SyncRequest()).results[0]
    assert held.action is Action.HELD and not held.applied
    commands.resume(engine, site, by="alice")
    resumed = engine.run(cfg, SyncRequest()).results[0]
    assert resumed.action is Action.UPDATE and resumed.applied
    commands.hold(engine, site, by="bob", reason="freeze")
    heads.set("acme/blog", "main", BAD)
    assert engine.run(cfg, SyncRequest()).results[0].action is Action.HELD
    commands.rollback(engine, site, by="bob", to=GOOD)
    assert cluster.deployments[("web", "blog")].containers[0].image == img(GOOD)
    with pytest.raises(commands.CommandError, match="40-character"):
        commands.rollback(engine, site, by="bob", to="abc")


class CountingLease:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.busy = False

    def acquire(self) -> bool:
        if self.busy:
            raise ReconcilerError("another replica holds the Lease")
        self.calls.append("acquire")
        return False

    def renew(self) -> None:
        self.calls.append("renew")

    def release(self) -> None:
        self.calls.append("release")


def test_shared_lease_is_released_by_its_last_user_only() -> None:
    lease = CountingLease()
    shared = SharedLease(lease)
    shared.acquire()  # a sync
    shared.acquire()  # the follower, meanwhile
    shared.release()
    assert lease.calls == ["acquire"]
    shared.release()
    assert lease.calls == ["acquire", "release"]


def test_follower_rolls_back_only_when_it_can_take_the_lease() -> None:
    cfg, _, cluster, engine = world()
    seen: list[tuple[SiteResult, Rollout | None]] = []
    lease = CountingLease()
    lease.busy = True
    follower = Follower(
        engine, lambda: cfg, on_result=lambda r, b: seen.append((r, b)), lease=lease
    )
    follower.track(["blog"])
    follower.tick()
    assert (
        cluster.patches == [] and seen == [] and follower.tracked == {"blog": Rollout.PROGRESSING}
    )
    lease.busy = False
    follower.tick()
    assert len(cluster.patches) == 1 and seen[0][0].applied
    assert follower.tracked == {} and lease.calls == ["acquire", "release"]
    stored = SiteResult(
        replace(plan(deployed(status=DEADLINE)), action=Action.UPDATE), applied=True
    )
    after = merged(stored, seen[0][0])
    assert after.action is Action.ROLLED_BACK and after.state.value == "rolled-back"


def test_a_rollback_by_another_replica_shows_on_this_ones_page() -> None:
    cfg, _, _, engine = world()
    engine.follow(cfg.sites[0])
    theirs = engine.follow(cfg.sites[0], act=False)
    mine = SiteResult(plan(deployed(status=STUCK)))  # in sync with BAD, progressing
    after = merged(mine, theirs)
    assert after.action is Action.SKIP and after.state.value == "rolled-back"
    assert after.plan.failed_sha == BAD


def test_a_followed_rollout_that_ends_updates_the_sites_progress() -> None:
    cfg, _, cluster, engine = world()
    cluster.deployments[("web", "blog")] = deployed()  # available
    stored = SiteResult(plan(deployed(status=STUCK)))
    after = merged(stored, engine.follow(cfg.sites[0], act=False))
    assert after.plan.rollout is Rollout.AVAILABLE and after.plan.progress == "3/3 ready"
    assert after.action is Action.IN_SYNC


def test_rollback_to_a_commit_deploys_its_verified_digest() -> None:
    cfg, heads, cluster, _ = world()
    verifier = FakeVerifier(digests={img(GOOD): "sha256:" + "d" * 64})
    engine = Engine(heads=heads, cluster=cluster, verifier=verifier, clock=lambda: NOW)
    site = replace(cfg.sites[0], verify="registry")
    cluster.deployments[("web", "blog")] = deployed(NEXT, previous=GOOD)
    done = commands.rollback(engine, site, by="bob", to=GOOD)
    pinned = f"{img(GOOD)}@sha256:{'d' * 64}"
    assert done.image == pinned
    assert cluster.deployments[("web", "blog")].containers[0].image == pinned


def test_the_follower_finds_at_start_a_failed_rollout_no_sync_of_its_own_reported() -> None:
    """A replica that dies after its patch leaves a rollout nobody's report names: the survivor
    finds it from what the cluster says (#24)."""
    cfg, _, cluster, engine = world()
    seen: list[tuple[SiteResult, Rollout | None]] = []
    follower = Follower(
        engine, lambda: cfg, on_result=lambda r, b: seen.append((r, b)), interval=0.01
    )
    follower.start()  # no track(): no sync of this replica saw the rollout
    try:
        wait_until(lambda: seen, "the follower to roll the failed rollout back")
    finally:
        follower.stop()
    assert len(cluster.patches) == 1 and seen[0][0].applied
    assert cluster.deployments[("web", "blog")].containers[0].image == img(GOOD)


def test_a_sweep_tracks_rollouts_in_progress_only() -> None:
    cfg, _, cluster, engine = world()
    follower = Follower(engine, lambda: cfg, on_result=lambda r, b: None)
    cluster.deployments[("web", "blog")] = deployed(status=STUCK)
    follower._discover()
    assert follower.tracked == {"blog": Rollout.PROGRESSING} and cluster.patches == []
    follower.tracked.clear()
    cluster.deployments[("web", "blog")] = deployed()  # available: nothing to follow
    follower._discover()
    assert follower.tracked == {}


class TakenOverLease(CountingLease):
    """acquire() says another replica held the Lease since (the first time only)."""

    def acquire(self) -> bool:
        super().acquire()
        return self.calls.count("acquire") == 1


def test_taking_the_lease_after_another_replica_starts_a_sweep() -> None:
    lease = TakenOverLease()
    shared = SharedLease(lease)
    swept: list[str] = []
    shared.on_taken_over = lambda: swept.append("sweep")
    assert shared.acquire() is True and swept == ["sweep"]
    assert shared.acquire() is False  # held here already (a sync and the follower)
    shared.release()
    shared.release()
    assert shared.acquire() is False and swept == ["sweep"]  # this replica held it last


def test_each_container_of_one_workload_keeps_its_own_previous_image() -> None:
    notes = {
        ann.PREVIOUS_IMAGE: "gcr.io/p/worker:before",  # the workload's last change: the worker
        ann.previous_image_of("app"): "gcr.io/p/shop:before",
        ann.previous_image_of("worker"): "gcr.io/p/worker:before",
    }
    assert rollout.previous_image(notes, "app") == "gcr.io/p/shop:before"
    assert rollout.previous_image(notes, "worker") == "gcr.io/p/worker:before"
    older = {ann.PREVIOUS_IMAGE: "gcr.io/p/shop:before"}  # written before one per container
    assert rollout.previous_image(older, "app") == "gcr.io/p/shop:before"
    long = ann.previous_image_of("c" * 63)
    assert len(long.removeprefix(ann.PREFIX)) == 63
    assert long != ann.previous_image_of("c" * 62 + "d")
