"""The Kubernetes adapter and a whole sync against a real kube-apiserver + etcd."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from reconciler.adapters.kube import KubeCluster, api_client, request
from reconciler.adapters.lease import KubeLease
from reconciler.adapters.registry import RegistryVerifier
from reconciler.core.config import sites as config
from reconciler.core.errors import KubernetesError, LeaseBusy
from reconciler.core.model import Action, ImageChange, SyncRequest
from reconciler.sync import config_file
from reconciler.sync.engine import Engine
from testkit.controlplane import ControlPlane
from testkit.deployments import create_deployment, get_deployment
from testkit.github import GitHubStandIn, random_sha
from testkit.github_fixtures import TOKEN
from testkit.wait import wait_until

pytestmark = pytest.mark.controlplane


@pytest.fixture
def cluster(control_plane: ControlPlane) -> Iterator[KubeCluster]:
    api = api_client(str(control_plane.kubeconfig_path))
    yield KubeCluster(api, reporter="test")
    api.close()


def containers(d: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in d["spec"]["template"]["spec"]["containers"]}


def events_for(api: kubernetes.client.ApiClient, ns: str, name: str) -> list[Any]:
    core = kubernetes.client.CoreV1Api(api)
    return [
        e
        for e in core.list_namespaced_event(ns).items
        if e.involved_object.name == name and e.reason == "ImageUpdated"
    ]


def change(ns: str, image: str, rv: str, sha: str = "a" * 40) -> ImageChange:
    return ImageChange(ns, "blog", "app", image, "gcr.io/p/blog:old", "acme/blog", "main", sha, rv)


def test_observe_lists_each_namespace_once(
    cluster: KubeCluster, kube_api_client: Any, k8s_namespace: str
) -> None:
    for i in range(3):
        create_deployment(kube_api_client, k8s_namespace, f"site{i}", f"gcr.io/p/s{i}:1")
    view = cluster.observe([k8s_namespace, "empty-ns-that-does-not-exist"])
    mine = view[k8s_namespace]
    assert isinstance(mine, dict) and sorted(mine) == ["site0", "site1", "site2"]
    d = mine["site1"]
    assert [c.name for c in d.containers] == ["app", "proxy"]
    assert [c.name for c in d.init_containers] == ["migrate"]
    assert view["empty-ns-that-does-not-exist"] == {}


def test_patch_changes_only_the_named_container(
    cluster: KubeCluster, kube_api_client: Any, k8s_namespace: str
) -> None:
    before = create_deployment(kube_api_client, k8s_namespace, "blog", "gcr.io/p/blog:old")
    rv = before["metadata"]["resourceVersion"]
    new = "gcr.io/p/blog:" + "a" * 40
    result = cluster.apply(change(k8s_namespace, new, rv), dry_run=False)
    assert result.ok, result
    after = get_deployment(kube_api_client, k8s_namespace, "blog")
    got, was = containers(after), containers(before)
    assert got["app"]["image"] == new
    assert got["proxy"] == was["proxy"]
    assert {k: v for k, v in got["app"].items() if k != "image"} == {
        k: v for k, v in was["app"].items() if k != "image"
    }
    assert (
        after["spec"]["template"]["spec"]["initContainers"]
        == (before["spec"]["template"]["spec"]["initContainers"])
    )
    assert after["spec"]["replicas"] == 2
    notes = after["metadata"]["annotations"]
    assert notes["reconciler.dev/sha"] == "a" * 40
    assert notes["reconciler.dev/repo"] == "acme/blog"
    assert notes["kubernetes.io/change-cause"].startswith("reconciler: acme/blog@main aaaaaaa")
    managers = {m["manager"] for m in after["metadata"]["managedFields"]}
    assert "reconciler" in managers
    cluster.settle()  # the Event is created in the background
    events = events_for(kube_api_client, k8s_namespace, "blog")
    assert len(events) == 1 and "aaaaaaa" in events[0].message
    assert events[0].involved_object.uid == after["metadata"]["uid"]


def test_a_pinned_digest_is_deployed_and_the_history_stays_readable(
    cluster: KubeCluster, kube_api_client: Any, k8s_namespace: str
) -> None:
    before = create_deployment(kube_api_client, k8s_namespace, "blog", "gcr.io/p/blog:old")
    pinned = "gcr.io/p/blog:" + "a" * 40 + "@sha256:" + "d" * 64
    result = cluster.apply(
        change(k8s_namespace, pinned, before["metadata"]["resourceVersion"]), dry_run=False
    )
    assert result.ok, result
    after = get_deployment(kube_api_client, k8s_namespace, "blog")
    assert containers(after)["app"]["image"] == pinned
    cause = after["metadata"]["annotations"]["kubernetes.io/change-cause"]
    assert cause == (
        f"reconciler: acme/blog@main aaaaaaa (app=gcr.io/p/blog:{'a' * 40}@sha256:{'d' * 12})"
    )


def test_dry_run_is_validated_by_the_server_and_changes_nothing(
    cluster: KubeCluster, kube_api_client: Any, k8s_namespace: str
) -> None:
    before = create_deployment(kube_api_client, k8s_namespace, "blog", "gcr.io/p/blog:old")
    rv = before["metadata"]["resourceVersion"]
    ok = cluster.apply(change(k8s_namespace, "gcr.io/p/blog:new", rv), dry_run=True)
    assert ok.ok
    bad = cluster.apply(change(k8s_namespace, "", rv), dry_run=True)
    assert not bad.ok and bad.error_kind == "invalid", bad
    after = get_deployment(kube_api_client, k8s_namespace, "blog")
    assert after["metadata"]["resourceVersion"] == rv
    assert events_for(kube_api_client, k8s_namespace, "blog") == []


def test_stale_resource_version_is_a_conflict(
    cluster: KubeCluster, kube_api_client: Any, k8s_namespace: str
) -> None:
    before = create_deployment(kube_api_client, k8s_namespace, "blog", "gcr.io/p/blog:old")
    rv = before["metadata"]["resourceVersion"]
    apps = kubernetes.client.AppsV1Api(kube_api_client)
    apps.patch_namespaced_deployment("blog", k8s_namespace, {"metadata": {"labels": {"x": "y"}}})
    result = cluster.apply(change(k8s_namespace, "gcr.io/p/blog:new", rv), dry_run=False)
    assert result.conflict and not result.ok


def test_patch_of_a_missing_container_is_refused_not_added(
    cluster: KubeCluster, kube_api_client: Any, k8s_namespace: str
) -> None:
    """A stale plan must not add a container: the resourceVersion guard makes it a conflict."""
    before = create_deployment(kube_api_client, k8s_namespace, "blog", "gcr.io/p/blog:old")
    rv = before["metadata"]["resourceVersion"]
    apps = kubernetes.client.AppsV1Api(kube_api_client)
    body = before["spec"]["template"]["spec"]
    body["containers"] = [c for c in body["containers"] if c["name"] != "app"] + [
        {"name": "web", "image": "nginx:1"}
    ]
    apps.replace_namespaced_deployment(
        "blog",
        k8s_namespace,
        {**before, "metadata": {"name": "blog"}},  # type: ignore[arg-type]  # dicts serialise too
    )
    result = cluster.apply(change(k8s_namespace, "gcr.io/p/blog:new", rv), dry_run=False)
    assert result.conflict
    assert "app" not in containers(get_deployment(kube_api_client, k8s_namespace, "blog"))


def test_lease_one_holder_at_a_time(kube_api_client: Any, k8s_namespace: str) -> None:
    a = KubeLease(kube_api_client, k8s_namespace, "reconciler", "pod-a", duration=30)
    b = KubeLease(kube_api_client, k8s_namespace, "reconciler", "pod-b", duration=30)
    a.acquire()
    with pytest.raises(LeaseBusy, match="pod-a"):
        b.acquire()
    a.renew()
    a.release()
    b.acquire()
    with pytest.raises(LeaseBusy):
        a.acquire()


def test_acquire_says_whether_another_replica_held_the_lease_since(
    kube_api_client: Any, k8s_namespace: str
) -> None:
    a = KubeLease(kube_api_client, k8s_namespace, "reconciler", "pod-a", duration=30)
    b = KubeLease(kube_api_client, k8s_namespace, "reconciler", "pod-b", duration=30)
    assert a.record().holder is None  # not created yet
    assert a.acquire() is True  # the first time: who knows
    record = a.record()
    assert record.holder == "pod-a" and record.duration == 30
    assert record.acquired_at is not None and abs(record.acquired_at - time.time()) < 60
    assert record.expires_at == record.renewed_at + 30  # type: ignore[operator]
    with pytest.raises(LeaseBusy) as busy:
        b.acquire()
    assert busy.value.holder == "pod-a" and 0 < busy.value.remaining <= 30  # type: ignore[operator]
    a.release()
    assert a.record().holder is None
    assert a.acquire() is False  # pod-a held it last
    a.release()
    assert b.acquire() is True
    b.release()
    assert a.acquire() is True  # pod-b held it since


def test_expired_lease_can_be_taken_over(kube_api_client: Any, k8s_namespace: str) -> None:
    a = KubeLease(kube_api_client, k8s_namespace, "reconciler", "pod-a", duration=1)
    b = KubeLease(kube_api_client, k8s_namespace, "reconciler", "pod-b", duration=30)
    a.acquire()
    with pytest.raises(LeaseBusy, match="pod-a"):
        b.acquire()  # b has only just seen pod-a's record

    def taken_over() -> bool:
        try:
            b.acquire()  # True or False: whether someone else may have held it since
        except LeaseBusy:
            return False
        return True

    # a renews no more: once b has seen the record unchanged for 1 s, it is b's
    wait_until(taken_over, "pod-b to take the expired Lease over", timeout=20)
    assert lease_spec(kube_api_client, k8s_namespace)["holderIdentity"] == "pod-b"
    with pytest.raises(LeaseBusy, match="lost"):
        a.renew()


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lease_expiry_is_judged_by_local_observation(
    kube_api_client: Any, k8s_namespace: str
) -> None:
    """Like client-go's leader election: a record is expired when this replica has seen it
    unchanged for leaseDurationSeconds of its own clock, whatever the holder's timestamps say."""
    request(
        kube_api_client,
        "POST",
        f"/apis/coordination.k8s.io/v1/namespaces/{k8s_namespace}/leases",
        action="create the Lease",
        body={
            "metadata": {"name": "reconciler"},
            "spec": {
                "holderIdentity": "pod-a",
                "leaseDurationSeconds": 30,
                "renewTime": "2001-01-01T00:00:00.000000Z",  # the holder's clock: far behind
            },
        },
    )
    clock = Clock()
    b = KubeLease(kube_api_client, k8s_namespace, "reconciler", "pod-b", clock=clock)
    with pytest.raises(LeaseBusy, match="pod-a"):
        b.acquire()
    clock.now += 20
    a = KubeLease(kube_api_client, k8s_namespace, "reconciler", "pod-a", duration=30)
    a.renew()  # the record changes: b's observation starts over
    clock.now += 20
    with pytest.raises(LeaseBusy, match="pod-a"):
        b.acquire()
    clock.now += 31
    b.acquire()
    assert lease_spec(kube_api_client, k8s_namespace)["holderIdentity"] == "pod-b"


