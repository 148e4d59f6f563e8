"""The shipped k8s/ manifests rendered with kustomize and installed on the real API server.

Fixtures (load with ``pytest_plugins``): ``kubectl``; ``installed`` (the deploy kustomization
applied into a fresh namespace, its admission policy scoped to that namespace's ServiceAccount);
``site_namespace`` (a namespace holding Deployment ``blog``, granted to the reconciler with
k8s/overlays/extra-namespace); ``as_reconciler`` (an ApiClient with the ServiceAccount's own
TokenRequest token).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml  # type: ignore[import-untyped]

from testkit.ci import unavailable
from testkit.controlplane import (
    REPO_ROOT,
    ControlPlane,
    ControlPlaneUnavailable,
    api_client_from_kubeconfig,
    find_cluster_binaries,
    kubeconfig_for_token,
    serviceaccount_token,
)

SA = "reconciler"
FIELD_MANAGER = "reconciler-tests"
POLICY = "reconciler-image-only"
SHIPPED_USERNAME = "system:serviceaccount:reconciler:reconciler"

Doc = dict[str, Any]
k8s = kubernetes.client


@pytest.fixture(scope="session")
def kubectl() -> str:
    """kubectl (kustomize built in): on PATH, else the one tools/build-cluster.sh builds."""
    path = shutil.which("kubectl")
    if path is not None:
        return path
    try:
        return str(find_cluster_binaries() / "kubectl")
    except ControlPlaneUnavailable as e:
        unavailable(f"kubectl: {e}", "install Go >= 1.26 (tools/build-cluster.sh builds it)")


def run(argv: list[str], stdin: str | None = None) -> str:
    proc = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, check=False, timeout=120
    )
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr}", pytrace=False)
    return proc.stdout


def kustomize(kubectl: str, directory: Path) -> list[Doc]:
    out = run([kubectl, "kustomize", str(directory)])
    return [d for d in yaml.safe_load_all(out) if d]


def overlay(
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


def into_namespace(tmp: Path, namespace: str, source: Path = REPO_ROOT / "k8s") -> Path:
    """A kustomization (default: the deploy one, k8s/) moved to `namespace`,
    RoleBinding subjects included."""
    transformer = {
        "apiVersion": "builtin",
        "kind": "NamespaceTransformer",
        "metadata": {"name": "test-namespace", "namespace": namespace},
        "setRoleBindingSubjects": "allServiceAccounts",
    }
    return overlay(tmp, {"transformers": [yaml.safe_dump(transformer)]}, [source])


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def policy_for(docs: list[Doc], namespace: str) -> list[Doc]:
    """The rendered docs with the (cluster-scoped) admission policy and binding named after
    `namespace` and matching that namespace's reconciler ServiceAccount, as a user moving the
    reconciler would edit them; tests sharing one API server then do not overwrite each other."""
    out = []
    username = f"system:serviceaccount:{namespace}:{SA}"
    for doc in docs:
        if not doc["kind"].startswith("ValidatingAdmissionPolicy"):
            out.append(doc)
            continue
        scoped = json.loads(json.dumps(doc).replace(SHIPPED_USERNAME, username))
        scoped["metadata"]["name"] = f"{POLICY}-{namespace}"
        scoped["metadata"].pop("namespace", None)
        if scoped["kind"].endswith("Binding"):
            scoped["spec"]["policyName"] = f"{POLICY}-{namespace}"
        out.append(scoped)
    return out


def apply(kubectl: str, cp: ControlPlane, docs: list[Doc]) -> None:
    manifest = yaml.safe_dump_all(docs, sort_keys=False)
    argv = [kubectl, "--kubeconfig", str(cp.kubeconfig_path), "apply", "--server-side"]
    run([*argv, f"--field-manager={FIELD_MANAGER}", "-f", "-"], manifest)


def simple_deployment(name: str, image: str = "example/app:1") -> Any:
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


def installed_docs(kubectl: str, tmp: Path, namespace: str) -> list[Doc]:
    """The deploy kustomization rendered for `namespace`, without the Namespace object."""
    docs = kustomize(kubectl, into_namespace(tmp, namespace))
    return policy_for([d for d in docs if d["kind"] != "Namespace"], namespace)


@pytest.fixture
def installed(
    kubectl: str,
    control_plane: ControlPlane,
    kube_api_client: Any,
    k8s_namespace: str,
    tmp_path: Path,
) -> Iterator[str]:
    """The deploy kustomization applied (server-side) into a fresh namespace, plus the Secret
    the pod reads; returns the namespace. The admission policy is removed afterwards."""
    # The test namespace exists already; the base's Namespace object is checked separately.
    apply(kubectl, control_plane, installed_docs(kubectl, tmp_path / "install", k8s_namespace))
    k8s.CoreV1Api(kube_api_client).create_namespaced_secret(
        k8s_namespace,
        k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name="reconciler-secrets"),
            string_data={"GITHUB_TOKEN": "ghp_not-a-real-token"},
        ),
    )
    try:
        yield k8s_namespace
    finally:
        admission = k8s.AdmissionregistrationV1Api(kube_api_client)
        with contextlib.suppress(Exception):
            admission.delete_validating_admission_policy_binding(f"{POLICY}-{k8s_namespace}")
        with contextlib.suppress(Exception):
            admission.delete_validating_admission_policy(f"{POLICY}-{k8s_namespace}")


@pytest.fixture
def other_namespace(kube_api_client: Any) -> Iterator[str]:
    """A namespace the reconciler was not granted anything in, holding Deployment `blog`."""
    name = f"t-other-{uuid.uuid4().hex[:8]}"
    core = k8s.CoreV1Api(kube_api_client)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    k8s.AppsV1Api(kube_api_client).create_namespaced_deployment(name, simple_deployment("blog"))
    try:
        yield name
    finally:
        # best effort: the session's control plane may already be gone
        with contextlib.suppress(Exception):
            core.delete_namespace(name, propagation_policy="Background")


def grant_namespace(kubectl: str, cp: ControlPlane, tmp: Path, installed: str, target: str) -> str:
    """k8s/overlays/extra-namespace applied for `target`, its subject pointed at the installed
    reconciler's namespace (as a user's copy of the overlay would be)."""
    patch = [{"op": "replace", "path": "/subjects/0/namespace", "value": installed}]
    directory = overlay(
        tmp,
        {
            "namespace": target,
            "patches": [
                {
                    "target": {"kind": "RoleBinding", "name": "reconciler"},
                    "patch": json.dumps(patch),
                }
            ],
        },
        [REPO_ROOT / "k8s" / "overlays" / "extra-namespace"],
    )
    apply(kubectl, cp, kustomize(kubectl, directory))
    return target


@pytest.fixture
def site_namespace(
    kubectl: str, control_plane: ControlPlane, installed: str, other_namespace: str, tmp_path: Path
) -> str:
    """A namespace where sites live (Deployment `blog`), granted with the extra-namespace
    overlay."""
    return grant_namespace(kubectl, control_plane, tmp_path / "extra", installed, other_namespace)


@pytest.fixture
def reconciler_sa_kubeconfig(control_plane: ControlPlane, installed: str, tmp_path: Path) -> Path:
    """A kubeconfig acting as the installed reconciler's ServiceAccount (a real TokenRequest
    token), defaulting to its namespace."""
    token = serviceaccount_token(control_plane, installed, SA)
    return kubeconfig_for_token(
        control_plane, token, tmp_path / "reconciler-sa.kubeconfig", namespace=installed
    )


@pytest.fixture
def as_reconciler(reconciler_sa_kubeconfig: Path) -> Iterator[Any]:
    with api_client_from_kubeconfig(reconciler_sa_kubeconfig) as api:
        yield api
