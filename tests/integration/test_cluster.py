"""The local cluster rolls out; marked images crash-loop or fail to pull; kubectl works."""

from __future__ import annotations

import re
import socket
from typing import Any

import kubernetes
import pytest

from testkit.controlplane import (
    CRASHLOOP_MARKERS,
    PULLFAIL_MARKERS,
    LocalCluster,
    crashloop_sha,
    pullfail_sha,
    wait_for,
)
from testkit.controlplane import cluster as cluster_module
from testkit.controlplane.cluster import kwok_stages
from testkit.deployments import create_from_body, deployment_body
from testkit.processes import free_port

CHANGE_CAUSE = "kubernetes.io/change-cause"


def _apps(api: Any) -> Any:
    return kubernetes.client.AppsV1Api(api)


def _core(api: Any) -> Any:
    return kubernetes.client.CoreV1Api(api)


def _replicasets(api: Any, ns: str) -> list[dict[str, Any]]:
    return [
        api.sanitize_for_serialization(rs)
        for rs in _apps(api).list_namespaced_replica_set(ns).items
    ]


def _deployment(api: Any, ns: str, name: str) -> dict[str, Any]:
    d = _apps(api).read_namespaced_deployment(name, ns)
    result: dict[str, Any] = api.sanitize_for_serialization(d)
    return result


def _condition(d: dict[str, Any], kind: str) -> dict[str, Any]:
    conditions = d.get("status", {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind), {})


def _available(api: Any, ns: str, name: str) -> bool:
    """Rolled out: observedGeneration caught up, every replica updated and available."""
    d = _deployment(api, ns, name)
    spec, status = d["spec"], d.get("status", {})
    return (
        status.get("observedGeneration", 0) >= d["metadata"]["generation"]
        and status.get("updatedReplicas") == spec["replicas"]
        and status.get("availableReplicas") == spec["replicas"]
        and status.get("replicas") == spec["replicas"]
        and _condition(d, "Available").get("status") == "True"
    )


def _pods(api: Any, ns: str, app: str) -> list[dict[str, Any]]:
    pods = _core(api).list_namespaced_pod(ns, label_selector=f"app={app}")
    return [api.sanitize_for_serialization(p) for p in pods.items]


def _container_status(pod: dict[str, Any], name: str = "app") -> dict[str, Any]:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return next((s for s in statuses if s["name"] == name), {})


def _pods_with_image(api: Any, ns: str, app: str, image: str) -> list[dict[str, Any]]:
    return [
        p
        for p in _pods(api, ns, app)
        if p["spec"]["containers"][0]["image"] == image and "deletionTimestamp" not in p["metadata"]
    ]


def _create(api: Any, ns: str, name: str, image: str, **spec: Any) -> None:
    body = deployment_body(name, image)
    body["spec"].update(spec)
    create_from_body(api, ns, body)


def _set_image(api: Any, ns: str, name: str, image: str, cause: str | None = None) -> None:
    patch: dict[str, Any] = {
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}
    }
    if cause is not None:
        patch["metadata"] = {"annotations": {CHANGE_CAUSE: cause}}
    _apps(api).patch_namespaced_deployment(name, ns, patch)


def test_stages_carry_every_marker() -> None:
    stages = kwok_stages()
    assert re.search(r"@[A-Z_]+@", stages) is None  # every placeholder filled in
    for marker in (*CRASHLOOP_MARKERS, *PULLFAIL_MARKERS):
        assert f'contains("{marker}")' in stages
        assert f'(contains "{marker}" .image)' in stages
    assert crashloop_sha().startswith(CRASHLOOP_MARKERS[1])
    assert pullfail_sha().startswith(PULLFAIL_MARKERS[1])
    assert len(crashloop_sha()) == 40 and int(crashloop_sha(), 16)


