"""The local cluster's binaries: the cached build, or a build showing progress and an estimate."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from testkit.controlplane.binaries import (
    BUILD_SCRIPT,
    CLUSTER_BINARIES,
    CLUSTER_BUILD_SCRIPT,
    CONTROLPLANE_BINARIES,
    find_binaries,
    find_cluster_binaries,
    has_binaries,
)
from testkit.controlplane.errors import ControlPlaneUnavailable
from testkit.processes import die_with_parent

# Cold build wall times (s) measured on a 2-core machine by tools/build-*.sh ("built X in Ns"),
# Go module cache empty; the cluster build reuses the modules and packages of the control plane's
# (built just before it). With the cores shared by other work it took several times longer:
# kube-scheduler alone 1,781 s with an empty build cache during other sessions' test runs.
MEASURED_SECONDS = {
    "etcd": 48,
    "kube-apiserver": 265,
    "kube-scheduler": 192,
    "kube-controller-manager": 217,
    "kubectl": 44,
    "kwok": 358,
}
COLD_TOTAL = sum(MEASURED_SECONDS.values())
TICK = 20.0  # seconds between "still building" lines


class BuildFailed(Exception):
    """A build script failed; its output was shown."""


def minutes(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


class _Progress:
    """Follows a build script's stderr: shows its lines, and every TICK seconds where it is."""

    def __init__(self, done_before: float) -> None:
        self.done_before = done_before  # estimated seconds of the builds finished earlier
        self.current = ""
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.announced = False

    def line(self, text: str) -> None:
        if text.startswith("go: downloading"):
            return  # hundreds of them: the ticker says it is working
        for name in MEASURED_SECONDS:
            if f": building {name} (" in text:  # tools/gobuild.sh's "TAG: building NAME (v…"
                if not self.announced:
                    announce_cold_build(COLD_TOTAL - self.done_before)
                    self.announced = True
                with self.lock:
                    if self.current:
                        self.done_before += MEASURED_SECONDS[self.current]
                    self.current, self.started = name, time.monotonic()
        print("  " + text, file=sys.stderr, flush=True)

    def tick(self) -> None:
        with self.lock:
            if not self.current:
                return
            took = time.monotonic() - self.started
            expected = MEASURED_SECONDS[self.current]
            overall = self.done_before + min(took, expected)
        print(
            f"  ... building {self.current}: {minutes(took)} (measured cold: ~{minutes(expected)});"
            f" about {minutes(overall)} of ~{minutes(COLD_TOTAL)} in all",
            file=sys.stderr,
            flush=True,
        )


def _run_script(script: Path, progress: _Progress) -> Path:
    proc = subprocess.Popen(
        ["bash", str(script)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # Ctrl-C reaches us; we stop the build's whole group
        preexec_fn=functools.partial(die_with_parent, os.getpid()),  # noqa: PLW1509
    )
    stdout, stderr = proc.stdout, proc.stderr
    assert stdout is not None and stderr is not None

    def follow() -> None:
        for text in stderr:
            progress.line(text.rstrip("\n"))

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    try:
        while True:
            try:
                proc.wait(TICK)
                break
            except subprocess.TimeoutExpired:
                progress.tick()
    except BaseException:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
        raise
    reader.join()
    lines = stdout.read().strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise BuildFailed(f"{script.name} failed (exit {proc.returncode}): see its output above")
    return Path(lines[-1])


def ensure_binaries() -> tuple[Path, Path]:
    """(control-plane dir, cluster dir): env overrides or the cache, else built here."""
    dirs: list[Path] = []
    for find, script, names in (
        (find_binaries, BUILD_SCRIPT, CONTROLPLANE_BINARIES),
        (find_cluster_binaries, CLUSTER_BUILD_SCRIPT, CLUSTER_BINARIES),
    ):
        try:
            dirs.append(find(build=False))  # $RECONCILER_*_BIN / $KUBEBUILDER_ASSETS
            continue
        except ControlPlaneUnavailable:
            pass
        done = (
            0.0
            if script == BUILD_SCRIPT
            else MEASURED_SECONDS["etcd"] + MEASURED_SECONDS["kube-apiserver"]
        )
        d = _run_script(script, _Progress(done))
        if not has_binaries(d, names):
            raise BuildFailed(f"{script.name} printed {d}, which lacks some of {names}")
        dirs.append(d)
    return dirs[0], dirs[1]


def announce_cold_build(seconds: float) -> None:
    """Say, as a build starts, what it builds and how long it took here."""
    print(
        "Building the local cluster from the Go module proxy (first run only; cached in\n"
        "~/.cache/reconciler, outside the repo): kube-apiserver, etcd, kube-controller-manager,\n"
        f"kube-scheduler, kubectl and kwok. Measured cold on 2 idle cores: ~{minutes(seconds)}\n"
        "(peak ~2.6 GiB of memory); several times that while other builds or tests share the\n"
        "cores. Later runs reuse it and reach the page in about 20 s.",
        file=sys.stderr,
        flush=True,
    )
