"""The image's helm is built like the tests' (tools/build-helm.sh) and checksum-pinned (the
Dockerfile is read, not built: no image registry is reachable here)."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from testkit.controlplane import REPO_ROOT

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()
BUILD_SCRIPT = (REPO_ROOT / "tools" / "build-helm.sh").read_text()


def _stage(name: str) -> str:
    """The text of one build stage, continuation lines joined."""
    joined = re.sub(r"\s*\\\n\s*", " ", DOCKERFILE)
    m = re.search(rf"^FROM \S+ AS {name}\n(.*?)(?=^FROM |\Z)", joined, re.M | re.S)
    assert m, f"no stage {name}"
    return m.group(1)


def _arg(name: str) -> str:
    (value,) = re.findall(rf"^ARG {name}=(\S+)", DOCKERFILE, re.M)
    return str(value)


def test_helm_is_built_from_the_pinned_wrapper_module_only() -> None:
    stage = _stage("helm")
    copied = re.findall(r"^COPY (?!--from)(.+)$", stage, re.M)
    assert copied == ["tools/helm/go.mod tools/helm/go.sum tools/helm/main.go ./"]
    assert "go mod download && go mod verify" in stage  # every module against go.sum
    go_mod = (REPO_ROOT / "tools" / "helm" / "go.mod").read_text()
    assert re.search(rf"^\s*helm\.sh/helm/v4 {re.escape(_arg('HELM_VERSION'))}$", go_mod, re.M)


def test_helm_is_built_with_the_flags_of_tools_build_helm() -> None:
    stage = _stage("helm")
    (script_ldflags,) = re.findall(r'^ldflags="(.+)"$', BUILD_SCRIPT, re.M)
    (script_vpkg,) = re.findall(r"^vpkg=(\S+)$", BUILD_SCRIPT, re.M)
    expected = script_ldflags.replace("$version", "${HELM_VERSION}")
    assert f'vpkg={script_vpkg} && go build -ldflags "{expected}" -o /out/helm .' in stage
    for setting in ("CGO_ENABLED=0", "GOTOOLCHAIN=local"):
        assert setting in stage
    # gobuild.sh's GOFLAGS, but -p (parallelism, which does not change the bytes)
    assert 'GOFLAGS="-trimpath -mod=readonly -buildvcs=false"' in stage


def test_the_built_helm_must_have_the_pinned_checksum() -> None:
    stage = _stage("helm")
    assert re.fullmatch(r"[0-9a-f]{64}", _arg("HELM_SHA256"))
    assert 'echo "${HELM_SHA256}  /out/helm" | sha256sum -c -' in stage
    assert "COPY --from=helm /out/helm /usr/local/bin/helm" in _stage_final()
    go_image = _arg("GO_IMAGE")
    assert re.fullmatch(r"golang:1\.\d+\.\d+-\w+(@sha256:[0-9a-f]{64})?", go_image), go_image


def _stage_final() -> str:
    return DOCKERFILE[DOCKERFILE.rindex("\nFROM ") :]


def test_the_pinned_checksum_is_that_of_the_reproducible_build(helm: Path) -> None:
    """tools/build-helm.sh's binary, built with the Dockerfile's Go release for linux/amd64,
    has exactly the pinned SHA-256 (Go builds with -trimpath and no cgo are reproducible)."""
    info = subprocess.run(
        [str(helm), "version", "--template", "{{.GoVersion}} {{.Version}}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    go_version = "go" + _arg("GO_IMAGE").split(":")[1].split("-")[0]
    if info[0] != go_version:
        pytest.skip(f"the cached helm was built with {info[0]}, the Dockerfile uses {go_version}")
    assert info[1] == _arg("HELM_VERSION")
    assert hashlib.sha256(helm.read_bytes()).hexdigest() == _arg("HELM_SHA256")