def test_a_deployment_rolls_out_and_becomes_available(
    local_cluster: LocalCluster, cluster_api_client: Any, cluster_namespace: str
) -> None:
    api, ns = cluster_api_client, cluster_namespace
    _create(api, ns, "web", "gcr.io/p/web:v1")
    wait_for(lambda: _available(api, ns, "web"), what="web to become available")

    pods = _pods(api, ns, "web")
    assert len(pods) == 2
    for pod in pods:
        assert pod["spec"]["nodeName"] in local_cluster.node_names
        assert pod["status"]["phase"] == "Running"
        assert all(s["ready"] for s in pod["status"]["containerStatuses"])
        assert pod["status"]["initContainerStatuses"][0]["state"]["terminated"]["reason"] == (
            "Completed"
        )

    # A new image rolls out too: a second ReplicaSet, its pods replace the first's.
    _set_image(api, ns, "web", "gcr.io/p/web:v2")
    wait_for(
        lambda: (
            _available(api, ns, "web")
            and len(_pods_with_image(api, ns, "web", "gcr.io/p/web:v2")) == 2
        ),
        what="web:v2 to roll out",
    )
    assert sorted(rs["spec"]["replicas"] for rs in _replicasets(api, ns)) == [0, 2]


def test_a_crashlooping_image_never_gets_ready_and_exceeds_the_progress_deadline(
    cluster_api_client: Any, cluster_namespace: str
) -> None:
    api, ns = cluster_api_client, cluster_namespace
    _create(api, ns, "web", "gcr.io/p/web:v1", progressDeadlineSeconds=5)
    wait_for(lambda: _available(api, ns, "web"), what="web to become available")

    bad = f"gcr.io/p/web:{crashloop_sha()}"
    _set_image(api, ns, "web", bad)

    def crashing() -> dict[str, Any] | None:
        for pod in _pods_with_image(api, ns, "web", bad):
            status = _container_status(pod)
            if status.get("state", {}).get("waiting", {}).get("reason") == "CrashLoopBackOff":
                return status
        return None

    first = wait_for(crashing, what="a new pod in CrashLoopBackOff")
    assert first["ready"] is False and first["restartCount"] >= 1
    assert first["lastState"]["terminated"]["reason"] == "Error"
    wait_for(
        lambda: (s := crashing()) and s["restartCount"] > first["restartCount"],
        what="the restart count to grow",
    )

    d = wait_for(
        lambda: (
            (d := _deployment(api, ns, "web"))
            and _condition(d, "Progressing").get("reason") == "ProgressDeadlineExceeded"
            and d
        ),
        what="ProgressDeadlineExceeded",
    )
    # The old pods keep serving meanwhile (maxUnavailable rounds down to 0 of 2).
    assert d["status"]["availableReplicas"] == 2
    for pod in _pods_with_image(api, ns, "web", bad):
        assert pod["status"]["phase"] == "Running"
        ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "False"


@pytest.mark.parametrize("marker", ["pullfail", "sha"])
def test_an_image_that_cannot_be_pulled_waits_in_image_pull_backoff(
    cluster_api_client: Any, cluster_namespace: str, marker: str
) -> None:
    api, ns = cluster_api_client, cluster_namespace
    bad = "gcr.io/p/web:pullfail-1" if marker == "pullfail" else f"gcr.io/p/web:{pullfail_sha()}"
    _create(api, ns, "web", bad)

    def backing_off() -> list[dict[str, Any]]:
        pods = _pods_with_image(api, ns, "web", bad)
        waiting = [
            p
            for p in pods
            if _container_status(p).get("state", {}).get("waiting", {}).get("reason")
            == "ImagePullBackOff"
        ]
        return waiting if len(waiting) == 2 else []

    for pod in wait_for(backing_off, what="both pods in ImagePullBackOff"):
        assert pod["status"]["phase"] == "Pending"
        assert _container_status(pod)["ready"] is False
        assert _container_status(pod, "proxy")["ready"] is True  # the sidecar's image is fine
    assert _deployment(api, ns, "web")["status"].get("availableReplicas") is None


