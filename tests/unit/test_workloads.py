"""The rollout rules of StatefulSets, DaemonSets and CronJobs (core/workloads.py), on plain dicts
shaped as the API server returns them (test_workloads_cluster.py checks them on real ones)."""

from __future__ import annotations

import calendar
import time
from datetime import datetime
from typing import Any

import pytest

from reconciler.core import annotations as ann
from reconciler.core.model import Rollout
from reconciler.core.windows import cron_next
from reconciler.core.workloads import (
    CRONJOB,
    DAEMONSET,
    DEPLOYMENT,
    STATEFULSET,
    Revision,
    Verdict,
    first_job,
    image_body,
    images,
    judge,
    kind_image_owners,
    revisions,
    rollback_patch,
    state,
    stuck_pods,
    template_path,
)

NEW, OLD = "gcr.io/p/web:new", "gcr.io/p/web:old"
T0 = float(calendar.timegm(time.strptime("2026-12-07T03:00:00", "%Y-%m-%dT%H:%M:%S")))


def _pod_spec(image: str) -> dict[str, Any]:
    return {"containers": [{"name": "app", "image": image}]}


def sts(
    *,
    replicas: int = 3,
    generation: int = 2,
    observed: int = 2,
    ready: int = 3,
    updated: int = 3,
    revisions: tuple[str, str] = ("web-2", "web-2"),
    strategy: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "web",
            "namespace": "ns",
            "uid": "u-sts",
            "generation": generation,
            "resourceVersion": "7",
            "annotations": annotations or {},
        },
        "spec": {
            "replicas": replicas,
            "updateStrategy": strategy
            or {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "template": {"spec": _pod_spec(NEW)},
        },
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "readyReplicas": ready,
            "updatedReplicas": updated,
            "currentRevision": revisions[0],
            "updateRevision": revisions[1],
        },
    }


def ds(
    *,
    desired: int = 3,
    updated: int = 3,
    available: int = 3,
    generation: int = 2,
    observed: int = 2,
    strategy: str = "RollingUpdate",
) -> dict[str, Any]:
    return {
        "metadata": {"name": "agent", "namespace": "ns", "uid": "u-ds", "generation": generation},
        "spec": {"updateStrategy": {"type": strategy}, "template": {"spec": _pod_spec(NEW)}},
        "status": {
            "observedGeneration": observed,
            "desiredNumberScheduled": desired,
            "updatedNumberScheduled": updated,
            "numberAvailable": available,
        },
    }


def cronjob(
    *,
    schedule: str = "0 4 * * *",
    zone: str | None = None,
    suspend: bool = False,
    notes: dict[str, str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "schedule": schedule,
        "suspend": suspend,
        "jobTemplate": {"spec": {"template": {"spec": _pod_spec(NEW)}}},
    }
    if zone:
        spec["timeZone"] = zone
    return {
        "metadata": {
            "name": "nightly",
            "namespace": "ns",
            "uid": "u-cj",
            "resourceVersion": "9",
            "annotations": notes or {},
        },
        "spec": spec,
    }


def job(
    name: str, image: str, created: str, condition: str | None = None, owner: str = "u-cj"
) -> dict[str, Any]:
    conditions = []
    if condition == "Failed":
        conditions.append(
            {
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
            }
        )
    elif condition == "Complete":
        conditions.append({"type": "Complete", "status": "True"})
    return {
        "metadata": {
            "name": name,
            "uid": f"u-{name}",
            "creationTimestamp": created,
            "ownerReferences": [{"kind": "CronJob", "uid": owner, "controller": True}],
            "annotations": {ann.SHA: "f" * 40},
        },
        "spec": {"completions": 1, "template": {"spec": _pod_spec(image)}},
        "status": {
            "succeeded": 1 if condition == "Complete" else 0,
            "conditions": conditions,
        },
    }


def pod(name: str, image: str, reason: str | None = None, owner: str = "u-sts") -> dict[str, Any]:
    status: dict[str, Any] = {"containerStatuses": [{"name": "app", "restartCount": 4}]}
    if reason:
        status["containerStatuses"][0]["state"] = {"waiting": {"reason": reason}}
    else:
        status["containerStatuses"][0]["state"] = {"running": {}}
    meta = {"name": name, "ownerReferences": [{"uid": owner, "controller": True}]}
    return {"metadata": meta, "spec": _pod_spec(image), "status": status}


# --- StatefulSet --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (sts(), Verdict(Rollout.AVAILABLE, "3/3 ready")),
        (sts(observed=0) | {"status": {}}, Verdict(None)),
        (
            sts(observed=1),
            Verdict(
                Rollout.PROGRESSING, "3/3 ready", "waiting for the controller to see the change"
            ),
        ),
        (
            sts(ready=2, updated=1, revisions=("web-1", "web-2")),
            Verdict(Rollout.PROGRESSING, "1/3 ready", "waiting for 1 pods to be ready"),
        ),
        # every pod ready, but the controller has not moved currentRevision yet
        (
            sts(updated=3, revisions=("web-1", "web-2")),
            Verdict(
                Rollout.PROGRESSING,
                "3/3 ready",
                "waiting for the rolling update: 3/3 pods at the new revision",
            ),
        ),
        (
            sts(updated=2, revisions=("web-1", "web-2")),
            Verdict(
                Rollout.PROGRESSING,
                "2/3 ready",
                "waiting for the rolling update: 2/3 pods at the new revision",
            ),
        ),
    ],
)
def test_statefulset_rolling_update(obj: dict[str, Any], expected: Verdict) -> None:
    assert state(STATEFULSET, obj) == expected


