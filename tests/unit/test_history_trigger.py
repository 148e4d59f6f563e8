"""Who triggered a deploy: recorded on the Deployment in the image change's own patch, read back
from the ReplicaSets by `reconciler history`."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from reconciler.adapters.kube import patch_body
from reconciler.core import annotations as ann
from reconciler.core.model import Container, ImageChange, ObservedDeployment, SyncRequest
from reconciler.core.rollout import history
from reconciler.core.rollout.history import REVISION, REVISION_HISTORY, ReplicaSetRecord
from reconciler.sync import commands
from reconciler.sync.engine import Engine
from tests.unit.test_engine import world
from tests.unit.test_rollout import GOOD, NEXT, deployed
from tests.unit.test_rollout import world as rollout_world

SHA = "a" * 40
OLD = "b" * 40


def test_every_trigger_is_recorded_in_the_same_write_as_the_image() -> None:
    for trigger in ("schedule", "http", "pubsub", "webhook", "cli"):
        cfg, heads, cluster, verifier = world()
        Engine(heads=heads, cluster=cluster, verifier=verifier).run(
            cfg, SyncRequest(trigger=trigger)
        )
        assert cluster.applied, trigger
        for change, _ in cluster.applied:
            assert change.trigger == trigger
            observed = cluster.read(change.namespace, change.deployment)
            assert observed is not None
            assert observed.annotations[ann.TRIGGER] == trigger
        assert not cluster.patches  # no extra write for it


def test_the_patch_body_carries_the_trigger_beside_the_image() -> None:
    change = ImageChange("web", "blog", "app", f"img:{SHA}", "img:old", "acme/blog", "main", SHA)
    now = datetime(2026, 11, 30, tzinfo=UTC)
    body = patch_body(replace(change, trigger="schedule"), now)
    assert body["metadata"]["annotations"][ann.TRIGGER] == "schedule"
    assert body["spec"]["template"]["spec"]["containers"][0]["image"] == f"img:{SHA}"
    # an update without a trigger removes a stale one rather than keeping it
    assert patch_body(change, now)["metadata"]["annotations"][ann.TRIGGER] is None


def test_rollbacks_record_the_follower_the_sync_or_the_person() -> None:
    cfg, _, cluster, engine = rollout_world()
    assert engine.follow(cfg.sites[0]).applied
    assert cluster.patches[-1].annotations[ann.TRIGGER] == "rollback (follower)"
    cfg, _, cluster, engine = rollout_world()
    engine.run(cfg, SyncRequest(trigger="schedule"))
    assert cluster.patches[-1].annotations[ann.TRIGGER] == "rollback (schedule)"
    cluster.deployments[("web", "blog")] = deployed(NEXT, previous=GOOD)
    commands.rollback(engine, cfg.sites[0], by="alice (http)")
    notes = cluster.deployments[("web", "blog")].annotations
    assert notes[ann.TRIGGER] == "alice (http) (rollback command)"
    assert len(cluster.patches) == 2  # one write per rollback


def _rs(revision: int, image: str, **notes: str) -> ReplicaSetRecord:
    return ReplicaSetRecord(
        name=f"blog-{revision}",
        created=f"2026-11-30T10:0{revision}:00Z",
        images={"app": image},
        annotations={REVISION: str(revision), **notes},
    )


def test_history_shows_the_trigger_only_for_revisions_the_reconciler_made() -> None:
    d = ObservedDeployment(
        "web", "blog", (Container("app", f"img:{SHA}"),), annotations={REVISION: "5"}
    )
    rows = history.deploys(
        d,
        "app",
        [
            _rs(1, "img:handmade", **{ann.TRIGGER: "cli"}),  # stale: copied from the Deployment
            _rs(2, f"img:{OLD}", **{ann.SHA: OLD, ann.TRIGGER: "schedule"}),
            _rs(3, f"img:{SHA}", **{ann.SHA: SHA, ann.TRIGGER: "webhook"}),
            _rs(
                4,
                f"img:{OLD}",
                **{
                    ann.SHA: OLD,
                    REVISION_HISTORY: "2",
                    ann.FAILED_SHA: SHA,
                    ann.TRIGGER: "rollback (follower)",
                },
            ),
            _rs(
                5,
                f"img:{SHA}",
                **{
                    ann.SHA: SHA,
                    REVISION_HISTORY: "3",
                    ann.HOLD_BY: "ana",
                    ann.TRIGGER: "ana (rollback command)",
                },
            ),
        ],
    )
    got = {r.revision: r.trigger for r in rows}
    assert got == {
        5: "ana (rollback command)",
        4: "rollback (follower)",
        3: "webhook",
        2: "schedule",
        1: None,
    }
    assert rows[0].as_dict()["trigger"] == "ana (rollback command)"
