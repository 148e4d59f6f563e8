"""charts/reconciler with the real helm on the local cluster (one cluster, one release, shared by
the tests of this module, which run in order): install (into a namespace the release owns, with
the Pod Security labels), the ServiceAccount's rights checked as its own token, the admission
policy refusing a non-image change, an upgrade to another namespace list, and an uninstall that
leaves nothing behind."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client import ApiException

from testkit.controlplane import REPO_ROOT, LocalCluster, serviceaccount_token, token_api_client
from testkit.helm import Helm
from testkit.manifests import POLICY, SA, simple_deployment
from testkit.wait import wait_until

CHART = REPO_ROOT / "charts" / "reconciler"
SITES = REPO_ROOT / "k8s" / "sites.toml"
PART_OF = "app.kubernetes.io/part-of=reconciler"
k8s = kubernetes.client


@dataclass
class Release:
    helm: Helm
    namespace: str  # where the reconciler runs (the release's namespace)
    site_a: str
    site_b: str
    cluster: LocalCluster
    admin: Any

    def as_reconciler(self) -> Any:
        """An ApiClient with a TokenRequest token of the release's ServiceAccount."""
        return token_api_client(
            self.cluster, serviceaccount_token(self.cluster, self.namespace, SA)
        )


def status(call: Callable[[], object]) -> int:
    try:
        call()
    except ApiException as exc:
        return int(exc.status)
    return 200


def refusal(call: Callable[[], object]) -> str | None:
    """The message of a 403, None when `call` is admitted."""
    try:
        call()
    except ApiException as exc:
        if exc.status != 403:
            raise
        return str(json.loads(exc.body or "{}").get("message"))
    return None


@pytest.fixture(scope="module")
def release(
    helm: Path,
    local_cluster: LocalCluster,
    cluster_api_client: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Release]:
    suffix = uuid.uuid4().hex[:6]
    core = k8s.CoreV1Api(cluster_api_client)
    sites = [f"t-helm-a-{suffix}", f"t-helm-b-{suffix}"]
    for name in sites:
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
        k8s.AppsV1Api(cluster_api_client).create_namespaced_deployment(
            name, simple_deployment("blog")
        )
    h = Helm(helm, home=tmp_path_factory.mktemp("helm"), kubeconfig=local_cluster.kubeconfig_path)
    found = Release(h, f"t-helm-{suffix}", sites[0], sites[1], local_cluster, cluster_api_client)
    try:
        yield found
    finally:
        with contextlib.suppress(Exception):
            h.run("uninstall", "reconciler", "--namespace", found.namespace, timeout=120)
        for name in (*sites, found.namespace):
            with contextlib.suppress(Exception):
                core.delete_namespace(name, propagation_policy="Background")
        admission = k8s.AdmissionregistrationV1Api(cluster_api_client)
        with contextlib.suppress(Exception):
            admission.delete_validating_admission_policy_binding(POLICY)
        with contextlib.suppress(Exception):
            admission.delete_validating_admission_policy(POLICY)


def test_install_creates_the_namespace_with_pod_security_and_the_pod_runs(
    release: Release,
) -> None:
    release.helm.ok(
        *("install", "reconciler", CHART, "--namespace", release.namespace, "--create-namespace"),
        *("--set-file", f"sites.toml={SITES}", "--set", "namespace.create=true"),
        *("--set", f"namespaces={{{release.site_a}}}", "--wait", "--timeout", "180s"),
    )
    namespace: Any = k8s.CoreV1Api(release.admin).read_namespace(release.namespace)
    assert namespace.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
    # The pod was admitted under "restricted" and became available.
    deployment: Any = k8s.AppsV1Api(release.admin).read_namespaced_deployment(
        "reconciler", release.namespace
    )
    assert deployment.status.available_replicas == 1
    assert deployment.spec.template.spec.containers[0].image.endswith("/reconciler:0.1.0")
    listed = release.helm.ok("list", "--namespace", release.namespace, "--output", "json")
    assert [(r["name"], r["status"]) for r in json.loads(listed)] == [("reconciler", "deployed")]


def test_the_serviceaccount_may_do_what_the_reconciler_does_and_nothing_else(
    release: Release,
) -> None:
    api = release.as_reconciler()
    apps, core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
    leases = k8s.CoordinationV1Api(api)
    site, other, home = release.site_a, release.site_b, release.namespace
    image = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "ex/app:2"}]}}}}
    event = k8s.CoreV1Event(
        metadata=k8s.V1ObjectMeta(name=f"blog.{uuid.uuid4().hex[:8]}"),
        involved_object=k8s.V1ObjectReference(kind="Deployment", name="blog", namespace=site),
    )
    lease = k8s.V1Lease(metadata=k8s.V1ObjectMeta(name="reconciler"))
    allowed: dict[str, Callable[[], object]] = {
        "list Deployments in a site namespace": lambda: apps.list_namespaced_deployment(site),
        "patch a site's image": lambda: apps.patch_namespaced_deployment("blog", site, image),
        "record an Event": lambda: core.create_namespaced_event(site, event),
        "list a rollout's pods": lambda: core.list_namespaced_pod(site),
        "list ReplicaSets": lambda: apps.list_namespaced_replica_set(site),
        "create the Lease": lambda: leases.create_namespaced_lease(home, lease),
        "read the Lease": lambda: leases.read_namespaced_lease("reconciler", home),
    }
    for what, call in allowed.items():
        assert status(call) == 200, what
    denied: dict[str, Callable[[], object]] = {
        "list Deployments elsewhere": lambda: apps.list_namespaced_deployment(other),
        "patch itself": lambda: apps.patch_namespaced_deployment("reconciler", home, image),
        "delete a site": lambda: apps.delete_namespaced_deployment("blog", site),
        "create a Deployment": lambda: apps.create_namespaced_deployment(
            site, simple_deployment("new")
        ),
        "read Secrets": lambda: core.list_namespaced_secret(home),
        "read a site's Secrets": lambda: core.list_namespaced_secret(site),
        "list namespaces": core.list_namespace,
        "read another Lease": lambda: leases.read_namespaced_lease("other", home),
    }
    for what, call in denied.items():
        assert status(call) == 403, what