def test_a_partitioned_statefulset_is_available_once_the_pods_at_or_above_it_are() -> None:
    partition = {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}
    going = sts(strategy=partition, updated=0, ready=2, revisions=("web-1", "web-2"))
    assert state(STATEFULSET, going) == Verdict(
        Rollout.PROGRESSING, "0/1 ready", "partitioned at 2: 0/1 updated"
    )
    done = sts(strategy=partition, updated=1, ready=3, revisions=("web-1", "web-2"))
    assert state(STATEFULSET, done) == Verdict(Rollout.AVAILABLE, "1/1 ready", "partitioned at 2")
    # a partition at or above replicas holds every pod back: nothing to wait for
    all_held = sts(
        strategy={"type": "RollingUpdate", "rollingUpdate": {"partition": 3}},
        updated=0,
        revisions=("web-1", "web-2"),
    )
    assert state(STATEFULSET, all_held).rollout is Rollout.AVAILABLE
    # ... and never failed for the pods it holds back, however old the change
    assert judge(
        STATEFULSET, done, pods=[pod("web-0", OLD)], now=T0 + 3600, timeout=60, started=T0
    ) == (Verdict(Rollout.AVAILABLE, "1/1 ready", "partitioned at 2"))


def test_an_ondelete_statefulset_waits_for_pods_to_be_replaced_and_never_times_out() -> None:
    waiting = sts(strategy={"type": "OnDelete"}, updated=0, revisions=("web-1", "web-2"))
    verdict = judge(
        STATEFULSET,
        waiting,
        pods=[pod("web-2", NEW, "CrashLoopBackOff")],
        now=T0 + 3600,
        timeout=60,
        started=T0,
    )
    assert verdict == Verdict(
        Rollout.PROGRESSING,
        "0/3 ready",
        "waiting for pods to be replaced (OnDelete): 0/3 updated",
        timed=False,
    )
    replaced = sts(strategy={"type": "OnDelete"})
    assert state(STATEFULSET, replaced) == Verdict(Rollout.AVAILABLE, "3/3 ready")


def test_stuck_new_pods_fail_a_statefulset_only_past_the_timeout() -> None:
    obj = sts(ready=2, updated=1, revisions=("web-1", "web-2"))
    pods = [pod("web-0", OLD), pod("web-1", OLD), pod("web-2", NEW, "CrashLoopBackOff")]
    early = judge(STATEFULSET, obj, pods=pods, now=T0 + 59, timeout=60, started=T0)
    assert early.rollout is Rollout.PROGRESSING
    late = judge(STATEFULSET, obj, pods=pods, now=T0 + 60, timeout=60, started=T0)
    assert late == Verdict(
        Rollout.FAILED,
        "1/3 ready",
        "new pods are not coming up: pod web-2: CrashLoopBackOff (4 restarts)",
    )
    # the start time defaults to the updated-at the reconciler wrote
    noted = sts(
        ready=2,
        updated=1,
        revisions=("web-1", "web-2"),
        annotations={ann.UPDATED_AT: "2026-12-07T03:00:00Z"},
    )
    assert judge(STATEFULSET, noted, pods=pods, now=T0 + 60, timeout=60).rollout is Rollout.FAILED
    # without a start time, or with pods that are only slow, it is not failed
    assert judge(STATEFULSET, obj, pods=pods, now=T0 + 600, timeout=60).rollout is (
        Rollout.PROGRESSING
    )
    slow = [pod("web-2", NEW, "ContainerCreating")]
    assert judge(STATEFULSET, obj, pods=slow, now=T0 + 600, timeout=60, started=T0).rollout is (
        Rollout.PROGRESSING
    )
    # another workload's pods (same image, same namespace) are not this one's
    others = [pod("web2-0", NEW, "CrashLoopBackOff", owner="u-other")]
    assert judge(STATEFULSET, obj, pods=others, now=T0 + 600, timeout=60, started=T0).rollout is (
        Rollout.PROGRESSING
    )
    # old pods crash-looping are not the new commit's fault
    old_stuck = [pod("web-0", OLD, "CrashLoopBackOff")]
    assert judge(
        STATEFULSET, obj, pods=old_stuck, now=T0 + 600, timeout=60, started=T0
    ).rollout is (Rollout.PROGRESSING)


