"""pytest fixtures for the real control plane and the local cluster (testkit/controlplane/).

Load with ``pytest_plugins = ["testkit.controlplane_fixtures"]`` in the top-level
conftest (or ``-p testkit.controlplane_fixtures``).

- ``control_plane`` (session): one etcd + kube-apiserver for the whole session. If the
  binaries cannot be had: under CI (``$CI`` set and not "false"/"0") the test fails; else,
  with no Go toolchain and no ``$KUBEBUILDER_ASSETS``, it is skipped.
- ``control_plane_binaries`` (session): just the binaries' directory, same rules.
- ``kube_api_client`` (session): admin ``kubernetes.client.ApiClient`` for it.
- ``k8s_namespace`` (function): a fresh, uniquely named namespace (deleted best-effort after;
  with no namespace controller it stays Terminating, which is harmless).
- ``local_cluster`` (session): a LocalCluster (its own API server, plus controllers, scheduler
  and kwok nodes: Deployments roll out; images with a marker crash-loop or fail to pull, see
  testkit/controlplane/cluster.py). Same CI/skip rules as ``control_plane``.
- ``cluster_api_client`` (session): admin ``kubernetes.client.ApiClient`` for it.
- ``helm`` (session): the path of the pinned ``helm`` binary (``find_helm``); CI fails without
  it, elsewhere the test is skipped saying how to get it.
- ``cluster_namespace`` (function): a fresh namespace in it, deleted after the test (the
  namespace controller runs there, so its Deployments, ReplicaSets and Pods go too).
- ``workload_cluster`` (module): a LocalCluster of three kwok nodes that also runs the
  statefulset, daemonset, job and cronjob controllers (WORKLOAD_CONTROLLERS); same CI/skip
  rules. ``workload_api_client`` (module) and ``workload_namespace`` (function) go with it.

Every test using ``control_plane`` (directly or through the other fixtures) gets the
``controlplane`` marker, and every test using ``local_cluster`` the ``cluster`` marker, so
``-m "not controlplane and not cluster"`` deselects them.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import kubernetes
import pytest

from testkit.ci import unavailable
from testkit.controlplane import (
    WORKLOAD_CONTROLLERS,
    ControlPlane,
    ControlPlaneUnavailable,
    LocalCluster,
    find_binaries,
    find_cluster_binaries,
    find_helm,
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "control_plane" in fixtures:
            item.add_marker(pytest.mark.controlplane)
        if "local_cluster" in fixtures or "workload_cluster" in fixtures:
            item.add_marker(pytest.mark.cluster)


def _binaries(find: Callable[[], Path], what: str, enable: str) -> Path:
    """``find()``, or fail (in CI, or when the build broke) / skip (no Go here) the test."""
    error: ControlPlaneUnavailable | None = None
    try:
        return find()
    except ControlPlaneUnavailable as e:
        error = e
    # Outside the except: no chained traceback in the report.
    if error.go_missing:
        unavailable(f"{what}: {error}", enable)
    pytest.fail(f"{what} unavailable: {error}", pytrace=False)


@pytest.fixture(scope="session")
def control_plane_binaries() -> Path:
    """The directory of kube-apiserver and etcd, for code that starts its own (the benchmark)."""
    return _binaries(find_binaries, "control plane", "install Go >= 1.26 or set KUBEBUILDER_ASSETS")


@pytest.fixture(scope="session")
def control_plane(control_plane_binaries: Path) -> Iterator[ControlPlane]:
    with ControlPlane(bin_dir=control_plane_binaries) as cp:
        yield cp


@pytest.fixture(scope="session")
def kube_api_client(control_plane: ControlPlane) -> Iterator[kubernetes.client.ApiClient]:
    with control_plane.api_client() as api:
        yield api


def _fresh_namespace(
    api: kubernetes.client.ApiClient, request: pytest.FixtureRequest
) -> Iterator[str]:
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{base}-{uuid.uuid4().hex[:6]}" if base else f"t-{uuid.uuid4().hex[:8]}"
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespace(
        kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=name))
    )
    try:
        yield name
    finally:
        # Best effort: the session's control plane may already be gone.
        with contextlib.suppress(Exception):
            core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture
def k8s_namespace(
    kube_api_client: kubernetes.client.ApiClient, request: pytest.FixtureRequest
) -> Iterator[str]:
    yield from _fresh_namespace(kube_api_client, request)


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[LocalCluster]:
    bin_dir = _binaries(find_binaries, "control plane", "install Go >= 1.26")
    cluster_bin_dir = _binaries(find_cluster_binaries, "local cluster", "install Go >= 1.26")
    with LocalCluster(bin_dir=bin_dir, cluster_bin_dir=cluster_bin_dir) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def cluster_api_client(local_cluster: LocalCluster) -> Iterator[kubernetes.client.ApiClient]:
    with local_cluster.api_client() as api:
        yield api


@pytest.fixture
def cluster_namespace(
    cluster_api_client: kubernetes.client.ApiClient, request: pytest.FixtureRequest
) -> Iterator[str]:
    yield from _fresh_namespace(cluster_api_client, request)


@pytest.fixture(scope="module")
def workload_cluster() -> Iterator[LocalCluster]:
    bin_dir = _binaries(find_binaries, "control plane", "install Go >= 1.26")
    cluster_bin_dir = _binaries(find_cluster_binaries, "local cluster", "install Go >= 1.26")
    with LocalCluster(
        bin_dir=bin_dir,
        cluster_bin_dir=cluster_bin_dir,
        nodes=3,
        controllers=WORKLOAD_CONTROLLERS,
    ) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def workload_api_client(workload_cluster: LocalCluster) -> Iterator[kubernetes.client.ApiClient]:
    with workload_cluster.api_client() as api:
        yield api


@pytest.fixture
def workload_namespace(
    workload_api_client: kubernetes.client.ApiClient, request: pytest.FixtureRequest
) -> Iterator[str]:
    yield from _fresh_namespace(workload_api_client, request)


@pytest.fixture(scope="session")
def helm() -> Path:
    """The pinned helm binary (tools/build-helm.sh, or $RECONCILER_HELM)."""
    return _binaries(
        find_helm, "helm", "install Go >= 1.26 or set RECONCILER_HELM to a helm binary"
    )
