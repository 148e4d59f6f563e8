"""The real control plane (etcd + kube-apiserver) behaves like a cluster where it matters to
the reconciler: version, RBAC for ServiceAccounts, strategic-merge patch, dry run, Events,
Leases, optimistic concurrency; and it never leaves processes behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client import ApiException

from testkit.controlplane import (
    REPO_ROOT,
    ControlPlane,
    api_client_from_kubeconfig,
    audit_verb_counts,
    impersonating_api_client,
    kubeconfig_for_token,
    pinned_versions,
    serviceaccount_token,
    token_api_client,
)
from testkit.wait import wait_until

pytestmark = pytest.mark.controlplane

k8s = kubernetes.client


def _meta(name: str, **kw: Any) -> Any:
    return k8s.V1ObjectMeta(name=name, **kw)


def _deployment(name: str, containers: dict[str, str]) -> Any:
    labels = {"app": name}
    return k8s.V1Deployment(
        metadata=_meta(name),
        spec=k8s.V1DeploymentSpec(
            replicas=1,
            selector=k8s.V1LabelSelector(match_labels=labels),
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels=labels),
                spec=k8s.V1PodSpec(
                    containers=[k8s.V1Container(name=n, image=i) for n, i in containers.items()]
                ),
            ),
        ),
    )


def _status_of(call: Callable[[], object]) -> int:
    try:
        call()
    except ApiException as e:
        return int(e.status)
    return 200


def _eventually_status(call: Callable[[], object], want: int, timeout: float = 10.0) -> int:
    # RBAC changes reach the authorizer through an informer: allow a moment.
    seen: list[int] = []

    def answered() -> bool:
        seen.append(_status_of(call))
        return seen[-1] == want

    try:
        wait_until(answered, f"HTTP {want}", timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the last answer was HTTP {seen[-1]}") from None
    return seen[-1]


def _grant_list_deployments(api: Any, namespace: str, sa_name: str) -> None:
    rbac = k8s.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(
        namespace,
        k8s.V1Role(
            metadata=_meta("deployments-reader"),
            rules=[
                k8s.V1PolicyRule(
                    api_groups=["apps"], resources=["deployments"], verbs=["get", "list"]
                )
            ],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        k8s.V1RoleBinding(
            metadata=_meta("deployments-reader"),
            role_ref=k8s.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="deployments-reader"
            ),
            subjects=[k8s.RbacV1Subject(kind="ServiceAccount", name=sa_name, namespace=namespace)],
        ),
    )


# --------------------------------------------------------------------------------------------


def test_version_is_the_stamped_release(control_plane: ControlPlane, kube_api_client: Any) -> None:
    info: Any = k8s.VersionApi(kube_api_client).get_code()
    assert info.git_version != "v0.0.0"
    assert info.major and int(info.major) >= 1 and info.minor
    if os.environ.get("RECONCILER_CONTROLPLANE_BIN") or os.environ.get("KUBEBUILDER_ASSETS"):
        return  # someone else's binaries: only sanity-check the version
    want = pinned_versions()[0]
    assert info.git_version == want
    assert (info.major, info.minor) == tuple(want.lstrip("v").split(".")[:2])


def test_readyz_and_admin_identity(control_plane: ControlPlane, kube_api_client: Any) -> None:
    assert control_plane.raw_get("/readyz") == (200, "ok")
    review: Any = k8s.AuthenticationV1Api(kube_api_client).create_self_subject_review(
        k8s.V1SelfSubjectReview()
    )
    assert review.status.user_info.username == "admin"
    assert "system:masters" in review.status.user_info.groups


def test_rbac_with_impersonation(
    control_plane: ControlPlane, kube_api_client: Any, k8s_namespace: str
) -> None:
    with impersonating_api_client(control_plane, k8s_namespace, "reconciler") as sa_api:
        review: Any = k8s.AuthenticationV1Api(sa_api).create_self_subject_review(
            k8s.V1SelfSubjectReview()
        )
        assert review.status.user_info.username == (
            f"system:serviceaccount:{k8s_namespace}:reconciler"
        )
        assert set(review.status.user_info.groups) == {
            "system:serviceaccounts",
            f"system:serviceaccounts:{k8s_namespace}",
            "system:authenticated",
        }

    # Each group is its own Impersonate-Group header (a comma-joined value would be one group).
    with impersonating_api_client(
        control_plane, k8s_namespace, "reconciler", groups=["team-a", "team-b"]
    ) as custom:
        custom_review: Any = k8s.AuthenticationV1Api(custom).create_self_subject_review(
            k8s.V1SelfSubjectReview()
        )
        assert set(custom_review.status.user_info.groups) == {
            "team-a",
            "team-b",
            "system:authenticated",
        }

    with impersonating_api_client(control_plane, k8s_namespace, "reconciler") as sa_api:

        def list_deployments() -> object:
            return k8s.AppsV1Api(sa_api).list_namespaced_deployment(k8s_namespace)

        assert _status_of(list_deployments) == 403
        _grant_list_deployments(kube_api_client, k8s_namespace, "reconciler")
        assert _eventually_status(list_deployments, 200) == 200
        # The grant is namespaced and read-only.
        assert _status_of(lambda: k8s.AppsV1Api(sa_api).list_deployment_for_all_namespaces()) == (
            403
        )
        assert (
            _status_of(
                lambda: k8s.AppsV1Api(sa_api).create_namespaced_deployment(
                    k8s_namespace, _deployment("x", {"app": "nginx"})
                )
            )
            == 403
        )


def test_rbac_with_tokenrequest_token(
    control_plane: ControlPlane, kube_api_client: Any, k8s_namespace: str, tmp_path: Path
) -> None:
    token = serviceaccount_token(control_plane, k8s_namespace, "reconciler")
    assert token.count(".") == 2  # a JWT

    path = kubeconfig_for_token(control_plane, token, tmp_path / "sa.kubeconfig")
    with (
        api_client_from_kubeconfig(path) as from_kubeconfig,
        token_api_client(control_plane, token) as direct,
    ):
        for sa_api in (from_kubeconfig, direct):
            review: Any = k8s.AuthenticationV1Api(sa_api).create_self_subject_review(
                k8s.V1SelfSubjectReview()
            )
            assert review.status.user_info.username == (
                f"system:serviceaccount:{k8s_namespace}:reconciler"
            )
        apps = k8s.AppsV1Api(from_kubeconfig)

        def list_deployments() -> object:
            return apps.list_namespaced_deployment(k8s_namespace)

        assert _status_of(list_deployments) == 403
        _grant_list_deployments(kube_api_client, k8s_namespace, "reconciler")
        assert _eventually_status(list_deployments, 200) == 200
        assert _status_of(
            lambda: k8s.AppsV1Api(direct).list_namespaced_deployment(k8s_namespace)
        ) == (200)

    bad = token_api_client(control_plane, token[:-4] + "AAAA")
    with bad:
        assert _status_of(lambda: k8s.AppsV1Api(bad).list_namespaced_deployment(k8s_namespace)) == (
            401
        )


def test_strategic_merge_patch_keeps_other_containers(
    kube_api_client: Any, k8s_namespace: str
) -> None:
    apps = k8s.AppsV1Api(kube_api_client)
    apps.create_namespaced_deployment(
        k8s_namespace, _deployment("web", {"app": "example/app:old", "sidecar": "example/proxy:1"})
    )
    patched: Any = apps.patch_namespaced_deployment(
        "web",
        k8s_namespace,
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "app", "image": "example/app:new"}]}}
            }
        },
    )
    images = {c.name: c.image for c in patched.spec.template.spec.containers}
    assert images == {"app": "example/app:new", "sidecar": "example/proxy:1"}
    assert patched.metadata.generation == 2
    stored: Any = apps.read_namespaced_deployment("web", k8s_namespace)
    assert [c.name for c in stored.spec.template.spec.containers] == ["app", "sidecar"]


def test_server_side_dry_run_changes_nothing(kube_api_client: Any, k8s_namespace: str) -> None:
    apps = k8s.AppsV1Api(kube_api_client)
    created: Any = apps.create_namespaced_deployment(
        k8s_namespace, _deployment("web", {"app": "a:1"})
    )
    body = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "a:2"}]}}}}
    dry: Any = apps.patch_namespaced_deployment("web", k8s_namespace, body, dry_run="All")
    assert dry.spec.template.spec.containers[0].image == "a:2"
    after: Any = apps.read_namespaced_deployment("web", k8s_namespace)
    assert after.metadata.resource_version == created.metadata.resource_version
    assert after.spec.template.spec.containers[0].image == "a:1"
    # A dry-run create stores nothing either.
    apps.create_namespaced_deployment(
        k8s_namespace, _deployment("ghost", {"app": "a:1"}), dry_run="All"
    )
    assert _status_of(lambda: apps.read_namespaced_deployment("ghost", k8s_namespace)) == 404


def test_events_can_be_created(kube_api_client: Any, k8s_namespace: str) -> None:
    core = k8s.CoreV1Api(kube_api_client)
    core.create_namespaced_event(
        k8s_namespace,
        k8s.CoreV1Event(
            metadata=_meta("web.deployed"),
            involved_object=k8s.V1ObjectReference(
                api_version="apps/v1", kind="Deployment", name="web", namespace=k8s_namespace
            ),
            reason="Deployed",
            message="image example/app:new",
            type="Normal",
            source=k8s.V1EventSource(component="reconciler"),
            count=1,
        ),
    )
    k8s.EventsV1Api(kube_api_client).create_namespaced_event(
        k8s_namespace,
        k8s.EventsV1Event(
            metadata=_meta("web.deployed2"),
            event_time=_now_micro(),
            reporting_controller="example.com/reconciler",
            reporting_instance="reconciler-0",
            action="Deploy",
            reason="Deployed",
            note="image example/app:new",
            type="Normal",
            regarding=k8s.V1ObjectReference(
                api_version="apps/v1", kind="Deployment", name="web", namespace=k8s_namespace
            ),
        ),
    )
    events = core.list_namespaced_event(k8s_namespace).items
    assert {e.metadata.name for e in events} == {"web.deployed", "web.deployed2"}


def _now_micro() -> Any:
    import datetime

    return datetime.datetime.now(datetime.UTC)


def test_leases_create_update_and_conflict(kube_api_client: Any, k8s_namespace: str) -> None:
    coord = k8s.CoordinationV1Api(kube_api_client)
    lease: Any = coord.create_namespaced_lease(
        k8s_namespace,
        k8s.V1Lease(
            metadata=_meta("reconciler-leader"),
            spec=k8s.V1LeaseSpec(
                holder_identity="pod-a", lease_duration_seconds=15, acquire_time=_now_micro()
            ),
        ),
    )
    stale_rv = lease.metadata.resource_version
    lease.spec.holder_identity = "pod-b"
    lease.spec.renew_time = _now_micro()
    updated: Any = coord.replace_namespaced_lease("reconciler-leader", k8s_namespace, lease)
    assert updated.spec.holder_identity == "pod-b"
    assert updated.metadata.resource_version != stale_rv

    # Another writer still holding the old resourceVersion loses.
    lease.metadata.resource_version = stale_rv
    lease.spec.holder_identity = "pod-c"
    with pytest.raises(ApiException) as err:
        coord.replace_namespaced_lease("reconciler-leader", k8s_namespace, lease)
    assert err.value.status == 409
    assert json.loads(err.value.body or "{}")["reason"] == "Conflict"
    current: Any = coord.read_namespaced_lease("reconciler-leader", k8s_namespace)
    assert current.spec.holder_identity == "pod-b"


def test_stale_resource_version_update_conflicts(kube_api_client: Any, k8s_namespace: str) -> None:
    apps = k8s.AppsV1Api(kube_api_client)
    first: Any = apps.create_namespaced_deployment(
        k8s_namespace, _deployment("web", {"app": "a:1"})
    )
    apps.patch_namespaced_deployment("web", k8s_namespace, {"metadata": {"labels": {"x": "1"}}})
    first.spec.template.spec.containers[0].image = "a:2"
    with pytest.raises(ApiException) as err:
        apps.replace_namespaced_deployment("web", k8s_namespace, first)
    assert err.value.status == 409
    # A patch that pins the old resourceVersion conflicts too.
    with pytest.raises(ApiException) as err:
        apps.patch_namespaced_deployment(
            "web",
            k8s_namespace,
            {
                "metadata": {
                    "resourceVersion": first.metadata.resource_version,
                    "labels": {"y": "1"},
                }
            },
        )
    assert err.value.status == 409


def test_audit_log_counts_requests_by_verb(control_plane: ControlPlane, tmp_path: Path) -> None:
    audit = tmp_path / "audit.log"
    with ControlPlane(bin_dir=control_plane.bin_dir, audit_log=audit) as cp, cp.api_client() as api:
        core = k8s.CoreV1Api(api)
        core.create_namespace(k8s.V1Namespace(metadata=_meta("audited")))
        for _ in range(3):
            core.list_namespaced_config_map("audited")
        core.create_namespaced_config_map(
            "audited", k8s.V1ConfigMap(metadata=_meta("c"), data={"k": "v"})
        )
        core.patch_namespaced_config_map("c", "audited", {"data": {"k": "w"}})
        core.read_namespaced_config_map("c", "audited")
        with impersonating_api_client(cp, "audited", "robot") as sa_api:
            _status_of(lambda: k8s.CoreV1Api(sa_api).list_namespaced_config_map("audited"))
        counts = audit_verb_counts(audit, username="admin")
        assert counts == {"create": 2, "list": 3, "patch": 1, "get": 1}
        assert audit_verb_counts(audit, username="system:serviceaccount:audited:robot") == {
            "list": 1
        }


# --------------------------------------------------------------------------------------------
# No orphans


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, just not reaped


@pytest.fixture
def child_script(control_plane: ControlPlane, tmp_path: Path) -> Iterator[Path]:
    script = tmp_path / "run_cp.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import json, os, signal, sys, time
            signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignored
            sys.path.insert(0, {str(REPO_ROOT)!r})
            from pathlib import Path
            from testkit.controlplane import ControlPlane
            with ControlPlane(bin_dir=Path({str(control_plane.bin_dir)!r})) as cp:
                print(json.dumps({{
                    "pids": [cp._etcd.pid, cp._apiserver.pid],
                    "work_dir": str(cp.work_dir),
                    "bin_dir": str(cp.bin_dir),
                }}), flush=True)
                time.sleep(600)
            """
        )
    )
    yield script


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=["TERM", "INT", "KILL"]
)
def test_no_orphans_when_the_owner_dies(child_script: Path, sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(child_script)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=REPO_ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, "child exited before the control plane was ready"
        info: Any = json.loads(line)
        pids: list[int] = info["pids"]
        assert all(_alive(p) for p in pids)
        proc.send_signal(sig)
        proc.wait(30)
        wait_until(
            lambda: not any(_alive(p) for p in pids), f"etcd and kube-apiserver {pids} to exit", 15
        )
        work_dir = Path(info["work_dir"])
        if sig != signal.SIGKILL:  # a clean stop also removes the temp dir
            assert not work_dir.exists()
        else:  # which the next start sweeps up
            assert work_dir.exists()
            with ControlPlane(bin_dir=Path(info["bin_dir"])):
                assert not work_dir.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
