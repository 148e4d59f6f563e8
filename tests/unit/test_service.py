"""The service behind `serve`, in-process with fakes: reload, schedule, lease, status."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.core.errors import KubernetesError, LeaseBusy, ReconcilerError
from reconciler.core.model import Container, ObservedDeployment, SyncRequest
from reconciler.serve.service import Service
from reconciler.sync.engine import Engine
from reconciler.wiring import build_service
from testkit.wait import wait_until
from tests.fakes import FakeCluster, FakeHeads, FakeVerifier, GatedCluster

SITES = """\
[defaults]
image = "gcr.io/p/{repo}:{sha}"

[service]
schedule = "*/5 * * * *"

[sites.blog]
repo = "acme/blog"
"""


class BusyLease:
    def __init__(self) -> None:
        self.acquired = 0

    def acquire(self) -> bool:
        raise ReconcilerError("replica pod-b is syncing")

    def renew(self) -> None: ...

    def release(self) -> None: ...


class FreeLease(BusyLease):
    released = 0

    def acquire(self) -> bool:
        self.acquired += 1
        return False

    def release(self) -> None:
        self.released += 1


def service(tmp_path: Path, **kw: object) -> tuple[Service, FakeCluster, Path]:
    path = tmp_path / "sites.toml"
    path.write_text(SITES)
    heads = FakeHeads()
    heads.set("acme/blog", None, "a" * 40)
    cluster = FakeCluster()
    cluster.add(
        ObservedDeployment(
            "default", "blog", (Container("app", "gcr.io/p/blog:x"),), resource_version="1"
        )
    )
    engine = Engine(heads=heads, cluster=cluster, verifier=FakeVerifier())
    return build_service(str(path), engine, **kw), cluster, path  # type: ignore[arg-type]


def test_reload_keeps_the_last_good_config(tmp_path: Path) -> None:
    svc, _, path = service(tmp_path)
    assert svc.site_names() == ("blog",)
    path.write_text(SITES + "typo = 1\n")
    assert svc.reload() is not None and svc.site_names() == ("blog",)
    assert svc.config.error and 'sites.toml:9: site "blog": unknown key "typo"' in svc.config.error
    assert svc.readiness()["checks"]["config_warning"] == svc.config.error
    path.write_text(SITES + '\n[sites.shop]\nrepo = "acme/shop"\n')
    svc.reload()
    assert svc.config.error is None and svc.site_names() == ("blog", "shop")


def test_schedule_runs_through_the_runner_and_follows_the_file(tmp_path: Path) -> None:
    svc, _, path = service(tmp_path)
    svc.start_schedule()
    try:
        first = svc.next_run()
        assert first is not None
        assert svc.status()["schedule"] == "*/5 * * * *"
        # 03:07 is never on a 5-minute mark, so the next runs differ at any time of day
        path.write_text(SITES.replace("*/5 * * * *", "7 3 * * *"))
        svc.reload()
        assert svc.next_run() != first
        assert svc.scheduler is not None
        assert svc.scheduler.get_job("sync").trigger.fields[5].expressions[0].first == 3  # hour
        svc._scheduled()  # what APScheduler calls at the cron time
        record = next(iter(svc.runs.values()))
        report = record.future.result(5)
        assert report.trigger == "schedule" and report.updated == 1
        assert svc.status()["sites"][0]["state"] == "in-sync"
    finally:
        svc.shutdown(5)


def test_busy_lease_fails_the_run_so_pubsub_nacks(tmp_path: Path) -> None:
    svc, cluster, _ = service(tmp_path, lease=BusyLease(), lease_wait=0)
    future = svc.submit_future(SyncRequest(trigger="pubsub"))
    with pytest.raises(ReconcilerError, match="pod-b"):
        future.result(5)
    assert cluster.applied == []


def test_lease_is_held_for_the_sync_and_released(tmp_path: Path) -> None:
    lease = FreeLease()
    svc, cluster, _ = service(tmp_path, lease=lease)
    svc.submit_future(SyncRequest()).result(5)
    assert (lease.acquired, lease.released) == (1, 1) and len(cluster.applied) == 1


def test_shutdown_refuses_new_triggers(tmp_path: Path) -> None:
    from reconciler.sync.runner import ShuttingDown

    svc, _, _ = service(tmp_path)
    svc.shutdown(1)
    with pytest.raises(ShuttingDown):
        svc.submit(SyncRequest())
    assert svc.readiness()["ready"] is False


class LosingLease(FreeLease):
    """A Lease whose renewal fails (taken by another replica, deleted, or a client bug)."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error: Exception | None = error
        self.renew_failures = 0

    def renew(self) -> None:
        if self.error is not None:
            self.renew_failures += 1
            raise self.error


@pytest.mark.parametrize(
    "error",
    [LeaseBusy("lost the Lease"), KubernetesError("cannot read Lease: not found"), KeyError("x")],
)
def test_a_lost_lease_stops_every_further_patch(tmp_path: Path, error: Exception) -> None:
    path = tmp_path / "sites.toml"
    path.write_text(SITES)
    heads = FakeHeads()
    heads.set("acme/blog", None, "a" * 40)
    cluster = GatedCluster()
    cluster.add(ObservedDeployment("default", "blog", (Container("app", "gcr.io/p/blog:x"),)))
    lease = LosingLease(error)
    engine = Engine(heads=heads, cluster=cluster, verifier=FakeVerifier())
    svc = build_service(str(path), engine, lease=lease, lease_renew_every=0.01)
    try:
        future = svc.submit_future(SyncRequest())
        assert cluster.entered.wait(5)  # the run holds the Lease and is planning
        wait_until(lambda: lease.renew_failures > 0, "a failed renewal")
        cluster.gate.set()
        blog = future.result(5).results[0]
        assert cluster.applied == [] and not blog.applied
        assert blog.plan.error_kind == "lease" and "Lease" in blog.plan.reason
        lease.error = None  # the next run holds the Lease again, and patches
        again = svc.submit_future(SyncRequest()).result(5).results[0]
        assert again.applied and len(cluster.applied) == 1
        assert lease.acquired == 2 and lease.released == 2
    finally:
        cluster.gate.set()
        svc.shutdown(5)


def test_a_steady_sync_keeps_the_results_it_shares_with_the_last_one_once(
    tmp_path: Path,
) -> None:
    """Up to RUN_HISTORY reports stay readable at /runs: a result equal to the site's last one
    is that same object, so steady syncs add no copy of every site's verdict."""
    svc, cluster, _ = service(tmp_path)
    first = svc.run(SyncRequest(trigger="test"))
    (deployed,) = first.results
    assert deployed.applied  # the first run deploys the head
    second = svc.run(SyncRequest(trigger="test"))
    third = svc.run(SyncRequest(trigger="test"))
    (steady,) = second.results
    assert not steady.applied and steady.plan.action.value == "in-sync"
    assert third.results[0] is steady  # the same verdict again: held once
    assert third.results == second.results
    cluster.add(
        ObservedDeployment(
            "default", "blog", (Container("app", "gcr.io/p/blog:y"),), resource_version="9"
        )
    )
    fourth = svc.run(SyncRequest(trigger="test"))
    assert fourth.results[0] is not steady and fourth.results[0].applied  # a new verdict
