"""core/workloads.py's verdicts on the objects the real controllers produce: StatefulSets,
DaemonSets and CronJobs created and changed with kubectl on a local cluster of three kwok nodes
(one cluster for the module, running the statefulset, daemonset, job and cronjob controllers)."""

from __future__ import annotations

import functools
import json
import re
import time
from typing import Any

import kubernetes

from reconciler.core.model import Rollout
from reconciler.core.workloads import (
    CRONJOB,
    DAEMONSET,
    STATEFULSET,
    Verdict,
    first_job,
    images,
    judge,
    kind_image_owners,
    revisions,
    state,
    stuck_pods,
)
from testkit.controlplane import (
    JOBFAIL_MARKERS,
    LocalCluster,
    crashloop_sha,
    pullfail_sha,
    wait_for,
)
from testkit.controlplane.cluster import kwok_stages

REPO = "gcr.io/p/web"
TIMEOUT = 5  # the rollout timeout the verdicts are asked about (seconds)


def _raw(resp: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(resp.data)
    return data


def _apps(api: Any) -> Any:
    return kubernetes.client.AppsV1Api(api)


def _read(api: Any, kind: str, ns: str, name: str) -> dict[str, Any]:
    if kind == STATEFULSET:
        return _raw(_apps(api).read_namespaced_stateful_set(name, ns, _preload_content=False))
    if kind == DAEMONSET:
        return _raw(_apps(api).read_namespaced_daemon_set(name, ns, _preload_content=False))
    batch = kubernetes.client.BatchV1Api(api)
    return _raw(batch.read_namespaced_cron_job(name, ns, _preload_content=False))


def _pods(api: Any, ns: str) -> list[dict[str, Any]]:
    core = kubernetes.client.CoreV1Api(api)
    items: list[dict[str, Any]] = _raw(core.list_namespaced_pod(ns, _preload_content=False))[
        "items"
    ]
    return [p for p in items if "deletionTimestamp" not in p["metadata"]]


def _stuck(api: Any, ns: str, image: str) -> tuple[str, ...]:
    return stuck_pods({"app": image}, _pods(api, ns))


def _jobs(api: Any, ns: str) -> list[dict[str, Any]]:
    batch = kubernetes.client.BatchV1Api(api)
    items: list[dict[str, Any]] = _raw(batch.list_namespaced_job(ns, _preload_content=False))[
        "items"
    ]
    return items


def _controller_revisions(api: Any, ns: str) -> list[dict[str, Any]]:
    resp = _apps(api).list_namespaced_controller_revision(ns, _preload_content=False)
    items: list[dict[str, Any]] = _raw(resp)["items"]
    return items


def _verdict(
    api: Any,
    kind: str,
    ns: str,
    name: str,
    *,
    started: float | None = None,
    now: float | None = None,
) -> Verdict:
    obj = _read(api, kind, ns, name)
    return judge(
        kind,
        obj,
        pods=_pods(api, ns),
        jobs=_jobs(api, ns),
        now=time.time() if now is None else now,
        timeout=TIMEOUT,
        started=started,
    )


def _apply(cluster: LocalCluster, ns: str, body: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(body))


def _pod_template(app: str, image: str, restart: str = "Always") -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": app}},
        "spec": {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "app", "image": image}],
        },
    }


def _statefulset(name: str, image: str, replicas: int = 2, partition: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": partition}},
            "template": _pod_template(name, image),
        },
    }


def _daemonset(name: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": _pod_template(name, image),
        },
    }


def _cronjob(name: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name},
        "spec": {
            "schedule": "0 0 1 1 *",  # once a year: the tests create their Jobs themselves
            "timeZone": "Etc/UTC",
            "jobTemplate": {
                "spec": {"backoffLimit": 0, "template": _pod_template(name, image, "Never")}
            },
        },
    }


def _wait_rollout(api: Any, kind: str, ns: str, name: str, rollout: Rollout, **kw: Any) -> Verdict:
    def reached() -> Verdict | None:
        verdict = _verdict(api, kind, ns, name, **kw)
        return verdict if verdict.rollout is rollout else None

    return wait_for(reached, what=f"{kind} {name} to be {rollout}")


# --- StatefulSet --------------------------------------------------------------------------------


