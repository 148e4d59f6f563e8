"""pytest fixtures for the real control plane (testkit/controlplane/).

Load with ``pytest_plugins = ["testkit.controlplane_fixtures"]`` in the top-level
conftest (or ``-p testkit.controlplane_fixtures``).

- ``control_plane_binaries`` (session): the directory of the binaries, for code that starts
  its own control plane (the benchmark).
- ``control_plane`` (session): one etcd + kube-apiserver for the whole session. If the
  binaries cannot be had: under CI (``$CI`` set and not "false"/"0") the test fails; else,
  with no Go toolchain and no ``$KUBEBUILDER_ASSETS``, it is skipped.
- ``kube_api_client`` (session): admin ``kubernetes.client.ApiClient`` for it.
- ``k8s_namespace`` (function): a fresh, uniquely named namespace (deleted best-effort after;
  with no namespace controller it stays Terminating, which is harmless).

Every test using ``control_plane`` (directly or through the other fixtures) gets the
``controlplane`` marker, so ``-m "not controlplane"`` deselects them.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

from testkit.ci import unavailable
from testkit.controlplane import ControlPlane, ControlPlaneUnavailable, find_binaries


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "control_plane" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.controlplane)


@pytest.fixture(scope="session")
def control_plane_binaries() -> Path:
    """The directory of kube-apiserver and etcd (built from Go modules when missing)."""
    try:
        return find_binaries()
    except ControlPlaneUnavailable as e:
        error = e
    # outside the except: no chained traceback in the report
    if error.go_missing:
        unavailable(f"real kube-apiserver: {error}", "install Go >= 1.26 or set KUBEBUILDER_ASSETS")
    pytest.fail(f"control plane unavailable: {error}", pytrace=False)


@pytest.fixture(scope="session")
def control_plane(control_plane_binaries: Path) -> Iterator[ControlPlane]:
    with ControlPlane(bin_dir=control_plane_binaries) as cp:
        yield cp


@pytest.fixture(scope="session")
def kube_api_client(control_plane: ControlPlane) -> Iterator[kubernetes.client.ApiClient]:
    with control_plane.api_client() as api:
        yield api


@pytest.fixture
def k8s_namespace(
    kube_api_client: kubernetes.client.ApiClient, request: pytest.FixtureRequest
) -> Iterator[str]:
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{base}-{uuid.uuid4().hex[:6]}" if base else f"t-{uuid.uuid4().hex[:8]}"
    core = kubernetes.client.CoreV1Api(kube_api_client)
    core.create_namespace(
        kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=name))
    )
    try:
        yield name
    finally:
        # Best effort: the session's control plane may already be gone.
        with contextlib.suppress(Exception):
            core.delete_namespace(name, propagation_policy="Background")