def test_a_deleted_lease_is_our_error_not_the_clients(
    kube_api_client: Any, k8s_namespace: str
) -> None:
    a = KubeLease(kube_api_client, k8s_namespace, "reconciler", "pod-a")
    a.acquire()
    kubernetes.client.CoordinationV1Api(kube_api_client).delete_namespaced_lease(
        "reconciler", k8s_namespace
    )
    with pytest.raises(KubernetesError, match="not found"):
        a.renew()


def lease_spec(api: Any, ns: str) -> dict[str, Any]:
    return dict(
        request(
            api,
            "GET",
            f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/reconciler",
            action="read",
        )["spec"]
    )


def write_sites(tmp_path: Path, ns: str, body: str) -> config.Config:
    path = tmp_path / "sites.toml"
    path.write_text(
        f'[defaults]\nnamespace = "{ns}"\nimage = "gcr.io/p/{{repo}}:{{sha}}"\nverify = "none"\n\n'
        + body
    )
    return config_file.load(path)


def test_whole_sync_against_the_api_server(
    cluster: KubeCluster,
    kube_api_client: Any,
    k8s_namespace: str,
    github: GitHubStandIn,
    tmp_path: Path,
) -> None:
    from reconciler.adapters.github import GitHubSettings, GitHubSource

    sha = random_sha()
    github.add_repo("acme/blog", {"main": sha})
    github.add_repo("acme/shop", {"main": random_sha()})
    create_deployment(kube_api_client, k8s_namespace, "blog", "gcr.io/p/blog:old")
    create_deployment(kube_api_client, k8s_namespace, "shop", "gcr.io/p/shop:old", sidecar=False)
    cfg = write_sites(
        tmp_path,
        k8s_namespace,
        '[sites.blog]\nrepo = "acme/blog"\ncontainer = "app"\n\n'
        '[sites.shop]\nrepo = "acme/shop"\n\n'
        '[sites.gone]\nrepo = "acme/gone"\n\n'
        '[sites.nodeploy]\nrepo = "acme/blog"\ndeployment = "missing"\n',
    )
    heads = GitHubSource(GitHubSettings(api_url=github.url, token=TOKEN))
    engine = Engine(heads=heads, cluster=cluster, verifier=RegistryVerifier())
    report = engine.run(cfg, SyncRequest())
    by = {r.plan.site.name: r for r in report.results}
    assert by["blog"].applied and by["shop"].applied
    assert by["gone"].action is Action.ERROR and "not found" in by["gone"].plan.reason
    assert by["nodeploy"].action is Action.ERROR
    # Events go out in the background, yet each update's is written before the run reports.
    for name in ("blog", "shop"):
        assert len(events_for(kube_api_client, k8s_namespace, name)) == 1, name
    blog = get_deployment(kube_api_client, k8s_namespace, "blog")
    assert containers(blog)["app"]["image"] == f"gcr.io/p/blog:{sha}"
    assert containers(blog)["proxy"]["image"] == "envoyproxy/envoy:v1.30.1"

    rvs = {
        n: get_deployment(kube_api_client, k8s_namespace, n)["metadata"]["resourceVersion"]
        for n in ("blog", "shop")
    }
    gens = {
        n: get_deployment(kube_api_client, k8s_namespace, n)["metadata"]["generation"]
        for n in ("blog", "shop")
    }
    again = engine.run(cfg, SyncRequest())
    assert {r.plan.site.name: r.action for r in again.results if r.ok} == {
        "blog": Action.IN_SYNC,
        "shop": Action.IN_SYNC,
    }
    for n in ("blog", "shop"):
        now = get_deployment(kube_api_client, k8s_namespace, n)["metadata"]
        assert now["resourceVersion"] == rvs[n] and now["generation"] == gens[n]