def test_a_statefulset_rolls_out_and_rollout_undo_brings_the_previous_revision_back(
    workload_cluster: LocalCluster, workload_api_client: Any, workload_namespace: str
) -> None:
    api, ns, cluster = workload_api_client, workload_namespace, workload_cluster
    _apply(cluster, ns, _statefulset("db", f"{REPO}:v1"))
    assert _wait_rollout(api, STATEFULSET, ns, "db", Rollout.AVAILABLE) == Verdict(
        Rollout.AVAILABLE, "2/2 ready"
    )

    cluster.kubectl("set", "image", "statefulset/db", f"app={REPO}:v2", "-n", ns)
    _wait_rollout(api, STATEFULSET, ns, "db", Rollout.AVAILABLE)
    obj = _read(api, STATEFULSET, ns, "db")
    assert obj["status"]["currentRevision"] == obj["status"]["updateRevision"]
    pods = [p for p in _pods(api, ns) if p["metadata"]["name"].startswith("db-")]
    assert sorted(p["spec"]["containers"][0]["image"] for p in pods) == [f"{REPO}:v2"] * 2
    history = revisions(STATEFULSET, obj, _controller_revisions(api, ns))
    assert [(r.number, r.images["app"]) for r in history] == [(1, f"{REPO}:v1"), (2, f"{REPO}:v2")]

    # The person's `rollout undo` brings revision 1's template back, as revision 3.
    cluster.kubectl("rollout", "undo", "statefulset/db", "-n", ns)
    wait_for(
        lambda: images(STATEFULSET, _read(api, STATEFULSET, ns, "db"))["app"] == f"{REPO}:v1",
        what="the undo to set v1 back",
    )
    _wait_rollout(api, STATEFULSET, ns, "db", Rollout.AVAILABLE)
    obj = _read(api, STATEFULSET, ns, "db")
    history = revisions(STATEFULSET, obj, _controller_revisions(api, ns))
    assert [(r.number, r.images["app"]) for r in history] == [(2, f"{REPO}:v2"), (3, f"{REPO}:v1")]
    # ... and managedFields name the person's tool as the image's owner (what a hold reads;
    # `rollout undo` of a StatefulSet patches as plain "kubectl")
    owner = kind_image_owners(STATEFULSET, obj["metadata"]["managedFields"])["app"]
    assert (owner.manager, owner.operation) == ("kubectl", "Update")


def test_an_ondelete_statefulset_waits_for_its_pods_to_be_replaced(
    workload_cluster: LocalCluster, workload_api_client: Any, workload_namespace: str
) -> None:
    api, ns, cluster = workload_api_client, workload_namespace, workload_cluster
    body = _statefulset("db", f"{REPO}:v1")
    body["spec"]["updateStrategy"] = {"type": "OnDelete"}
    _apply(cluster, ns, body)
    _wait_rollout(api, STATEFULSET, ns, "db", Rollout.AVAILABLE)

    started = time.time()
    cluster.kubectl("set", "image", "statefulset/db", f"app={REPO}:v2", "-n", ns)
    wait_for(
        lambda: (
            _read(api, STATEFULSET, ns, "db")["status"].get("updateRevision")
            != _read(api, STATEFULSET, ns, "db")["status"].get("currentRevision")
        ),
        what="the controller to see the new revision",
    )
    waiting = _verdict(api, STATEFULSET, ns, "db", started=started, now=started + 10 * TIMEOUT)
    assert waiting == Verdict(
        Rollout.PROGRESSING,
        "0/2 ready",
        "waiting for pods to be replaced (OnDelete): 0/2 updated",
        timed=False,
    )
    # The person deletes the pods; the controller recreates them from the new revision.
    cluster.kubectl("delete", "pod", "db-0", "db-1", "-n", ns, "--wait=false")
    assert _wait_rollout(api, STATEFULSET, ns, "db", Rollout.AVAILABLE) == Verdict(
        Rollout.AVAILABLE, "2/2 ready"
    )


