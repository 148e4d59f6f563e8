"""The manifests render as documented and, on a real API server, grant exactly what is needed."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml  # type: ignore[import-untyped]
from kubernetes.client import ApiException

from testkit.controlplane import REPO_ROOT, ControlPlane
from testkit.manifests import (
    FIELD_MANAGER,
    SA,
    Doc,
    installed_docs,
    kustomize,
    one,
    simple_deployment,
)

k8s = kubernetes.client

READ_PATCH = ("get", "list", "watch", "patch")
# (API group, resource, verb) the reconciler may use, per Role.
SITE_RULES = {
    ("apps", "deployments", "get"),
    ("apps", "deployments", "list"),
    ("apps", "deployments", "watch"),  # serve's watch-fed cache (#22)
    ("apps", "deployments", "patch"),
    ("", "events", "create"),
    ("", "pods", "get"),
    ("", "pods", "list"),
    ("", "pods", "watch"),
    ("apps", "replicasets", "get"),
    ("apps", "replicasets", "list"),
    ("apps", "replicasets", "watch"),
    *{("apps", kind, verb) for kind in ("statefulsets", "daemonsets") for verb in READ_PATCH},
    ("apps", "controllerrevisions", "get"),
    ("apps", "controllerrevisions", "list"),
    *{("batch", "cronjobs", verb) for verb in READ_PATCH},
    ("batch", "jobs", "get"),
    ("batch", "jobs", "list"),
}
LEASE_RULES = {
    ("coordination.k8s.io", "leases", "create"),
    ("coordination.k8s.io", "leases", "get"),
    ("coordination.k8s.io", "leases", "update"),
}


# --------------------------------------------------------------------------------------------
# Rendering


def _rules(role: Doc) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


@pytest.fixture(scope="module")
def rendered(kubectl: str) -> list[Doc]:
    return kustomize(kubectl, REPO_ROOT / "k8s")


def test_root_sites_toml_is_the_file_kustomize_reads() -> None:
    root = REPO_ROOT / "sites.toml"
    assert root.is_symlink() and root.resolve() == (REPO_ROOT / "k8s" / "sites.toml").resolve()


def test_kustomization_is_everything_plus_a_configmap_of_sites_toml(
    rendered: list[Doc],
) -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in rendered)
    configmap = one(rendered, "ConfigMap")
    assert kinds == sorted(
        [
            ("Namespace", "reconciler"),
            ("ServiceAccount", "reconciler"),
            ("Role", "reconciler-lease"),
            ("RoleBinding", "reconciler-lease"),
            ("ValidatingAdmissionPolicy", "reconciler-image-only"),
            ("ValidatingAdmissionPolicyBinding", "reconciler-image-only"),
            ("ConfigMap", configmap["metadata"]["name"]),
            ("Service", "reconciler"),
            ("Deployment", "reconciler"),
            ("NetworkPolicy", "reconciler"),
        ]
    )
    labels = one(rendered, "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["pod-security.kubernetes.io/enforce-version"] == "latest"
    assert configmap["metadata"]["name"].startswith("reconciler-sites-")  # content hash
    assert configmap["data"] == {"sites.toml": (REPO_ROOT / "sites.toml").read_text()}
    volumes = one(rendered, "Deployment")["spec"]["template"]["spec"]["volumes"]
    sites = next(v for v in volumes if v["name"] == "sites")
    assert sites["configMap"]["name"] == configmap["metadata"]["name"]
    for doc in rendered:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "reconciler", doc["metadata"]
    # The image placeholder is replaced by the kustomization's `images:` entry.
    image = one(rendered, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image != "reconciler" and image.endswith("/reconciler:0.1.0")


def test_editing_sites_toml_gives_the_deployment_a_new_configmap_name(
    kubectl: str, tmp_path: Path
) -> None:
    copy = tmp_path / "k8s"
    shutil.copytree(REPO_ROOT / "k8s", copy)

    def configmap_names() -> tuple[str, str]:
        docs = kustomize(kubectl, copy)
        volumes = one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
        used = next(v for v in volumes if v["name"] == "sites")["configMap"]["name"]
        return one(docs, "ConfigMap")["metadata"]["name"], used

    before, used_before = configmap_names()
    with (copy / "sites.toml").open("a") as f:
        f.write('\n[sites.extra]\nrepo = "acme/extra"\n')
    after, used_after = configmap_names()
    assert (used_before, used_after) == (before, after)
    assert before != after


def test_deployment_is_hardened_and_wired_as_documented(rendered: list[Doc]) -> None:
    deployment = one(rendered, "Deployment", "reconciler")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 1
    assert pod["serviceAccountName"] == SA
    assert pod["automountServiceAccountToken"] is True
    assert pod["terminationGracePeriodSeconds"] == 60
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (container,) = pod["containers"]
    assert container["name"] == "reconciler"
    assert container["args"] == ["serve"]
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"memory": "512Mi"},
    }
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["runAsNonRoot"] is True

    env = {e["name"]: e for e in container["env"]}
    assert env["RECONCILER_CONFIG"]["value"] == "/etc/reconciler/sites.toml"
    assert env["PORT"]["value"] == "8080"
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    secrets = ("GITHUB_TOKEN", "RECONCILER_TRIGGER_TOKEN", "RECONCILER_READ_TOKEN")
    for key in (*secrets, "GITHUB_WEBHOOK_SECRET"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {
            "name": "reconciler-secrets",
            "key": key,
            "optional": True,
        }
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    key_dir = "/var/run/secrets/reconciler/github-app"
    assert mounts == {"/etc/reconciler": "sites", "/tmp": "tmp", key_dir: "github-app"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["tmp"]
    # The GitHub App key is a file from the Secret, never an environment variable.
    assert "GITHUB_APP_PRIVATE_KEY" not in env
    assert env["GITHUB_APP_PRIVATE_KEY_FILE"]["value"] == f"{key_dir}/private-key.pem"
    assert volumes["github-app"]["secret"] == {
        "secretName": "reconciler-secrets",
        "optional": True,
        "defaultMode": 0o440,
        "items": [{"key": "GITHUB_APP_PRIVATE_KEY", "path": "private-key.pem"}],
    }

    service = one(rendered, "Service", "reconciler")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    # Secrets are referenced, never rendered (their values are never in the repository).
    assert not [d for d in rendered if d["kind"] == "Secret"]


def test_rbac_grants_exactly_the_reconcilers_verbs(kubectl: str, rendered: list[Doc]) -> None:
    assert not [d for d in rendered if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    # Nothing on Deployments in the reconciler's own namespace: it could redeploy itself.
    roles = [d for d in rendered if d["kind"] == "Role"]
    assert [r["metadata"]["name"] for r in roles] == ["reconciler-lease"]
    lease = one(rendered, "Role", "reconciler-lease")
    assert _rules(lease) == LEASE_RULES
    for rule in lease["rules"]:
        if set(rule["verbs"]) & {"get", "update"}:
            assert rule["resourceNames"] == ["reconciler"]
    binding = one(rendered, "RoleBinding", "reconciler-lease")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "reconciler-lease",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": SA, "namespace": "reconciler"}
    ]
    site_role = kustomize(kubectl, REPO_ROOT / "k8s" / "rbac")
    assert _rules(one(site_role, "Role", "reconciler")) == SITE_RULES


def test_extra_namespace_overlay_grants_the_site_role_to_the_same_account(kubectl: str) -> None:
    docs = kustomize(kubectl, REPO_ROOT / "k8s" / "overlays" / "extra-namespace")
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == [
        ("Role", "reconciler"),
        ("RoleBinding", "reconciler"),
    ]
    role = one(docs, "Role")
    assert role["metadata"]["namespace"] == "web"
    assert _rules(role) == SITE_RULES
    binding = one(docs, "RoleBinding")
    assert binding["metadata"]["namespace"] == "web"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": SA, "namespace": "reconciler"}
    ]


def test_the_remote_identity_is_a_namespace_and_a_serviceaccount_and_nothing_more(
    kubectl: str,
) -> None:
    """k8s/remote (docs/clusters.md): no pod, no Lease, no rights of its own; the rights come
    from the extra-namespace overlay's Role and the admission policy, as at home."""
    docs = kustomize(kubectl, REPO_ROOT / "k8s" / "remote")
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == [
        ("Namespace", "reconciler"),
        ("ServiceAccount", SA),
    ]
    account = one(docs, "ServiceAccount")
    assert account["metadata"]["namespace"] == "reconciler"
    assert account["automountServiceAccountToken"] is False  # no pod uses it there
    labels = one(docs, "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_networkpolicy_is_on_and_admits_only_the_http_port_from_the_listed_clients(
    rendered: list[Doc],
) -> None:
    policy = one(rendered, "NetworkPolicy", "reconciler")
    assert policy["metadata"]["namespace"] == "reconciler"
    pod_labels = one(rendered, "Deployment")["spec"]["template"]["metadata"]["labels"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": "http"}]
    namespaces = [
        f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for f in rule["from"]
        if "namespaceSelector" in f
    ]
    assert namespaces == ["monitoring", "gmp-system", "ingress-nginx"]
    assert [f["ipBlock"]["cidr"] for f in rule["from"] if "ipBlock" in f] == [
        "35.191.0.0/16",
        "130.211.0.0/22",
    ]
    assert all(set(f) <= {"namespaceSelector", "ipBlock"} for f in rule["from"])


# --------------------------------------------------------------------------------------------
# On the real API server


def _event(namespace: str, deployment: str) -> Any:
    """A bare Event about a Deployment (what the reconciler records on an update)."""
    return k8s.CoreV1Event(
        metadata=k8s.V1ObjectMeta(name="x"),
        involved_object=k8s.V1ObjectReference(
            kind="Deployment", name=deployment, namespace=namespace
        ),
    )


def _status(call: Callable[[], object]) -> int:
    try:
        call()
    except ApiException as exc:
        return int(exc.status)
    return 200


def test_kustomization_applies_server_side_and_reapplies_without_a_diff(
    kubectl: str, control_plane: ControlPlane, kube_api_client: Any, installed: str, tmp_path: Path
) -> None:
    apps = k8s.AppsV1Api(kube_api_client)
    deployment: Any = apps.read_namespaced_deployment("reconciler", installed)
    assert deployment.spec.template.spec.service_account_name == SA
    configmap_name = next(
        v.config_map.name for v in deployment.spec.template.spec.volumes if v.name == "sites"
    )
    configmap: Any = k8s.CoreV1Api(kube_api_client).read_namespaced_config_map(
        configmap_name, installed
    )
    assert configmap.data["sites.toml"] == (REPO_ROOT / "sites.toml").read_text()
    binding: Any = k8s.RbacAuthorizationV1Api(kube_api_client).read_namespaced_role_binding(
        "reconciler-lease", installed
    )
    assert [(s.kind, s.name, s.namespace) for s in binding.subjects] == [
        ("ServiceAccount", SA, installed)
    ]
    # Re-applying the same render changes nothing.
    manifest = yaml.safe_dump_all(installed_docs(kubectl, tmp_path / "again", installed))
    proc = subprocess.run(
        [
            kubectl,
            *("--kubeconfig", str(control_plane.kubeconfig_path), "diff", "--server-side"),
            *(f"--field-manager={FIELD_MANAGER}", "-f", "-"),
        ],
        input=manifest,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_serviceaccount_can_do_what_the_reconciler_does(
    as_reconciler: Any, kube_api_client: Any, installed: str, site_namespace: str
) -> None:
    apps = k8s.AppsV1Api(as_reconciler)
    listed: Any = apps.list_namespaced_deployment(site_namespace)
    assert {d.metadata.name for d in listed.items} == {"blog"}
    blog: Any = apps.read_namespaced_deployment("blog", site_namespace)
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "ex/app:2"}]}}}}
    apps.patch_namespaced_deployment("blog", site_namespace, patch)
    after: Any = k8s.AppsV1Api(kube_api_client).read_namespaced_deployment("blog", site_namespace)
    assert after.spec.template.spec.containers[0].image == "ex/app:2"
    k8s.CoreV1Api(as_reconciler).list_namespaced_pod(site_namespace, label_selector="app=blog")
    apps.list_namespaced_replica_set(site_namespace)

    k8s.CoreV1Api(as_reconciler).create_namespaced_event(
        site_namespace,
        k8s.CoreV1Event(
            metadata=k8s.V1ObjectMeta(name=f"blog.{uuid.uuid4().hex[:16]}"),
            involved_object=k8s.V1ObjectReference(
                api_version="apps/v1",
                kind="Deployment",
                name="blog",
                namespace=site_namespace,
                uid=blog.metadata.uid,
            ),
            reason="ImageUpdated",
            message="container app: example/app:1 -> ex/app:2",
            type="Normal",
            source=k8s.V1EventSource(component="reconciler"),
            count=1,
        ),
    )

    coord = k8s.CoordinationV1Api(as_reconciler)
    assert _status(lambda: coord.read_namespaced_lease("reconciler", installed)) == 404
    coord.create_namespaced_lease(
        installed,
        k8s.V1Lease(
            metadata=k8s.V1ObjectMeta(name="reconciler"),
            spec=k8s.V1LeaseSpec(holder_identity="pod-a", lease_duration_seconds=60),
        ),
    )
    lease: Any = coord.read_namespaced_lease("reconciler", installed)
    lease.spec.holder_identity = "pod-b"
    coord.replace_namespaced_lease("reconciler", installed, lease)
    held: Any = coord.read_namespaced_lease("reconciler", installed)
    assert held.spec.holder_identity == "pod-b"