# --- DaemonSet ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (ds(), Verdict(Rollout.AVAILABLE, "3/3 ready")),
        (ds() | {"status": {}}, Verdict(None)),
        (
            ds(observed=1),
            Verdict(
                Rollout.PROGRESSING, "3/3 ready", "waiting for the controller to see the change"
            ),
        ),
        (ds(updated=1, available=2), Verdict(Rollout.PROGRESSING, "1/3 ready", "1/3 updated")),
        (ds(updated=3, available=2), Verdict(Rollout.PROGRESSING, "2/3 ready", "2/3 available")),
        (
            ds(updated=1, strategy="OnDelete"),
            Verdict(
                Rollout.PROGRESSING,
                "1/3 ready",
                "waiting for pods to be replaced (OnDelete): 1/3 updated",
                timed=False,
            ),
        ),
        (ds(desired=0, updated=0, available=0), Verdict(Rollout.AVAILABLE, "0/0 ready")),
    ],
)
def test_daemonset_rules(obj: dict[str, Any], expected: Verdict) -> None:
    assert state(DAEMONSET, obj) == expected


def test_stuck_new_pods_fail_a_daemonset_past_the_timeout() -> None:
    obj = ds(updated=1, available=2)
    pods = [pod("agent-a", NEW, "ImagePullBackOff", owner="u-ds"), pod("agent-b", OLD)]
    verdict = judge(DAEMONSET, obj, pods=pods, now=T0 + 61, timeout=60, started=T0)
    assert verdict == Verdict(
        Rollout.FAILED,
        "1/3 ready",
        "new pods are not coming up: pod agent-a: ImagePullBackOff (4 restarts)",
    )


# --- CronJob ------------------------------------------------------------------------------------


def test_a_cronjob_rollout_is_the_first_job_of_its_new_template() -> None:
    cj = cronjob()
    old = job("nightly-1", OLD, "2026-12-06T04:00:00Z", "Complete")
    first = job("nightly-2", NEW, "2026-12-07T03:10:00Z")
    later = job("nightly-3", NEW, "2026-12-07T03:20:00Z", "Complete")
    stranger = job("other-1", NEW, "2026-12-07T03:00:00Z", "Complete", owner="u-other")
    assert first_job(cj, [later, old, first, stranger]) is first
    assert state(CRONJOB, cj, [old, first, later, stranger], T0) == Verdict(
        Rollout.PROGRESSING, "0/1 succeeded", "job nightly-2 running"
    )
    done = job("nightly-2", NEW, "2026-12-07T03:10:00Z", "Complete")
    assert state(CRONJOB, cj, [old, done], T0) == Verdict(
        Rollout.AVAILABLE, "1/1 succeeded", "job nightly-2 succeeded"
    )
    failed = job("nightly-2", NEW, "2026-12-07T03:10:00Z", "Failed")
    assert state(CRONJOB, cj, [old, failed, later], T0) == Verdict(
        Rollout.FAILED,
        "0/1 succeeded",
        "job nightly-2 failed: BackoffLimitExceeded (Job has reached the specified backoff limit)",
    )


def test_jobs_older_than_the_recorded_image_change_do_not_count() -> None:
    """Back on an image an older Job ran (a rollback), that Job is not the new rollout."""
    cj = cronjob(notes={ann.UPDATED_AT: "2026-12-07T03:05:00Z"})
    before = job("nightly-1", NEW, "2026-12-07T03:00:00Z", "Complete")
    assert first_job(cj, [before]) is None
    after = job("nightly-2", NEW, "2026-12-07T03:05:00Z")
    assert first_job(cj, [before, after]) is after