def test_a_crash_looping_statefulset_fails_after_the_timeout(
    workload_cluster: LocalCluster, workload_api_client: Any, workload_namespace: str
) -> None:
    api, ns, cluster = workload_api_client, workload_namespace, workload_cluster
    _apply(cluster, ns, _statefulset("db", f"{REPO}:v1"))
    _wait_rollout(api, STATEFULSET, ns, "db", Rollout.AVAILABLE)

    bad = f"{REPO}:{crashloop_sha()}"
    started = time.time()
    cluster.kubectl("set", "image", "statefulset/db", f"app={bad}", "-n", ns)
    wait_for(
        lambda: stuck_pods({"app": bad}, _pods(api, ns)), what="the new revision's pod to crash"
    )
    # Within the timeout it is progressing; from the timeout on, failed.
    early = _verdict(api, STATEFULSET, ns, "db", started=started, now=started + TIMEOUT - 1)
    assert early.rollout is Rollout.PROGRESSING
    failed = _wait_rollout(api, STATEFULSET, ns, "db", Rollout.FAILED, started=started)
    assert failed.reason.startswith("new pods are not coming up: pod db-1: CrashLoopBackOff")
    # The controller stops at the first crashing pod: db-0 keeps the previous revision.
    images_now = {
        p["metadata"]["name"]: p["spec"]["containers"][0]["image"] for p in _pods(api, ns)
    }
    assert images_now == {"db-0": f"{REPO}:v1", "db-1": bad}


def test_a_partitioned_statefulset_is_partitioned_not_failed(
    workload_cluster: LocalCluster, workload_api_client: Any, workload_namespace: str
) -> None:
    api, ns, cluster = workload_api_client, workload_namespace, workload_cluster
    _apply(cluster, ns, _statefulset("db", f"{REPO}:v1", replicas=3, partition=2))
    _wait_rollout(api, STATEFULSET, ns, "db", Rollout.AVAILABLE)

    started = time.time()
    cluster.kubectl("set", "image", "statefulset/db", f"app={REPO}:v2", "-n", ns)
    wait_for(
        lambda: _read(api, STATEFULSET, ns, "db")["status"].get("updatedReplicas") == 1,
        what="the pod above the partition to be updated",
    )
    verdict = _wait_rollout(api, STATEFULSET, ns, "db", Rollout.AVAILABLE, started=started)
    assert verdict == Verdict(Rollout.AVAILABLE, "1/1 ready", "partitioned at 2")
    # long past the timeout, still not failed: the partition holds the others back by design
    later = _verdict(api, STATEFULSET, ns, "db", started=started, now=started + 10 * TIMEOUT)
    assert later == verdict
    images_now = {
        p["metadata"]["name"]: p["spec"]["containers"][0]["image"] for p in _pods(api, ns)
    }
    assert images_now == {"db-0": f"{REPO}:v1", "db-1": f"{REPO}:v1", "db-2": f"{REPO}:v2"}


# --- DaemonSet ----------------------------------------------------------------------------------


def test_a_daemonset_rolls_out_on_every_node_and_a_crash_loop_fails_it(
    workload_cluster: LocalCluster, workload_api_client: Any, workload_namespace: str
) -> None:
    api, ns, cluster = workload_api_client, workload_namespace, workload_cluster
    _apply(cluster, ns, _daemonset("agent", f"{REPO}:v1"))
    _wait_rollout(api, DAEMONSET, ns, "agent", Rollout.AVAILABLE)

    cluster.kubectl("set", "image", "daemonset/agent", f"app={REPO}:v2", "-n", ns)
    wait_for(
        lambda: (
            sorted(
                (p["spec"].get("nodeName", ""), p["spec"]["containers"][0]["image"])
                for p in _pods(api, ns)
            )
            == [(node, f"{REPO}:v2") for node in cluster.node_names]
        ),
        what="a v2 pod on every node",
    )
    assert _wait_rollout(api, DAEMONSET, ns, "agent", Rollout.AVAILABLE) == Verdict(
        Rollout.AVAILABLE, "3/3 ready"
    )

    bad = f"{REPO}:{crashloop_sha()}"
    started = time.time()
    cluster.kubectl("set", "image", "daemonset/agent", f"app={bad}", "-n", ns)
    wait_for(lambda: stuck_pods({"app": bad}, _pods(api, ns)), what="a new pod to crash")
    early = _verdict(api, DAEMONSET, ns, "agent", started=started, now=started + TIMEOUT - 1)
    assert early.rollout is Rollout.PROGRESSING
    failed = _wait_rollout(api, DAEMONSET, ns, "agent", Rollout.FAILED, started=started)
    assert "CrashLoopBackOff" in failed.reason
    history = revisions(
        DAEMONSET, _read(api, DAEMONSET, ns, "agent"), _controller_revisions(api, ns)
    )
    assert [r.images["app"] for r in history] == [f"{REPO}:v1", f"{REPO}:v2", bad]


# --- CronJob ------------------------------------------------------------------------------------


