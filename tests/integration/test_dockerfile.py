"""The image is built only from pinned, hash-checked inputs (the Dockerfile is read, not built:
no image registry is reachable here)."""

from __future__ import annotations

import re

from testkit.controlplane import REPO_ROOT

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()


def _runs() -> list[str]:
    """Every RUN instruction, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [line[4:] for line in joined.splitlines() if line.startswith("RUN ")]


def test_build_tools_are_pinned_with_hashes() -> None:
    lock = (REPO_ROOT / "build-requirements.lock").read_text()
    pins = re.findall(
        r"^([a-z0-9_.-]+)==([^\s\\]+) \\\n((?:\s+--hash=sha256:[0-9a-f]{64}.*\n)+)", lock, re.M
    )
    assert {name for name, _, _ in pins} == {"pip", "setuptools", "wheel"}
    first = next(run for run in _runs() if "pip" in run)
    assert "pip install --require-hashes" in first and "-r build-requirements.lock" in first


def test_every_pip_step_is_hash_checked_offline_or_without_build_isolation() -> None:
    for run in _runs():
        if "pip" not in run:
            continue
        if " wheel " in run and "requirements.lock" in run:
            assert "--require-hashes" in run and "--only-binary=:all:" in run, run
        elif " wheel " in run:  # the reconciler's own wheel: built with the pinned tools
            assert "--no-build-isolation" in run and "--no-deps" in run, run
        elif "install" in run and "build-requirements.lock" not in run:
            assert "--no-index" in run, run


def test_the_base_image_is_one_argument_for_both_stages() -> None:
    froms = re.findall(r"^FROM (\S+)", DOCKERFILE, re.M)
    assert froms == ["${GO_IMAGE}", "${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]  # helm, builder, final
    (arg,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)", DOCKERFILE, re.M)
    # A digest, when one is written here, must be a real sha256 (never a placeholder).
    if "@" in arg:
        assert re.fullmatch(r"[^@]+@sha256:[0-9a-f]{64}", arg), arg


def test_every_file_the_dockerfile_copies_is_in_the_build_context() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copied = {
        src.rstrip("/").removeprefix("./")
        for line in re.findall(r"^COPY (?!--from)(.+)$", DOCKERFILE, re.M)
        for src in line.split()[:-1]
    }
    assert copied <= allowed, copied - allowed