def test_the_admission_policy_refuses_a_change_that_is_not_an_image(release: Release) -> None:
    api = release.as_reconciler()
    site = release.site_a
    replicas = {"spec": {"replicas": 5}}

    def refused_by_the_policy() -> bool:
        message = refusal(
            lambda: k8s.AppsV1Api(api).patch_namespaced_deployment("blog", site, replicas)
        )
        if message is None:  # admitted before the policy was in force: undo as admin
            k8s.AppsV1Api(release.admin).patch_namespaced_deployment(
                "blog", site, {"spec": {"replicas": 1}}
            )
            return False
        return (
            "ValidatingAdmissionPolicy" in message
            and "may not change the workload's spec" in message
        )

    wait_until(refused_by_the_policy, "the chart's admission policy refusing a replicas change", 60)
    image = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "ex/app:3"}]}}}}
    k8s.AppsV1Api(api).patch_namespaced_deployment("blog", site, image)
    blog: Any = k8s.AppsV1Api(release.admin).read_namespaced_deployment("blog", site)
    assert blog.spec.replicas == 1 and blog.spec.template.spec.containers[0].image == "ex/app:3"


def test_upgrade_with_another_namespace_list_moves_the_rights(release: Release) -> None:
    release.helm.ok(
        *("upgrade", "reconciler", CHART, "--namespace", release.namespace, "--reuse-values"),
        *("--set", f"namespaces={{{release.site_b}}}", "--wait", "--timeout", "180s"),
    )
    rbac = k8s.RbacAuthorizationV1Api(release.admin)
    assert status(lambda: rbac.read_namespaced_role("reconciler", release.site_a)) == 404
    assert status(lambda: rbac.read_namespaced_role_binding("reconciler", release.site_a)) == 404
    apps = k8s.AppsV1Api(release.as_reconciler())
    wait_until(
        lambda: (
            status(lambda: apps.list_namespaced_deployment(release.site_b)) == 200
            and status(lambda: apps.list_namespaced_deployment(release.site_a)) == 403
        ),
        "the rights in the new namespace list only",
        30,
    )
    history = json.loads(
        release.helm.ok("history", "reconciler", "--namespace", release.namespace, "-o", "json")
    )
    assert [r["revision"] for r in history] == [1, 2]


def test_uninstall_leaves_nothing_behind(release: Release) -> None:
    """Every object the chart made goes; what is not the release's stays: the sites, and the
    namespace (kept, like any --create-namespace one) with the Lease the running reconciler
    wrote there (its runtime record, not a chart object)."""
    release.helm.ok(
        "uninstall", "reconciler", "--namespace", release.namespace, "--wait", "--timeout", "180s"
    )
    ns = release.namespace
    admission = k8s.AdmissionregistrationV1Api(release.admin)
    assert status(lambda: admission.read_validating_admission_policy(POLICY)) == 404
    assert status(lambda: admission.read_validating_admission_policy_binding(POLICY)) == 404
    core, apps = k8s.CoreV1Api(release.admin), k8s.AppsV1Api(release.admin)
    rbac, net = k8s.RbacAuthorizationV1Api(release.admin), k8s.NetworkingV1Api(release.admin)
    left: dict[str, Callable[[], Any]] = {
        "Deployments": lambda: apps.list_namespaced_deployment(ns),
        "ReplicaSets": lambda: apps.list_namespaced_replica_set(ns),
        "Pods": lambda: core.list_namespaced_pod(ns),
        "Services": lambda: core.list_namespaced_service(ns),
        "ConfigMaps": lambda: core.list_namespaced_config_map(ns, label_selector=PART_OF),
        "Secrets (helm's release records)": lambda: core.list_namespaced_secret(ns),
        "Roles": lambda: rbac.list_namespaced_role(ns),
        "RoleBindings": lambda: rbac.list_namespaced_role_binding(ns),
        "NetworkPolicies": lambda: net.list_namespaced_network_policy(ns),
        "the ServiceAccount": lambda: core.list_namespaced_service_account(
            ns, field_selector=f"metadata.name={SA}"
        ),
    }
    for site in (release.site_a, release.site_b):
        left[f"Roles in {site}"] = lambda s=site: rbac.list_namespaced_role(s)  # type: ignore[misc]
        left[f"RoleBindings in {site}"] = lambda s=site: rbac.list_namespaced_role_binding(s)  # type: ignore[misc]
    # The pods and ReplicaSets go through the garbage collector, after the Deployment.
    remaining: list[str] = []

    def nothing_left() -> bool:
        remaining[:] = [what for what, call in left.items() if call().items]
        return not remaining

    try:
        wait_until(nothing_left, "nothing of the release left", 60)
    except AssertionError:
        raise AssertionError(f"left behind by helm uninstall: {remaining}") from None
    for site in (release.site_a, release.site_b):
        blog: Any = apps.read_namespaced_deployment("blog", site)
        assert blog.metadata.name == "blog"
    assert status(lambda: core.read_namespace(ns)) == 200