def test_a_cronjob_without_a_new_job_waits_for_its_schedule_or_is_suspended() -> None:
    assert state(CRONJOB, cronjob(), [], T0) == Verdict(
        Rollout.PROGRESSING, "no job yet", "waiting for the next schedule at 04:00 UTC", timed=False
    )
    tomorrow = state(CRONJOB, cronjob(schedule="30 2 * * *"), [], T0)
    assert tomorrow.reason == "waiting for the next schedule at 2026-12-08 02:30 UTC"
    berlin = state(CRONJOB, cronjob(zone="Europe/Berlin"), [], T0)  # 03:00 UTC is 04:00 there
    assert berlin.reason == "waiting for the next schedule at 2026-12-08 04:00 Europe/Berlin"
    legacy = state(CRONJOB, cronjob(schedule="CRON_TZ=Asia/Tokyo @hourly"), [], T0)
    assert legacy.reason == "waiting for the next schedule at 13:00 Asia/Tokyo"
    bad = state(CRONJOB, cronjob(schedule="61 * * * *"), [], T0)
    assert bad.reason.startswith("waiting for the next schedule ('61 * * * *' in UTC:")
    assert state(CRONJOB, cronjob(suspend=True), [], T0) == Verdict(
        Rollout.PROGRESSING, "no job yet", "suspended", timed=False
    )
    # neither is failed by the rollout timeout
    assert judge(CRONJOB, cronjob(), now=T0 + 9999, timeout=1, started=T0).rollout is (
        Rollout.PROGRESSING
    )


def test_stuck_pods_of_the_new_job_fail_a_cronjob_past_the_timeout() -> None:
    cj = cronjob()
    running = job("nightly-2", NEW, "2026-12-07T03:10:00Z")
    pods = [pod("nightly-2-x", NEW, "ImagePullBackOff", owner="u-nightly-2")]
    assert judge(
        CRONJOB, cj, jobs=[running], pods=pods, now=T0 + 5, timeout=60, started=T0
    ).rollout is (Rollout.PROGRESSING)
    # a pod of another Job (say one a person made from an older CronJob) does not count
    stranger = [pod("manual-x", NEW, "ImagePullBackOff", owner="u-manual")]
    assert judge(
        CRONJOB, cj, jobs=[running], pods=stranger, now=T0 + 60, timeout=60, started=T0
    ).rollout is (Rollout.PROGRESSING)
    failed = judge(CRONJOB, cj, jobs=[running], pods=pods, now=T0 + 60, timeout=60, started=T0)
    assert failed.rollout is Rollout.FAILED
    assert (
        failed.reason
        == "new pods are not coming up: pod nightly-2-x: ImagePullBackOff (4 restarts)"
    )


def test_cron_next_is_the_next_whole_minute_or_later() -> None:
    assert cron_next("*/15 * * * *", datetime(2026, 12, 7, 3, 15, 30)) == datetime(
        2026, 12, 7, 3, 30
    )
    assert cron_next("@daily", datetime(2026, 12, 7, 0, 0)) == datetime(2026, 12, 8, 0, 0)
    with pytest.raises(ValueError, match="five fields"):
        cron_next("@every 5m", datetime(2026, 12, 7))


# --- where the template is, history, rollback ---------------------------------------------------


def test_template_paths_and_images_per_kind() -> None:
    assert template_path(DEPLOYMENT) == template_path(STATEFULSET) == ("spec", "template")
    assert template_path(DAEMONSET) == ("spec", "template")
    assert template_path(CRONJOB) == ("spec", "jobTemplate", "spec", "template")
    with pytest.raises(ValueError, match="unknown workload kind 'Job'"):
        template_path("Job")
    with pytest.raises(ValueError, match="Deployments"):
        state(DEPLOYMENT, {})
    assert images(CRONJOB, cronjob()) == {"app": NEW}
    obj = sts()
    obj["spec"]["template"]["spec"]["initContainers"] = [{"name": "migrate", "image": OLD}]
    assert images(STATEFULSET, obj) == {"migrate": OLD, "app": NEW}


def test_stuck_pods_needs_every_image_of_the_template() -> None:
    assert stuck_pods({}, [pod("a", NEW, "CrashLoopBackOff")]) == ()
    assert stuck_pods({"app": NEW}, [pod("a", NEW, "ErrImagePull")]) == (
        "pod a: ErrImagePull (4 restarts)",
    )