def test_serviceaccount_is_denied_everything_else(
    as_reconciler: Any, installed: str, other_namespace: str
) -> None:
    apps = k8s.AppsV1Api(as_reconciler)
    core = k8s.CoreV1Api(as_reconciler)
    coord = k8s.CoordinationV1Api(as_reconciler)
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "ex/app:3"}]}}}}
    lease = k8s.V1Lease(metadata=k8s.V1ObjectMeta(name="reconciler"))
    denied: dict[str, Callable[[], object]] = {
        "get secret": lambda: core.read_namespaced_secret("reconciler-secrets", installed),
        "list secrets": lambda: core.list_namespaced_secret(installed),
        # Its own namespace: no rights on Deployments, so it cannot redeploy itself.
        "patch itself": lambda: apps.patch_namespaced_deployment("reconciler", installed, patch),
        "get itself": lambda: apps.read_namespaced_deployment("reconciler", installed),
        "list deployments here": lambda: apps.list_namespaced_deployment(installed),
        "create event here": lambda: core.create_namespaced_event(
            installed, _event(installed, "reconciler")
        ),
        "patch deployment elsewhere": lambda: apps.patch_namespaced_deployment(
            "blog", other_namespace, patch
        ),
        "list deployments elsewhere": lambda: apps.list_namespaced_deployment(other_namespace),
        "list deployments cluster-wide": apps.list_deployment_for_all_namespaces,
        "list pods elsewhere": lambda: core.list_namespaced_pod(other_namespace),
        "delete pod": lambda: core.delete_namespaced_pod("blog-x", installed),
        "patch replicaset": lambda: apps.patch_namespaced_replica_set(
            "blog-x", installed, {"metadata": {"labels": {"x": "y"}}}
        ),
        "list nodes": core.list_node,
        "list namespaces": core.list_namespace,
        "create event elsewhere": lambda: core.create_namespaced_event(
            other_namespace, _event(other_namespace, "blog")
        ),
        "get another lease": lambda: coord.read_namespaced_lease("other", installed),
        "list leases": lambda: coord.list_namespaced_lease(installed),
        "delete lease": lambda: coord.delete_namespaced_lease("reconciler", installed),
        "create lease elsewhere": lambda: coord.create_namespaced_lease(other_namespace, lease),
        "patch configmap": lambda: core.patch_namespaced_config_map(
            "reconciler-sites", installed, {"data": {}}
        ),
    }
    statuses = {what: _status(call) for what, call in denied.items()}
    assert statuses == dict.fromkeys(denied, 403)


