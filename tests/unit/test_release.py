"""One release per site (#19, core/plan/release.py through the engine, on the fakes): every
target moves in the same run or none does; a refused patch puts back what the run patched; a
person's change of any target holds the site; a missing image of any target holds all back."""

from __future__ import annotations

from pathlib import Path

from reconciler.core import annotations as ann
from reconciler.core.config import sites as config
from reconciler.core.model import (
    CRONJOB,
    Action,
    Container,
    FieldOwner,
    ObservedDeployment,
    SyncRequest,
)
from reconciler.core.plan import release
from reconciler.sync.engine import Engine
from tests.fakes import FakeCluster, FakeHeads, FakeVerifier

SHA = "1" * 40
SITES = """\
[sites.shop]
repo = "acme/shop"
namespace = "shop"
image = "gcr.io/p/shop:{sha}"

[[sites.shop.targets]]
name = "web"
containers = ["app"]

[[sites.shop.targets]]
name = "worker"
containers = ["worker"]
images = { worker = "gcr.io/p/worker:{sha}" }

[[sites.shop.targets]]
kind = "CronJob"
name = "nightly"
"""


def world() -> tuple[config.Config, FakeCluster, FakeVerifier, Engine]:
    cfg = config.parse(SITES)
    heads = FakeHeads()
    heads.set("acme/shop", None, SHA)
    cluster = FakeCluster()
    for name, container, image, kind in [
        ("web", "app", "gcr.io/p/shop:old", "Deployment"),
        ("worker", "worker", "gcr.io/p/worker:old", "Deployment"),
        ("nightly", "job", "gcr.io/p/shop:old", CRONJOB),
    ]:
        d = ObservedDeployment(
            "shop", name, (Container(container, image),), resource_version="1", kind=kind
        )
        cluster.add(d)
    verifier = FakeVerifier()
    return cfg, cluster, verifier, Engine(heads=heads, cluster=cluster, verifier=verifier)


def images(cluster: FakeCluster) -> dict[str, str]:
    return {d.name: d.containers[0].image for d in cluster.deployments.values()}


def test_the_parts_of_a_site_are_its_targets_and_containers() -> None:
    (site,) = config.parse(SITES).sites
    parts = release.parts_of(site)
    assert [(p.targets[0].kind, p.deployment, p.container, p.image) for p in parts] == [
        ("Deployment", "web", "app", "gcr.io/p/shop:{sha}"),
        ("Deployment", "worker", "worker", "gcr.io/p/worker:{sha}"),
        ("CronJob", "nightly", None, "gcr.io/p/shop:{sha}"),
    ]


def test_every_target_moves_to_the_same_commit_in_one_run() -> None:
    cfg, cluster, verifier, engine = world()
    (result,) = engine.run(cfg, SyncRequest()).results
    assert result.action is Action.UPDATE and result.applied
    assert images(cluster) == {
        "web": f"gcr.io/p/shop:{SHA}",
        "worker": f"gcr.io/p/worker:{SHA}",
        "nightly": f"gcr.io/p/shop:{SHA}",
    }
    assert {r.image for r in verifier.seen} == {f"gcr.io/p/shop:{SHA}", f"gcr.io/p/worker:{SHA}"}
    targets = result.as_dict()["targets"]
    assert isinstance(targets, list) and [t["name"] for t in targets] == [
        "web",
        "worker",
        "nightly",
    ]
    (again,) = engine.run(cfg, SyncRequest()).results
    assert again.action is Action.IN_SYNC


def test_a_target_of_a_workload_with_several_containers_is_told_to_name_them() -> None:
    cfg, cluster, _, engine = world()
    two = (Container("job", "gcr.io/p/shop:old"), Container("proxy", "envoy:1"))
    cluster.add(ObservedDeployment("shop", "nightly", two, resource_version="1", kind=CRONJOB))
    (result,) = engine.run(cfg, SyncRequest()).results
    assert result.action is Action.ERROR and not result.applied
    assert result.plan.reason == (
        'CronJob/nightly: cronjob shop/nightly has 2 containers (job, proxy): set "container" '
        'for this site in sites.toml (in a [[targets]] table: "containers")'
    )