def test_a_cronjobs_rollout_is_its_next_job(
    workload_cluster: LocalCluster, workload_api_client: Any, workload_namespace: str
) -> None:
    api, ns, cluster = workload_api_client, workload_namespace, workload_cluster
    _apply(cluster, ns, _cronjob("nightly", f"{REPO}:v1"))
    cj = _read(api, CRONJOB, ns, "nightly")
    assert state(CRONJOB, cj, [], time.time()).reason.startswith(
        "waiting for the next schedule at "
    )
    assert state(CRONJOB, cj, [], time.time()).reason.endswith(" Etc/UTC")

    # A new image: the next Job (made now, not at the schedule) succeeds → available.
    cluster.kubectl("set", "image", "cronjob/nightly", f"app={REPO}:v2", "-n", ns)
    cluster.kubectl("create", "job", "--from=cronjob/nightly", "nightly-v2", "-n", ns)
    verdict = _wait_rollout(api, CRONJOB, ns, "nightly", Rollout.AVAILABLE)
    assert verdict == Verdict(Rollout.AVAILABLE, "1/1 succeeded", "job nightly-v2 succeeded")

    # A commit whose job fails: its first Job reaches backoffLimit → failed.
    bad = f"{REPO}:jobfail-3"
    cluster.kubectl("set", "image", "cronjob/nightly", f"app={bad}", "-n", ns)
    assert _verdict(api, CRONJOB, ns, "nightly").reason.startswith("waiting for the next schedule")
    cluster.kubectl("create", "job", "--from=cronjob/nightly", "nightly-bad", "-n", ns)
    failed = _wait_rollout(api, CRONJOB, ns, "nightly", Rollout.FAILED)
    assert failed.reason.startswith("job nightly-bad failed: BackoffLimitExceeded")
    cj = _read(api, CRONJOB, ns, "nightly")
    first = first_job(cj, _jobs(api, ns))
    assert first is not None and first["metadata"]["name"] == "nightly-bad"
    history = revisions(CRONJOB, cj, _jobs(api, ns))
    assert [(r.name, r.outcome) for r in history] == [
        ("nightly-v2", "succeeded"),
        ("nightly-bad", "failed"),
    ]

    # A person's `kubectl set image` owns the jobTemplate's image in managedFields.
    owner = kind_image_owners(CRONJOB, cj["metadata"]["managedFields"])["app"]
    assert owner.manager == "kubectl-set"

    # Suspended, with no Job of the current template yet: "suspended".
    cluster.kubectl("set", "image", "cronjob/nightly", f"app={REPO}:v3", "-n", ns)
    cluster.kubectl("patch", "cronjob/nightly", "-n", ns, "-p", '{"spec":{"suspend":true}}')
    assert _verdict(api, CRONJOB, ns, "nightly") == Verdict(
        Rollout.PROGRESSING, "no job yet", "suspended", timed=False
    )


def test_a_cronjobs_job_whose_pods_are_stuck_fails_after_the_timeout(
    workload_cluster: LocalCluster, workload_api_client: Any, workload_namespace: str
) -> None:
    """Job pods keep the crash-loop and pull-failure rules: such a Job never ends by itself,
    so its stuck pods fail the rollout once it is older than the timeout."""
    api, ns, cluster = workload_api_client, workload_namespace, workload_cluster
    for n, bad in enumerate((f"{REPO}:{crashloop_sha()}", f"{REPO}:{pullfail_sha()}")):
        name = f"nightly-{n}"
        _apply(cluster, ns, _cronjob(name, bad))
        started = time.time()
        cluster.kubectl("create", "job", f"--from=cronjob/{name}", f"{name}-now", "-n", ns)
        wait_for(functools.partial(_stuck, api, ns, bad), what=f"a stuck pod of {bad}")
        early = _verdict(api, CRONJOB, ns, name, started=started, now=started + TIMEOUT - 1)
        assert early == Verdict(Rollout.PROGRESSING, "0/1 succeeded", f"job {name}-now running")
        failed = _wait_rollout(api, CRONJOB, ns, name, Rollout.FAILED, started=started)
        reason = "CrashLoopBackOff" if n == 0 else "ImagePullBackOff"
        assert failed.reason.startswith(f"new pods are not coming up: pod {name}-now-")
        assert reason in failed.reason


def test_the_stages_end_job_pods_by_their_image() -> None:
    stages = kwok_stages()
    assert re.search(r"@[A-Z_]+@", stages) is None
    for marker in JOBFAIL_MARKERS:
        assert f'contains("{marker}")' in stages
    for name in ("pod-job-succeeded", "pod-job-failed"):
        assert f"name: {name}" in stages