def test_extra_namespace_overlay_lets_the_reconciler_manage_sites_there(
    as_reconciler: Any, site_namespace: str
) -> None:
    namespace = site_namespace
    apps = k8s.AppsV1Api(as_reconciler)
    listed: Any = apps.list_namespaced_deployment(namespace)
    assert [d.metadata.name for d in listed.items] == ["blog"]
    body = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "ex/app:4"}]}}}}
    patched: Any = apps.patch_namespaced_deployment("blog", namespace, body)
    assert patched.spec.template.spec.containers[0].image == "ex/app:4"
    core = k8s.CoreV1Api(as_reconciler)
    assert _status(lambda: core.list_namespaced_secret(namespace)) == 403
    assert _status(lambda: apps.delete_namespaced_deployment("blog", namespace)) == 403
    new = simple_deployment("new")
    assert _status(lambda: apps.create_namespaced_deployment(namespace, new)) == 403
    replacement = simple_deployment("blog", "ex/app:3")
    assert (
        _status(lambda: apps.replace_namespaced_deployment("blog", namespace, replacement)) == 403
    )
    lease = k8s.V1Lease(metadata=k8s.V1ObjectMeta(name="reconciler"))
    coord = k8s.CoordinationV1Api(as_reconciler)
    assert _status(lambda: coord.create_namespaced_lease(namespace, lease)) == 403


def test_the_namespace_enforces_pod_security_restricted_and_the_pod_passes(
    kube_api_client: Any, rendered: list[Doc]
) -> None:
    namespace = one(rendered, "Namespace")
    name = f"t-psa-{uuid.uuid4().hex[:8]}"
    core = k8s.CoreV1Api(kube_api_client)
    labels = namespace["metadata"]["labels"]
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name, labels=labels)))
    template = one(rendered, "Deployment")["spec"]["template"]
    metadata = {"name": "reconciler", "labels": template["metadata"]["labels"]}
    pod: Any = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}
    core.create_namespaced_pod(name, pod, dry_run="All")  # admitted as shipped
    privileged: Any = json.loads(json.dumps(pod))
    privileged["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod(name, privileged, dry_run="All")
    message = json.loads(refused.value.body or "{}").get("message", "")
    assert refused.value.status == 403 and 'violates PodSecurity "restricted' in message


def test_the_uninstall_command_deletes_the_kustomization_in_k8s() -> None:
    guide = (REPO_ROOT / "docs" / "gke.md").read_text()
    uninstall = guide.split("## Uninstall", 1)[1]
    assert "kubectl delete -k k8s/" in uninstall
    assert "kubectl delete -k ." not in guide