def test_a_refused_patch_puts_back_the_targets_already_patched() -> None:
    cfg, cluster, _, engine = world()
    cluster.fail["nightly"] = "admission webhook said no"
    (result,) = engine.run(cfg, SyncRequest()).results
    assert result.action is Action.ERROR and not result.applied
    assert result.plan.reason.startswith("CronJob/nightly (job): admission webhook said no")
    assert "put back Deployment/web (app), Deployment/worker (worker)" in result.plan.reason
    assert images(cluster) == {
        "web": "gcr.io/p/shop:old",
        "worker": "gcr.io/p/worker:old",
        "nightly": "gcr.io/p/shop:old",
    }
    web = next(d for d in cluster.deployments.values() if d.name == "web")
    assert ann.PREVIOUS_IMAGE not in web.annotations


def test_a_persons_change_of_any_target_holds_the_whole_site() -> None:
    cfg, cluster, _, engine = world()
    key = ("shop", "worker")
    cluster.deployments[key] = ObservedDeployment(
        "shop",
        "worker",
        (Container("worker", "gcr.io/p/worker:hotfix"),),
        annotations={ann.SHA: "0" * 40},
        resource_version="1",
        image_owners={"worker": FieldOwner("kubectl-set", "Update", "2026-01-01T00:00:00Z")},
    )
    (result,) = engine.run(cfg, SyncRequest()).results
    assert result.action is Action.HELD, result.plan.reason
    assert result.plan.reason.startswith("Deployment/worker (worker): image set to")
    assert images(cluster)["web"] == "gcr.io/p/shop:old"  # nothing moved


def test_a_missing_image_of_one_target_holds_every_target_back() -> None:
    cfg, cluster, verifier, engine = world()
    verifier.missing.add(f"gcr.io/p/worker:{SHA}")
    (result,) = engine.run(cfg, SyncRequest()).results
    assert result.action is Action.SKIP and not result.applied
    assert result.plan.reason.startswith("Deployment/worker (worker):")
    assert images(cluster)["web"] == "gcr.io/p/shop:old"


def test_rollback_to_a_commit_and_resume_act_on_every_target() -> None:
    from reconciler.sync import commands

    cfg, cluster, _, engine = world()
    (site,) = cfg.sites
    engine.run(cfg, SyncRequest())
    older = "2" * 40
    done = commands.rollback(engine, site, by="alice", to=older)
    assert images(cluster) == {
        "web": f"gcr.io/p/shop:{older}",
        "worker": f"gcr.io/p/worker:{older}",
        "nightly": f"gcr.io/p/shop:{older}",
    }
    assert done.image == f"gcr.io/p/shop:{older}"
    (held,) = engine.run(cfg, SyncRequest()).results
    assert held.action is Action.HELD
    commands.resume(engine, site, by="alice")
    assert all(ann.HOLD not in d.annotations for d in cluster.deployments.values())
    (moved,) = engine.run(cfg, SyncRequest()).results
    assert moved.action is Action.UPDATE and images(cluster)["worker"] == f"gcr.io/p/worker:{SHA}"


def test_the_page_shows_one_row_per_site_with_its_targets_inside(tmp_path: Path) -> None:
    from reconciler.serve.app import create_app
    from reconciler.wiring import build_service

    *_, engine = world()
    path = tmp_path / "sites.toml"
    path.write_text(SITES)
    svc = build_service(str(path), engine)
    client = create_app(svc, trigger_token="t0ken").test_client()
    auth = {"Authorization": "Bearer t0ken"}
    svc.submit(SyncRequest(trigger="http")).future.result(30)
    page = client.get("/", headers=auth).get_data(as_text=True)
    status = client.get("/status", headers=auth).get_json()
    svc.shutdown(5)
    assert page.count('data-site="shop"') == 1
    for shown in ("Deployment shop/web", "Deployment shop/worker", "CronJob shop/nightly"):
        assert shown in page, shown
    (row,) = status["sites"]
    assert [t["name"] for t in row["targets"]] == ["web", "worker", "nightly"]
