"""Two replicas, in-process (Flask test client, fakes): who leads, and a trigger that waits for
another replica's Lease is queued, never dropped (#24)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from reconciler.core.errors import LeaseBusy
from reconciler.core.model import Container, LeaseRecord, ObservedDeployment, SyncRequest
from reconciler.serve.app import create_app
from reconciler.serve.leader import DEFAULT_WAIT, LEASE_SECONDS, LeaseHolder
from reconciler.serve.service import Service
from reconciler.settings import Settings
from reconciler.sync.engine import Engine
from reconciler.wiring import build_service
from testkit.wait import wait_until
from tests.fakes import FakeHeads, FakeVerifier, GatedCluster

TOKEN = "t0ken"
SITES = """\
[defaults]
image = "gcr.io/p/{repo}:{sha}"

[sites.blog]
repo = "acme/blog"
"""


class OtherReplicaLease:
    """The Lease as pod-a sees it while pod-b holds it (until `free` is set)."""

    def __init__(self, remaining: float = 40.0) -> None:
        self.free = threading.Event()
        self.remaining = remaining
        self.acquired = self.released = 0

    def acquire(self) -> bool:
        if not self.free.is_set():
            raise LeaseBusy(
                "replica pod-b is syncing (Lease reconciler)",
                holder="pod-b",
                remaining=self.remaining,
            )
        self.acquired += 1
        return self.acquired == 1

    def renew(self) -> None: ...

    def release(self) -> None:
        self.released += 1

    def record(self) -> LeaseRecord:
        if self.free.is_set() and self.acquired > self.released:
            return LeaseRecord("pod-a", 1_800_000_000.0, 1_800_000_010.0, duration=60)
        if not self.free.is_set():
            return LeaseRecord("pod-b", acquired_at=1_700_000_000.0, renewed_at=1_700_000_030.0)
        return LeaseRecord(None)


def service(tmp_path: Path, lease: OtherReplicaLease, **kw: object) -> tuple[Service, GatedCluster]:
    path = tmp_path / "sites.toml"
    path.write_text(SITES)
    heads = FakeHeads()
    heads.set("acme/blog", None, "a" * 40)
    cluster = GatedCluster()
    cluster.add(ObservedDeployment("default", "blog", (Container("app", "gcr.io/p/blog:x"),)))
    engine = Engine(heads=heads, cluster=cluster, verifier=FakeVerifier())
    svc = build_service(
        str(path),
        engine,
        lease=lease,
        lease_record=lease.record,
        identity="pod-a",
        **kw,  # type: ignore[arg-type]
    )
    return svc, cluster


def test_a_trigger_waiting_for_the_lease_is_answered_queued_and_runs_once_it_is_free(
    tmp_path: Path,
) -> None:
    lease = OtherReplicaLease(remaining=40.0)
    svc, cluster = service(tmp_path, lease, lease_wait=0.3)
    cluster.gate.set()
    client = create_app(svc, trigger_token=TOKEN).test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        before = time.time()
        answer = client.post("/sync", headers=auth)
        assert answer.status_code == 202, answer.get_json()  # not 503: nothing is dropped
        body = answer.get_json()
        assert body["state"] == "queued" and body["waiting_for_lease"]["holder"] == "pod-b"
        assert before + 35 < body["waiting_for_lease"]["until"] < time.time() + 41
        assert "pod-b holds the Lease until" in body["message"]
        run = client.get(body["status_url"], headers=auth).get_json()
        assert run["state"] == "queued" and run["waiting_for_lease"]["holder"] == "pod-b"
        status = client.get("/status", headers=auth).get_json()
        assert status["leader"]["waiting"]["holder"] == "pod-b"
        assert status["leader"]["holder"] == "pod-b" and status["leader"]["leading"] is False
        assert cluster.applied == []

        lease.free.set()  # pod-b gave it back (or its Lease ran out): the queued sync runs
        wait_until(
            lambda: client.get(body["status_url"], headers=auth).get_json()["state"] == "done",
            "the queued sync",
        )
        assert len(cluster.applied) == 1 and lease.acquired == lease.released == 1
    finally:
        lease.free.set()
        svc.shutdown(5)


def test_a_trigger_waits_while_the_lease_runs_out_and_gets_its_answer(tmp_path: Path) -> None:
    """A dead holder's Lease runs out within the wait: the trigger gets the sync's own answer."""
    lease = OtherReplicaLease(remaining=0.5)
    svc, cluster = service(tmp_path, lease, lease_wait=30)
    cluster.gate.set()
    client = create_app(svc, trigger_token=TOKEN).test_client()
    try:
        threading.Timer(0.5, lease.free.set).start()
        answer = client.post("/sync", headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 200, answer.get_json()
        assert answer.get_json()["results"][0]["applied"] is True
    finally:
        lease.free.set()
        svc.shutdown(5)


def test_shutting_down_while_waiting_for_the_lease_fails_the_queued_sync(tmp_path: Path) -> None:
    """So a Pub/Sub message is nacked and redelivered (to the replica that holds the Lease)."""
    lease = OtherReplicaLease()
    svc, cluster = service(tmp_path, lease, lease_wait=0.1)
    future = svc.submit_future(SyncRequest(trigger="pubsub"))
    wait_until(lambda: svc.lease_wait() is not None, "the sync to wait for the Lease")
    svc.shutdown(5)
    assert "shut down while waiting for the Lease" in str(future.exception(5))
    assert cluster.applied == []


def test_the_default_lease_wait_outlasts_the_lease() -> None:
    assert DEFAULT_WAIT > LEASE_SECONDS
    assert LeaseHolder(OtherReplicaLease()).wait == DEFAULT_WAIT
    settings = Settings.from_env({})
    assert settings.lease_wait > settings.lease_seconds
    assert Settings.from_env({"RECONCILER_LEASE_SECONDS": "10"}).lease_wait == 25
    assert Settings.from_env({"RECONCILER_LEASE_WAIT": "200"}).lease_wait == 200


def test_status_readyz_metrics_and_the_page_say_who_leads(tmp_path: Path) -> None:
    lease = OtherReplicaLease()
    svc, cluster = service(tmp_path, lease)
    client = create_app(svc, trigger_token=TOKEN).test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        leader = client.get("/status", headers=auth).get_json()["leader"]
        assert leader["identity"] == "pod-a" and leader["leading"] is False
        assert leader["holder"] == "pod-b"
        assert leader["held_since"] == 1_700_000_000.0
        metrics = client.get("/metrics", headers=auth).get_data(as_text=True)
        assert 'reconciler_leader{pod="pod-a"} 0.0' in metrics
        page = client.get("/", headers=auth).get_data(as_text=True)
        assert "pod-a" in page and "Lease held by <code>pod-b</code>" in page

        lease.free.set()
        svc.submit(SyncRequest(trigger="http"))  # in flight, holding the Lease, until the gate
        assert cluster.entered.wait(5)
        wait_until(svc.leading, "pod-a to hold the Lease")
        svc._lease_seen = None  # the Lease view is cached for a moment: read a fresh one
        leader = client.get("/status", headers=auth).get_json()["leader"]
        assert leader["leading"] is True and leader["holder"] == "pod-a"
        assert leader["held_since"] == 1_800_000_000.0 and leader["until"] == 1_800_000_070.0
        ready = client.get("/readyz", headers=auth).get_json()
        assert ready["leader"]["identity"] == "pod-a" and ready["leader"]["leading"] is True
        assert client.get("/readyz").get_json() == {"ready": ready["ready"]}  # no token: no detail
        metrics = client.get("/metrics", headers=auth).get_data(as_text=True)
        assert 'reconciler_leader{pod="pod-a"} 1.0' in metrics
        cluster.gate.set()
        wait_until(lambda: not svc.runner.busy, "the sync to end")
        assert svc.leading() is False
        metrics = client.get("/metrics", headers=auth).get_data(as_text=True)
        assert 'reconciler_leader{pod="pod-a"} 0.0' in metrics
    finally:
        cluster.gate.set()
        svc.shutdown(5)
