"""Where the Go-built binaries come from: env overrides, else the cached builds of tools/."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from testkit.controlplane.errors import ControlPlaneError, ControlPlaneUnavailable

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "tools" / "build-controlplane.sh"
CLUSTER_BUILD_SCRIPT = REPO_ROOT / "tools" / "build-cluster.sh"
HELM_BUILD_SCRIPT = REPO_ROOT / "tools" / "build-helm.sh"
_GO_MODULES = REPO_ROOT / "tools" / "controlplane"

CONTROLPLANE_BINARIES = ("kube-apiserver", "etcd")
CLUSTER_BINARIES = ("kube-controller-manager", "kube-scheduler", "kubectl", "kwok")


def has_binaries(d: Path, names: Sequence[str] = CONTROLPLANE_BINARIES) -> bool:
    return all(os.access(d / name, os.X_OK) for name in names)


def _mod_version(go_mod: Path, module: str) -> str:
    m = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", go_mod.read_text(), re.M)
    if not m:
        raise ControlPlaneError(f"{module} not required in {go_mod}")
    return m.group(1)


def pinned_versions() -> tuple[str, str]:
    """(kube-apiserver version, etcd version) pinned in tools/controlplane/*/go.mod."""
    return (
        _mod_version(_GO_MODULES / "kube-apiserver" / "go.mod", "k8s.io/kubernetes"),
        _mod_version(_GO_MODULES / "etcd" / "go.mod", "go.etcd.io/etcd/server/v3"),
    )


def _from_env(variable: str, names: Sequence[str]) -> Path | None:
    value = os.environ.get(variable)
    if not value:
        return None
    if not has_binaries(Path(value), names):
        raise ControlPlaneUnavailable(f"{variable}={value} has no executable {', '.join(names)}")
    return Path(value)


def _build(script: Path, names: Sequence[str], alternative: str) -> Path:
    """Run a tools/build-*.sh script (it reuses its cache even without Go) and return the dir
    it prints last. ``alternative``: how else to provide the binaries, for the error."""
    proc = subprocess.run(
        ["bash", str(script)],
        stdout=subprocess.PIPE,
        stderr=None,  # progress straight to our stderr
        stdin=subprocess.DEVNULL,
        check=False,
        text=True,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines and has_binaries(Path(lines[-1]), names):
        return Path(lines[-1])
    if shutil.which("go") is None:
        raise ControlPlaneUnavailable(
            f"{'/'.join(names)} are not available: 'go' is not on PATH to build them "
            f"(install Go >= 1.26, or {alternative})",
            go_missing=True,
        )
    raise ControlPlaneUnavailable(
        f"{script.relative_to(REPO_ROOT)} failed (exit {proc.returncode}); see its output on stderr"
    )


def find_binaries(*, build: bool = True) -> Path:
    """Directory holding ``kube-apiserver`` and ``etcd``.

    ``$RECONCILER_CONTROLPLANE_BIN``, else ``$KUBEBUILDER_ASSETS``, else (``build=True``) the
    output of tools/build-controlplane.sh (progress goes to this process's stderr).
    Raises ControlPlaneUnavailable.
    """
    explicit = _from_env("RECONCILER_CONTROLPLANE_BIN", CONTROLPLANE_BINARIES)
    if explicit is not None:
        return explicit
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets and has_binaries(Path(assets)):
        return Path(assets)
    if not build:
        raise ControlPlaneUnavailable("no control-plane binaries and building is disabled")
    return _build(
        BUILD_SCRIPT,
        CONTROLPLANE_BINARIES,
        "set KUBEBUILDER_ASSETS / RECONCILER_CONTROLPLANE_BIN to a dir holding "
        "kube-apiserver and etcd",
    )


def find_cluster_binaries(*, build: bool = True) -> Path:
    """Directory holding ``kube-controller-manager``, ``kube-scheduler``, ``kubectl`` and
    ``kwok``: ``$RECONCILER_CLUSTER_BIN``, else (``build=True``) the output of
    tools/build-cluster.sh. Raises ControlPlaneUnavailable."""
    explicit = _from_env("RECONCILER_CLUSTER_BIN", CLUSTER_BINARIES)
    if explicit is not None:
        return explicit
    if not build:
        raise ControlPlaneUnavailable("no cluster binaries and building is disabled")
    return _build(
        CLUSTER_BUILD_SCRIPT,
        CLUSTER_BINARIES,
        "set RECONCILER_CLUSTER_BIN to a dir holding " + ", ".join(CLUSTER_BINARIES),
    )


def find_helm(*, build: bool = True) -> Path:
    """The ``helm`` binary (any chart, any cluster): ``$RECONCILER_HELM`` (a path to it), else
    (``build=True``) the output of tools/build-helm.sh, which reuses its cache even without Go.
    Raises ControlPlaneUnavailable (``go_missing`` when it cannot be built here)."""
    explicit = os.environ.get("RECONCILER_HELM")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise ControlPlaneUnavailable(f"RECONCILER_HELM={explicit} is not executable")
        return Path(explicit)
    if not build:
        raise ControlPlaneUnavailable("no helm binary and building is disabled")
    proc = subprocess.run(
        ["bash", str(HELM_BUILD_SCRIPT)],
        stdout=subprocess.PIPE,
        stderr=None,  # progress straight to our stderr
        stdin=subprocess.DEVNULL,
        check=False,
        text=True,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines and os.access(lines[-1], os.X_OK):
        return Path(lines[-1])
    if shutil.which("go") is None:
        raise ControlPlaneUnavailable(
            "helm is not available: 'go' is not on PATH to build it "
            "(install Go >= 1.26, or set RECONCILER_HELM to a helm binary)",
            go_missing=True,
        )
    raise ControlPlaneUnavailable(
        f"{HELM_BUILD_SCRIPT.relative_to(REPO_ROOT)} failed (exit {proc.returncode}); "
        "see its output on stderr"
    )
