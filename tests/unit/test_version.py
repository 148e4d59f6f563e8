"""One version everywhere: semantic, in CHANGELOG.md, the chart's version and appVersion and the
kustomization's image tag; `reconciler --version` prints it and the commit it was built from."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from reconciler import __version__
from reconciler.cli.main import main
from reconciler.version import build_commit, version_line
from testkit.controlplane import REPO_ROOT

SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$"
)


def _head() -> str:
    return subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_the_version_is_semantic() -> None:
    assert SEMVER.match(__version__), __version__


def test_version_prints_the_version_and_the_commit_of_the_checkout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--version"], env={}) == 0
    out = capsys.readouterr().out.strip()
    match = re.fullmatch(r"reconciler (\S+) \(commit ([0-9a-f]{40})(-dirty)?\)", out)
    assert match, out
    assert match.group(1) == __version__
    assert match.group(2) == _head()


def test_a_stamped_commit_file_wins_over_git(tmp_path: Path) -> None:
    """What the image carries: the Dockerfile writes GIT_COMMIT into reconciler/COMMIT."""
    stamped = tmp_path / "COMMIT"
    stamped.write_text("3f2c" * 10 + "\n")
    assert version_line(stamped) == f"reconciler {__version__} (commit {'3f2c' * 10})"
    # An empty or malformed stamp (built without the argument) falls back to git.
    stamped.write_text("\n")
    assert build_commit(stamped) in (_head(), f"{_head()}-dirty")


def test_the_dockerfile_stamps_the_commit() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert 'ARG GIT_COMMIT=""' in dockerfile
    assert '"$GIT_COMMIT" > reconciler/COMMIT' in dockerfile
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert '"COMMIT"' in pyproject  # packaged with the wheel


def test_the_image_tag_follows_the_version() -> None:
    """(The chart's version and appVersion: tests/test_chart.py.)"""
    kustomization = yaml.safe_load((REPO_ROOT / "k8s" / "kustomization.yaml").read_text())
    (image,) = kustomization["images"]
    assert image["newTag"] == __version__


def test_the_changelog_has_a_section_per_version_newest_first() -> None:
    text = (REPO_ROOT / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## \[([^\]]+)\]", text, re.M)
    assert headings[0] == "Unreleased" or headings[0] == __version__, headings
    released = [h for h in headings if h != "Unreleased"]
    assert __version__ in released, f"CHANGELOG.md has no section for {__version__}"
    for version in released:
        assert SEMVER.match(version), version
    as_tuples = [tuple(int(p) for p in v.split("-")[0].split(".")) for v in released]
    assert as_tuples == sorted(as_tuples, reverse=True), "versions are not newest first"


def test_the_readme_states_the_stability_policy() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("## Versions and stability") :]
    section = section[: section.index("\n## ", 1)]
    for contract in ("sites.toml", "annotation", "metric", "HTTP routes", "exit codes"):
        assert contract in section, contract
    assert "CHANGELOG.md" in section and "Action required" in section