def test_kubectl_rollout_history_names_the_change_causes_and_undo_rolls_back(
    local_cluster: LocalCluster, cluster_api_client: Any, cluster_namespace: str
) -> None:
    api, ns = cluster_api_client, cluster_namespace
    body = deployment_body("web", "gcr.io/p/web:aaaaaaa")
    body["metadata"]["annotations"] = {CHANGE_CAUSE: "reconciler: acme/web@aaaaaaa"}
    create_from_body(api, ns, body)
    wait_for(lambda: _available(api, ns, "web"), what="revision 1 to roll out")
    _set_image(api, ns, "web", "gcr.io/p/web:bbbbbbb", cause="reconciler: acme/web@bbbbbbb")
    wait_for(lambda: _available(api, ns, "web"), what="revision 2 to roll out")

    history = local_cluster.kubectl("rollout", "history", "deployment/web", "-n", ns).stdout
    lines = [line.split(None, 1) for line in history.splitlines() if line[:1].isdigit()]
    assert lines == [
        ["1", "reconciler: acme/web@aaaaaaa"],
        ["2", "reconciler: acme/web@bbbbbbb"],
    ], history

    local_cluster.kubectl("rollout", "undo", "deployment/web", "-n", ns)
    wait_for(
        lambda: (
            _available(api, ns, "web")
            and len(_pods_with_image(api, ns, "web", "gcr.io/p/web:aaaaaaa")) == 2
        ),
        what="the undo to roll out",
    )
    d = _deployment(api, ns, "web")
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "gcr.io/p/web:aaaaaaa"
    # undo copies the old ReplicaSet's annotations back, change-cause included ...
    assert d["metadata"]["annotations"][CHANGE_CAUSE] == "reconciler: acme/web@aaaaaaa"
    # ... but managedFields tell who set the image: kubectl (manager "kubectl"), not the
    # creator of the Deployment (the client's "OpenAPI-Generator").
    owners = {
        m["manager"]
        for m in d["metadata"]["managedFields"]
        if "f:image"
        in m["fieldsV1"]
        .get("f:spec", {})
        .get("f:template", {})
        .get("f:spec", {})
        .get("f:containers", {})
        .get('k:{"name":"app"}', {})
    }
    assert owners == {"kubectl"}, d["metadata"]["managedFields"]
    history = local_cluster.kubectl("rollout", "history", "deployment/web", "-n", ns).stdout
    assert [line.split(None, 1)[0] for line in history.splitlines() if line[:1].isdigit()] == [
        "2",
        "3",
    ], history


def test_deleting_a_deployment_or_a_namespace_leaves_nothing_behind(
    local_cluster: LocalCluster, cluster_api_client: Any
) -> None:
    # What cluster_namespace relies on: no crash loop outlives its test.
    api, core = cluster_api_client, _core(cluster_api_client)
    ns = f"t-delete-{crashloop_sha()[:8]}"
    core.create_namespace({"metadata": {"name": ns}})
    for name in ("web", "shop"):
        _create(api, ns, name, f"gcr.io/p/{name}:{crashloop_sha()}")
        wait_for(lambda: len(_pods(api, ns, name)) == 2, what=f"two {name} pods")  # noqa: B023

    _apps(api).delete_namespaced_deployment("web", ns)  # the garbage collector cascades
    wait_for(
        lambda: (
            not _pods(api, ns, "web")
            and [rs["metadata"]["labels"]["app"] for rs in _replicasets(api, ns)] == ["shop"]
        ),
        what="web's ReplicaSet and pods to go",
    )

    core.delete_namespace(ns)

    def gone() -> bool:
        try:
            core.read_namespace(ns)
        except kubernetes.client.ApiException as e:
            return bool(e.status == 404)
        return False

    wait_for(gone, what=f"namespace {ns} to be deleted")
    assert core.list_namespaced_pod(ns).items == []


def test_a_component_that_loses_the_race_for_its_port_starts_again_on_another(
    local_cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = iter([taken.getsockname()[1]])  # kube-controller-manager's first port
        monkeypatch.setattr(cluster_module, "free_port", lambda: next(ports, None) or free_port())
        with LocalCluster(
            bin_dir=local_cluster.bin_dir, cluster_bin_dir=local_cluster.cluster_bin_dir
        ) as cluster:
            assert (
                "address already in use"
                in cluster.component_log_paths["kube-controller-manager"].read_text()
            )
            assert set(cluster.component_pids()) == {
                "etcd",
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "kwok",
            }
