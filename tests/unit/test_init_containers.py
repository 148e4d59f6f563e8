"""Init containers (#19): a target's init_containers are parts of the site's release like its
containers, set at the pod template's initContainers in the same write as the containers of the
same workload; a crash-looping init container fails the rollout and every part goes back to its
own previous image; a person's change of one holds the site (core rules, then the engine on
the fakes)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from reconciler.adapters.kube import pod_troubles, smp_body
from reconciler.core import annotations as ann
from reconciler.core import workloads
from reconciler.core.config import sites as config
from reconciler.core.model import (
    CRONJOB,
    Action,
    Container,
    DeploymentPatch,
    DeploymentStatus,
    FieldOwner,
    ObservedDeployment,
    SetImage,
    SiteResult,
    SyncRequest,
)
from reconciler.core.rollout import state as rollout
from reconciler.sync import commands
from reconciler.sync.engine import Engine
from tests.fakes import FakeCluster, FakeHeads, FakeVerifier

ONE, TWO = "1" * 40, "2" * 40
SITES = """\
[sites.shop]
repo = "acme/shop"
namespace = "shop"
image = "gcr.io/p/shop:{sha}"
rollout_timeout = 1

[[sites.shop.targets]]
name = "web"
containers = ["app"]
init_containers = ["migrate"]
images = { migrate = "gcr.io/p/migrate:{sha}" }
"""
NIGHTLY = """
[[sites.shop.targets]]
kind = "CronJob"
name = "nightly"
"""


class World:
    def __init__(self, text: str = SITES) -> None:
        self.cfg = config.parse(text)
        self.heads = FakeHeads()
        self.cluster = FakeCluster()
        self.cluster.add(
            ObservedDeployment(
                "shop",
                "web",
                (Container("app", "gcr.io/p/shop:old"),),
                init_containers=(Container("migrate", "gcr.io/p/migrate:old"),),
                resource_version="1",
            )
        )
        self.now = 1_800_000_000.0
        self.engine = Engine(
            heads=self.heads, cluster=self.cluster, verifier=FakeVerifier(), clock=lambda: self.now
        )
        self.engine.conflict_pause = lambda _: 0.0

    def sync(self, sha: str) -> SiteResult:
        self.heads.set("acme/shop", None, sha)
        (result,) = self.engine.run(self.cfg, SyncRequest()).results
        return result

    @property
    def web(self) -> ObservedDeployment:
        return self.cluster.deployments[("shop", "web")]

    def images(self) -> tuple[str | None, str | None]:
        return self.web.image_of("app"), self.web.image_of("migrate")


def test_the_init_container_and_the_container_move_together_in_one_write() -> None:
    w = World()
    result = w.sync(ONE)
    assert result.action is Action.UPDATE and result.applied, result.plan.reason
    assert w.images() == (f"gcr.io/p/shop:{ONE}", f"gcr.io/p/migrate:{ONE}")
    (patch,) = w.cluster.patches  # one pod template change, not one per container
    assert {(i.container, i.init) for i in patch.images} == {("app", False), ("migrate", True)}
    notes = w.web.annotations
    assert notes[ann.SHA] == ONE
    assert notes[ann.previous_image_of("app")] == "gcr.io/p/shop:old"
    assert notes[ann.previous_image_of("migrate")] == "gcr.io/p/migrate:old"
    rows = result.as_dict()["targets"]
    assert isinstance(rows, list)
    assert [(r["container"], r["init"], r["action"]) for r in rows] == [
        ("app", False, "update"),
        ("migrate", True, "update"),
    ]
    assert w.sync(ONE).action is Action.IN_SYNC


def test_a_crash_looping_init_container_rolls_back_every_part_to_its_own_previous_image() -> None:
    w = World()
    w.sync(ONE)
    w.sync(TWO)
    assert w.images() == (f"gcr.io/p/shop:{TWO}", f"gcr.io/p/migrate:{TWO}")
    # the new pods stay Pending (Init:CrashLoopBackOff); the Deployment has not failed by itself
    status = DeploymentStatus(observed_generation=w.web.generation, replicas=2, updated=1)
    w.cluster.add(replace(w.web, status=status))
    stuck = ("pod web-2: CrashLoopBackOff (4 restarts)",)
    w.cluster.troubles[f"shop/gcr.io/p/migrate:{TWO}"] = stuck
    w.now += 60  # past the site's rollout_timeout
    back = w.sync(TWO)
    assert back.action is Action.ROLLED_BACK and back.applied, back.plan.reason
    assert "init container migrate" in back.plan.reason and "CrashLoopBackOff" in back.plan.reason
    assert w.images() == (f"gcr.io/p/shop:{ONE}", f"gcr.io/p/migrate:{ONE}")
    notes = w.web.annotations
    assert notes[ann.FAILED_SHA] == TWO and notes[ann.SHA] == ONE
    assert ann.previous_image_of("migrate") not in notes
    assert len(w.cluster.patches) == 3  # one write per sync
    again = w.sync(TWO)
    assert again.action is Action.SKIP and again.plan.failed_sha == TWO
    assert w.images() == (f"gcr.io/p/shop:{ONE}", f"gcr.io/p/migrate:{ONE}")


def test_the_follower_rolls_back_both_through_conflicts_of_a_busy_deployment() -> None:
    w = World()
    w.sync(ONE)
    w.sync(TWO)
    status = DeploymentStatus(observed_generation=w.web.generation, replicas=2, updated=1)
    w.cluster.add(replace(w.web, status=status))
    w.cluster.troubles[f"shop/gcr.io/p/migrate:{TWO}"] = ("pod web-2: CrashLoopBackOff",)
    w.now += 60
    w.cluster.patch_conflicts = 2  # the controller keeps moving the resourceVersion
    (site,) = w.cfg.sites
    back = w.engine.follow(site)
    assert back.action is Action.ROLLED_BACK and back.applied, back.plan.reason
    assert w.images() == (f"gcr.io/p/shop:{ONE}", f"gcr.io/p/migrate:{ONE}")
    assert w.web.annotations[ann.FAILED_SHA] == TWO


def test_a_persons_change_of_the_init_container_holds_the_site() -> None:
    w = World()
    w.sync(ONE)
    w.cluster.add(
        replace(
            w.web,
            init_containers=(Container("migrate", "gcr.io/p/migrate:hotfix"),),
            image_owners={
                **w.web.image_owners,
                "migrate": FieldOwner("kubectl-set", "Update", "2026-01-01T00:00:00Z"),
            },
        )
    )
    held = w.sync(TWO)
    assert held.action is Action.HELD, held.plan.reason
    assert held.plan.reason.startswith("Deployment/web (init container migrate): image set to")
    assert w.images() == (f"gcr.io/p/shop:{ONE}", "gcr.io/p/migrate:hotfix")


def test_rollback_sets_each_container_back_to_its_own_previous_image() -> None:
    w = World()
    w.sync(ONE)
    w.sync(TWO)
    (site,) = w.cfg.sites
    commands.rollback(w.engine, site, by="alice")
    assert w.images() == (f"gcr.io/p/shop:{ONE}", f"gcr.io/p/migrate:{ONE}")
    assert w.web.annotations[ann.SHA] == ONE and ann.HOLD in w.web.annotations
    commands.resume(w.engine, site, by="alice")
    commands.rollback(w.engine, site, by="alice", to=TWO)
    assert w.images() == (f"gcr.io/p/shop:{TWO}", f"gcr.io/p/migrate:{TWO}")


def test_a_refused_patch_puts_both_back_in_one_write() -> None:
    w = World(SITES + NIGHTLY)
    w.cluster.add(
        ObservedDeployment(
            "shop", "nightly", (Container("job", "gcr.io/p/shop:old"),), kind=CRONJOB
        )
    )
    w.cluster.fail["nightly"] = "admission said no"
    result = w.sync(ONE)
    assert result.action is Action.ERROR
    assert "put back Deployment/web (app), Deployment/web (init container migrate)" in (
        result.plan.reason
    )
    assert w.images() == ("gcr.io/p/shop:old", "gcr.io/p/migrate:old")
    assert ann.previous_image_of("migrate") not in w.web.annotations


def test_only_the_init_container_when_containers_is_empty() -> None:
    w = World(SITES.replace('containers = ["app"]', "containers = []"))
    result = w.sync(ONE)
    assert result.action is Action.UPDATE and result.applied, result.plan.reason
    assert w.images() == ("gcr.io/p/shop:old", f"gcr.io/p/migrate:{ONE}")
    assert w.web.annotations[ann.PREVIOUS_IMAGE] == "gcr.io/p/migrate:old"


# --- the pure rules ----------------------------------------------------------------------------


def test_a_persons_image_change_is_read_from_f_init_containers() -> None:
    fields: dict[str, object] = {
        "f:spec": {
            "f:template": {
                "f:spec": {"f:initContainers": {'k:{"name":"migrate"}': {"f:image": {}}}}
            }
        }
    }
    entry = {"manager": "kubectl-set", "operation": "Update", "fieldsV1": fields}
    assert rollout.image_owners([entry])["migrate"].manager == "kubectl-set"


def test_stuck_init_containers_are_troubles() -> None:
    pod = {
        "metadata": {"name": "web-2"},
        "spec": {
            "initContainers": [{"name": "migrate", "image": "m:2"}],
            "containers": [{"name": "app", "image": "a:2"}],
        },
        "status": {
            "phase": "Pending",
            "initContainerStatuses": [
                {
                    "name": "migrate",
                    "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                }
            ],
            "containerStatuses": [
                {"name": "app", "state": {"waiting": {"reason": "PodInitializing"}}}
            ],
        },
    }
    assert pod_troubles([pod], "migrate", "m:2") == ("pod web-2: CrashLoopBackOff (3 restarts)",)
    assert pod_troubles([pod], "app", "a:2") == ()
    want = {"migrate": "m:2", "app": "a:2"}
    assert workloads.stuck_pods(want, [pod]) == ("pod web-2: CrashLoopBackOff (3 restarts)",)


def test_a_merged_write_sets_containers_and_init_containers_by_name() -> None:
    patch = DeploymentPatch(
        "shop",
        "web",
        {},
        container="app",
        image="a:2",
        also=(SetImage("migrate", "m:2", init=True),),
    )
    assert smp_body(patch)["spec"] == {
        "template": {
            "spec": {
                "containers": [{"name": "app", "image": "a:2"}],
                "initContainers": [{"name": "migrate", "image": "m:2"}],
            }
        }
    }
    merged = rollout.merge(
        [
            DeploymentPatch(
                "shop", "web", {ann.PREVIOUS_IMAGE: "a:1"}, container="app", image="a:2"
            ),
            DeploymentPatch(
                "shop", "web", {ann.PREVIOUS_IMAGE: "m:1"}, container="m", image="m:2", init=True
            ),
        ]
    )
    assert merged.annotations[ann.PREVIOUS_IMAGE] == "a:1"  # the first's
    assert [(i.container, i.init) for i in merged.images] == [("app", False), ("m", True)]


def test_the_page_and_status_name_the_init_container(tmp_path: Path) -> None:
    from reconciler.serve.app import create_app
    from reconciler.wiring import build_service

    w = World()
    w.heads.set("acme/shop", None, ONE)
    path = tmp_path / "sites.toml"
    path.write_text(SITES)
    svc = build_service(str(path), w.engine)
    client = create_app(svc, trigger_token="t0ken").test_client()
    auth = {"Authorization": "Bearer t0ken"}
    svc.submit(SyncRequest(trigger="http")).future.result(30)
    page = client.get("/", headers=auth).get_data(as_text=True)
    status = client.get("/status", headers=auth).get_json()
    svc.shutdown(5)
    assert "init container <code>migrate</code>" in page
    (row,) = status["sites"]
    assert [(t["container"], t["init"]) for t in row["targets"]] == [
        ("app", False),
        ("migrate", True),
    ]