def test_image_owners_are_read_at_the_kinds_template_path() -> None:
    image_field: dict[str, Any] = {'k:{"name":"app"}': {"f:image": {}}}
    cj_entry = {
        "manager": "kubectl-set",
        "operation": "Update",
        "time": "2026-12-07T03:00:00Z",
        "fieldsV1": {
            "f:spec": {
                "f:jobTemplate": {
                    "f:spec": {"f:template": {"f:spec": {"f:containers": image_field}}}
                }
            }
        },
    }
    owners = kind_image_owners(CRONJOB, [cj_entry])
    assert owners["app"].manager == "kubectl-set"
    sts_entry = cj_entry | {
        "manager": "reconciler",
        "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": image_field}}}},
    }
    assert kind_image_owners(STATEFULSET, [sts_entry])["app"].manager == "reconciler"
    assert kind_image_owners(CRONJOB, [sts_entry]) == {}


def test_revisions_from_controller_revisions_and_jobs() -> None:
    def cr(name: str, n: int, image: str, owner: str = "u-sts") -> dict[str, Any]:
        return {
            "metadata": {
                "name": name,
                "creationTimestamp": "2026-12-07T03:00:00Z",
                "ownerReferences": [{"uid": owner}],
            },
            "revision": n,
            "data": {"spec": {"template": {"$patch": "replace", "spec": _pod_spec(image)}}},
        }

    records = [cr("web-b", 2, NEW), cr("web-a", 1, OLD), cr("x-a", 1, OLD, owner="u-x")]
    assert revisions(STATEFULSET, sts(), records) == (
        Revision(1, "web-a", {"app": OLD}, "2026-12-07T03:00:00Z"),
        Revision(2, "web-b", {"app": NEW}, "2026-12-07T03:00:00Z"),
    )
    jobs = [
        job("n-2", NEW, "2026-12-07T03:10:00Z", "Failed"),
        job("n-1", OLD, "2026-12-06T04:00:00Z", "Complete"),
    ]
    history = revisions(CRONJOB, cronjob(), jobs)
    assert [(r.number, r.name, r.outcome, r.sha) for r in history] == [
        (1, "n-1", "succeeded", "f" * 40),
        (2, "n-2", "failed", "f" * 40),
    ]
    with pytest.raises(ValueError, match="ReplicaSets"):
        revisions(DEPLOYMENT, {}, [])


def test_rollback_patch_sets_the_previous_image_at_the_kinds_template_path() -> None:
    notes = {
        ann.SHA: "b" * 40,
        ann.PREVIOUS_IMAGE: OLD,
        ann.PREVIOUS_SHA: "a" * 40,
    }
    cj = cronjob(notes=notes)
    patch = rollback_patch(CRONJOB, cj, "app", "job nightly-2 failed", T0, repo="acme/web")
    assert patch is not None
    assert (patch.kind, patch.namespace, patch.name) == (CRONJOB, "ns", "nightly")
    assert patch.body["spec"] == {
        "jobTemplate": {
            "spec": {"template": {"spec": {"containers": [{"name": "app", "image": OLD}]}}}
        }
    }
    meta = patch.body["metadata"]
    assert meta["resourceVersion"] == "9"
    assert meta["annotations"] == {
        ann.SHA: "a" * 40,
        ann.UPDATED_AT: "2026-12-07T03:00:00Z",
        ann.PREVIOUS_IMAGE: None,
        ann.previous_image_of("app"): None,
        ann.PREVIOUS_SHA: None,
        ann.FAILED_SHA: "b" * 40,
        ann.FAILED_REASON: "job nightly-2 failed",
        ann.FAILED_AT: "2026-12-07T03:00:00Z",
        ann.CHANGE_CAUSE: "reconciler: rolled back acme/web bbbbbbb -> aaaaaaa (rollout failed)",
    }
    assert [(e.type, e.reason) for e in patch.events] == [
        ("Warning", "RolloutFailed"),
        ("Normal", "RolledBack"),
    ]
    # an init container is patched as one; nothing recorded, no rollback
    obj = sts(annotations=notes)
    obj["spec"]["template"]["spec"]["initContainers"] = [{"name": "migrate", "image": NEW}]
    init = rollback_patch(STATEFULSET, obj, "migrate", "failed", T0)
    assert init is not None
    assert init.body["spec"] == {
        "template": {"spec": {"initContainers": [{"name": "migrate", "image": OLD}]}}
    }
    assert rollback_patch(DAEMONSET, ds(), "app", "failed", T0) is None
    assert image_body(DAEMONSET, "app", NEW, {})["spec"] == {
        "template": {"spec": {"containers": [{"name": "app", "image": NEW}]}}
    }