def test_cli_plan_and_sync_json(
    control_plane: ControlPlane,
    kube_api_client: Any,
    k8s_namespace: str,
    github: GitHubStandIn,
    tmp_path: Path,
) -> None:
    import io

    from reconciler.cli.main import main

    sha = random_sha()
    github.add_repo("acme/blog", {"main": sha})
    create_deployment(kube_api_client, k8s_namespace, "blog", "gcr.io/p/blog:old")
    write_sites(tmp_path, k8s_namespace, '[sites.blog]\nrepo = "acme/blog"\ncontainer = "app"\n')
    env = {
        "GITHUB_API_URL": github.url,
        "GITHUB_TOKEN": TOKEN,
        "KUBECONFIG": str(control_plane.kubeconfig_path),
    }
    args = ["--config", str(tmp_path / "sites.toml"), "--output", "json"]

    def run(*argv: str) -> tuple[int, list[dict[str, Any]]]:
        out = io.StringIO()
        code = main([*argv, *args], env=env, stdout=out, stderr=io.StringIO())
        return code, json.loads(out.getvalue())

    code, plan = run("plan")
    assert code == 0
    assert plan[0]["action"] == "update" and plan[0]["target_image"] == f"gcr.io/p/blog:{sha}"
    keys = {"site", "repo", "branch", "sha", "namespace", "deployment", "container"}
    assert keys | {"current_image", "target_image", "action", "reason"} <= set(plan[0])
    assert run("sync", "--dry-run")[1][0]["applied"] is True
    assert (
        containers(get_deployment(kube_api_client, k8s_namespace, "blog"))["app"]["image"]
        == "gcr.io/p/blog:old"
    )
    code, synced = run("sync")
    assert code == 0 and synced[0]["applied"] is True
    code, again = run("sync")
    assert again[0]["action"] == "in-sync" and again[0]["applied"] is False


def test_reading_the_lease_record_counts_as_observing_it(
    kube_api_client: Any, k8s_namespace: str
) -> None:
    """A replica whose page or /status shows the Lease takes a dead holder's Lease over once
    it has seen the record unchanged for the Lease's duration, not only from its first try."""
    a = KubeLease(kube_api_client, k8s_namespace, "reconciler", "pod-a", duration=30)
    a.acquire()  # ... and dies
    clock = Clock()
    b = KubeLease(kube_api_client, k8s_namespace, "reconciler", "pod-b", clock=clock)
    assert b.record().holder == "pod-a"
    clock.now += 31
    b.acquire()
    assert b.record().holder == "pod-b"
