"""The pinned ``helm`` binary (tools/build-helm.sh; the ``helm`` fixture finds it) run as a
subprocess, with its own config, cache and data directories so it never reads or writes the
user's (~/.config/helm, repositories, plugins). Nothing here is specific to one chart.

    h = Helm(helm_path, home=tmp_path, kubeconfig=cluster.kubeconfig_path)
    docs = h.template("reconciler", chart_dir, "--namespace", "ns", "--set", "replicas=2")
    h.ok("install", "reconciler", chart_dir, "--namespace", "ns", "--wait")
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

Doc = dict[str, Any]


class HelmFailed(AssertionError):
    """helm exited non-zero; the message has the command line and its output."""

    def __init__(self, argv: list[str], proc: subprocess.CompletedProcess[str]) -> None:
        super().__init__(
            f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}{proc.stderr}"
        )
        self.returncode = proc.returncode
        self.stderr = proc.stderr


@dataclass(frozen=True)
class Helm:
    binary: Path
    home: Path  # its config, cache and data dirs live here
    kubeconfig: Path | None = None

    def run(self, *argv: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """helm with these arguments, whatever its exit code."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_DATA_HOME": str(self.home / "data"),
            "KUBECONFIG": str(self.kubeconfig or self.home / "no-kubeconfig"),
        }
        return subprocess.run(
            [str(self.binary), *map(str, argv)],
            capture_output=True,
            text=True,
            env=env,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )

    def ok(self, *argv: str | Path, timeout: float = 300) -> str:
        """helm's stdout; HelmFailed when it exits non-zero."""
        proc = self.run(*argv, timeout=timeout)
        if proc.returncode != 0:
            raise HelmFailed([str(self.binary), *map(str, argv)], proc)
        return proc.stdout

    def template(self, release: str, chart: Path, *argv: str | Path) -> list[Doc]:
        """`helm template` parsed: the rendered objects, empty documents dropped."""
        out = self.ok("template", release, chart, *argv)
        return [d for d in yaml.safe_load_all(out) if d]
