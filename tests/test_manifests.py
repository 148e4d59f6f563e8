"""The manifests render as documented and, on a real API server, grant exactly what is needed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml  # type: ignore[import-untyped]
from kubernetes.client import ApiException

from testkit.controlplane import (
    REPO_ROOT,
    ControlPlane,
    api_client_from_kubeconfig,
    kubeconfig_for_token,
    serviceaccount_token,
)

k8s = kubernetes.client

SA = "reconciler"
FIELD_MANAGER = "reconciler-tests"
# (API group, resource, verb) the reconciler may use, per Role.
SITE_RULES = {
    ("apps", "deployments", "get"),
    ("apps", "deployments", "list"),
    ("apps", "deployments", "patch"),
    ("", "events", "create"),
    ("", "pods", "get"),
    ("", "pods", "list"),
    ("", "pods", "watch"),
    ("apps", "replicasets", "get"),
    ("apps", "replicasets", "list"),
    ("apps", "replicasets", "watch"),
}
LEASE_RULES = {
    ("coordination.k8s.io", "leases", "create"),
    ("coordination.k8s.io", "leases", "get"),
    ("coordination.k8s.io", "leases", "update"),
}

Doc = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Rendering


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        if _in_ci():
            pytest.fail("kubectl (with kustomize) is required in CI", pytrace=False)
        pytest.skip("kubectl (with kustomize) is not installed")
    return path


def _run(argv: list[str], stdin: str | None = None) -> str:
    proc = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, check=False, timeout=120
    )
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr}", pytrace=False)
    return proc.stdout


def _kustomize(kubectl: str, directory: Path) -> list[Doc]:
    out = _run([kubectl, "kustomize", str(directory)])
    return [d for d in yaml.safe_load_all(out) if d]


def _overlay(
    directory: Path, body: dict[str, Any], resources: list[Path], components: tuple[Path, ...] = ()
) -> Path:
    """A kustomization in `directory` building on `resources` and `components` (kustomize
    takes only relative paths to them)."""
    directory.mkdir(parents=True, exist_ok=True)
    body = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(r, directory) for r in resources],
        **(
            {"components": [os.path.relpath(c, directory) for c in components]}
            if components
            else {}
        ),
        **body,
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    return directory


def _into_namespace(tmp: Path, namespace: str, source: Path = REPO_ROOT / "k8s") -> Path:
    """A kustomization (default: the deploy one, k8s/) moved to `namespace`,
    RoleBinding subjects included."""
    transformer = {
        "apiVersion": "builtin",
        "kind": "NamespaceTransformer",
        "metadata": {"name": "test-namespace", "namespace": namespace},
        "setRoleBindingSubjects": "allServiceAccounts",
    }
    return _overlay(tmp, {"transformers": [yaml.safe_dump(transformer)]}, [source])


def _one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


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
    return _kustomize(kubectl, REPO_ROOT / "k8s")


def test_root_sites_toml_is_the_file_kustomize_reads() -> None:
    root = REPO_ROOT / "sites.toml"
    assert root.is_symlink() and root.resolve() == (REPO_ROOT / "k8s" / "sites.toml").resolve()


def test_kustomization_is_everything_plus_a_configmap_of_sites_toml(
    rendered: list[Doc],
) -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in rendered)
    configmap = _one(rendered, "ConfigMap")
    assert kinds == sorted(
        [
            ("Namespace", "reconciler"),
            ("ServiceAccount", "reconciler"),
            ("Role", "reconciler"),
            ("Role", "reconciler-lease"),
            ("RoleBinding", "reconciler"),
            ("RoleBinding", "reconciler-lease"),
            ("ConfigMap", configmap["metadata"]["name"]),
            ("Service", "reconciler"),
            ("Deployment", "reconciler"),
        ]
    )
    assert configmap["metadata"]["name"].startswith("reconciler-sites-")  # content hash
    assert configmap["data"] == {"sites.toml": (REPO_ROOT / "sites.toml").read_text()}
    volumes = _one(rendered, "Deployment")["spec"]["template"]["spec"]["volumes"]
    sites = next(v for v in volumes if v["name"] == "sites")
    assert sites["configMap"]["name"] == configmap["metadata"]["name"]
    for doc in rendered:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "reconciler", doc["metadata"]
    # The image placeholder is replaced by the kustomization's `images:` entry.
    image = _one(rendered, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image != "reconciler" and image.endswith("/reconciler:0.1.0")


def test_editing_sites_toml_gives_the_deployment_a_new_configmap_name(
    kubectl: str, tmp_path: Path
) -> None:
    copy = tmp_path / "k8s"
    shutil.copytree(REPO_ROOT / "k8s", copy)

    def configmap_names() -> tuple[str, str]:
        docs = _kustomize(kubectl, copy)
        volumes = _one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
        used = next(v for v in volumes if v["name"] == "sites")["configMap"]["name"]
        return _one(docs, "ConfigMap")["metadata"]["name"], used

    before, used_before = configmap_names()
    with (copy / "sites.toml").open("a") as f:
        f.write('\n[sites.extra]\nrepo = "acme/extra"\n')
    after, used_after = configmap_names()
    assert (used_before, used_after) == (before, after)
    assert before != after


def test_deployment_is_hardened_and_wired_as_documented(rendered: list[Doc]) -> None:
    deployment = _one(rendered, "Deployment", "reconciler")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 1
    assert pod["serviceAccountName"] == SA
    assert pod["automountServiceAccountToken"] is True
    assert pod["terminationGracePeriodSeconds"] == 60
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
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
    for key in ("GITHUB_TOKEN", "RECONCILER_TRIGGER_TOKEN", "GITHUB_WEBHOOK_SECRET"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {
            "name": "reconciler-secrets",
            "key": key,
            "optional": True,
        }
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts == {"/etc/reconciler": "sites", "/tmp": "tmp"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["tmp"]

    service = _one(rendered, "Service", "reconciler")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    # Secrets are referenced, never rendered (their values are never in the repository).
    assert not [d for d in rendered if d["kind"] == "Secret"]


def test_rbac_grants_exactly_the_reconcilers_verbs(rendered: list[Doc]) -> None:
    assert not [d for d in rendered if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    assert _rules(_one(rendered, "Role", "reconciler")) == SITE_RULES
    lease = _one(rendered, "Role", "reconciler-lease")
    assert _rules(lease) == LEASE_RULES
    for rule in lease["rules"]:
        if set(rule["verbs"]) & {"get", "update"}:
            assert rule["resourceNames"] == ["reconciler"]
    for name in ("reconciler", "reconciler-lease"):
        binding = _one(rendered, "RoleBinding", name)
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": name,
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": SA, "namespace": "reconciler"}
        ]


def test_extra_namespace_overlay_grants_the_same_role_to_the_same_account(
    kubectl: str, rendered: list[Doc]
) -> None:
    docs = _kustomize(kubectl, REPO_ROOT / "k8s" / "overlays" / "extra-namespace")
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == [
        ("Role", "reconciler"),
        ("RoleBinding", "reconciler"),
    ]
    role = _one(docs, "Role")
    assert role["metadata"]["namespace"] == "web"
    assert role["rules"] == _one(rendered, "Role", "reconciler")["rules"]
    binding = _one(docs, "RoleBinding")
    assert binding["metadata"]["namespace"] == "web"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": SA, "namespace": "reconciler"}
    ]


def test_networkpolicy_component_admits_only_the_http_port(kubectl: str, tmp_path: Path) -> None:
    component = REPO_ROOT / "k8s" / "components" / "networkpolicy"
    overlay = _overlay(tmp_path / "with-netpol", {}, [REPO_ROOT / "k8s"], (component,))
    docs = _kustomize(kubectl, overlay)
    policy = _one(docs, "NetworkPolicy", "reconciler")
    assert policy["metadata"]["namespace"] == "reconciler"
    pod_labels = _one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": "http"}]}]


# --------------------------------------------------------------------------------------------
# On the real API server


def _deployment(name: str, image: str = "example/app:1") -> Any:
    labels = {"app": name}
    return k8s.V1Deployment(
        metadata=k8s.V1ObjectMeta(name=name),
        spec=k8s.V1DeploymentSpec(
            replicas=1,
            selector=k8s.V1LabelSelector(match_labels=labels),
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels=labels),
                spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="app", image=image)]),
            ),
        ),
    )


def _status(call: Callable[[], object]) -> int:
    try:
        call()
    except ApiException as exc:
        return int(exc.status)
    return 200


def _apply(kubectl: str, cp: ControlPlane, docs: list[Doc]) -> None:
    manifest = yaml.safe_dump_all(docs, sort_keys=False)
    argv = [kubectl, "--kubeconfig", str(cp.kubeconfig_path), "apply", "--server-side"]
    _run([*argv, f"--field-manager={FIELD_MANAGER}", "-f", "-"], manifest)


@pytest.fixture
def other_namespace(kube_api_client: Any) -> Iterator[str]:
    """A namespace the reconciler was not granted anything in, holding Deployment `blog`."""
    name = f"t-other-{uuid.uuid4().hex[:8]}"
    core = k8s.CoreV1Api(kube_api_client)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    k8s.AppsV1Api(kube_api_client).create_namespaced_deployment(name, _deployment("blog"))
    try:
        yield name
    finally:
        # best effort: the session's control plane may already be gone
        with contextlib.suppress(Exception):
            core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture
def installed(
    kubectl: str,
    control_plane: ControlPlane,
    kube_api_client: Any,
    k8s_namespace: str,
    tmp_path: Path,
) -> str:
    """The deploy kustomization applied (server-side) into a fresh namespace, plus a site's
    Deployment `blog` and the Secret the pod reads; returns the namespace."""
    docs = _kustomize(kubectl, _into_namespace(tmp_path / "install", k8s_namespace))
    # The test namespace exists already; the base's Namespace object is checked above.
    _apply(kubectl, control_plane, [d for d in docs if d["kind"] != "Namespace"])
    k8s.AppsV1Api(kube_api_client).create_namespaced_deployment(k8s_namespace, _deployment("blog"))
    k8s.CoreV1Api(kube_api_client).create_namespaced_secret(
        k8s_namespace,
        k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name="reconciler-secrets"),
            string_data={"GITHUB_TOKEN": "ghp_not-a-real-token"},
        ),
    )
    return k8s_namespace


@pytest.fixture
def reconciler_sa_kubeconfig(control_plane: ControlPlane, installed: str, tmp_path: Path) -> Path:
    """A kubeconfig acting as the installed reconciler's ServiceAccount (a real TokenRequest
    token), defaulting to its namespace. Also the hook for an end-to-end `reconciler sync`
    run as that account."""
    token = serviceaccount_token(control_plane, installed, SA)
    return kubeconfig_for_token(
        control_plane, token, tmp_path / "reconciler-sa.kubeconfig", namespace=installed
    )


@pytest.fixture
def as_reconciler(reconciler_sa_kubeconfig: Path) -> Iterator[Any]:
    with api_client_from_kubeconfig(reconciler_sa_kubeconfig) as api:
        yield api


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
        "reconciler", installed
    )
    assert [(s.kind, s.name, s.namespace) for s in binding.subjects] == [
        ("ServiceAccount", SA, installed)
    ]
    # Re-applying the same render changes nothing.
    docs = _kustomize(kubectl, _into_namespace(tmp_path / "again", installed))
    manifest = yaml.safe_dump_all([d for d in docs if d["kind"] != "Namespace"])
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
    as_reconciler: Any, kube_api_client: Any, installed: str
) -> None:
    apps = k8s.AppsV1Api(as_reconciler)
    listed: Any = apps.list_namespaced_deployment(installed)
    names = {d.metadata.name for d in listed.items}
    assert names == {"blog", "reconciler"}
    blog: Any = apps.read_namespaced_deployment("blog", installed)
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "ex/app:2"}]}}}}
    apps.patch_namespaced_deployment("blog", installed, patch)
    after: Any = k8s.AppsV1Api(kube_api_client).read_namespaced_deployment("blog", installed)
    assert after.spec.template.spec.containers[0].image == "ex/app:2"
    k8s.CoreV1Api(as_reconciler).list_namespaced_pod(installed, label_selector="app=blog")
    apps.list_namespaced_replica_set(installed)

    k8s.CoreV1Api(as_reconciler).create_namespaced_event(
        installed,
        k8s.CoreV1Event(
            metadata=k8s.V1ObjectMeta(name=f"blog.{uuid.uuid4().hex[:16]}"),
            involved_object=k8s.V1ObjectReference(
                api_version="apps/v1",
                kind="Deployment",
                name="blog",
                namespace=installed,
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
        "delete deployment": lambda: apps.delete_namespaced_deployment("blog", installed),
        "create deployment": lambda: apps.create_namespaced_deployment(
            installed, _deployment("new")
        ),
        "update deployment": lambda: apps.replace_namespaced_deployment(
            "blog", installed, _deployment("blog", "ex/app:3")
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
            other_namespace,
            k8s.CoreV1Event(
                metadata=k8s.V1ObjectMeta(name="x"),
                involved_object=k8s.V1ObjectReference(
                    kind="Deployment", name="blog", namespace=other_namespace
                ),
            ),
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


@pytest.fixture
def extra_namespace_granted(
    kubectl: str, control_plane: ControlPlane, installed: str, other_namespace: str, tmp_path: Path
) -> str:
    """k8s/overlays/extra-namespace applied for `other_namespace`, its subject pointed at the
    installed reconciler's namespace (as a user's copy of the overlay would be)."""
    patch = [{"op": "replace", "path": "/subjects/0/namespace", "value": installed}]
    overlay = _overlay(
        tmp_path / "extra",
        {
            "namespace": other_namespace,
            "patches": [
                {
                    "target": {"kind": "RoleBinding", "name": "reconciler"},
                    "patch": json.dumps(patch),
                }
            ],
        },
        [REPO_ROOT / "k8s" / "overlays" / "extra-namespace"],
    )
    _apply(kubectl, control_plane, _kustomize(kubectl, overlay))
    return other_namespace


def test_extra_namespace_overlay_lets_the_reconciler_manage_sites_there(
    as_reconciler: Any, extra_namespace_granted: str
) -> None:
    namespace = extra_namespace_granted
    apps = k8s.AppsV1Api(as_reconciler)
    listed: Any = apps.list_namespaced_deployment(namespace)
    assert [d.metadata.name for d in listed.items] == ["blog"]
    body = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "ex/app:4"}]}}}}
    patched: Any = apps.patch_namespaced_deployment("blog", namespace, body)
    assert patched.spec.template.spec.containers[0].image == "ex/app:4"
    core = k8s.CoreV1Api(as_reconciler)
    assert _status(lambda: core.list_namespaced_secret(namespace)) == 403
    assert _status(lambda: apps.delete_namespaced_deployment("blog", namespace)) == 403
    lease = k8s.V1Lease(metadata=k8s.V1ObjectMeta(name="reconciler"))
    coord = k8s.CoordinationV1Api(as_reconciler)
    assert _status(lambda: coord.create_namespaced_lease(namespace, lease)) == 403
