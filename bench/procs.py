"""Child processes of the benchmark: `reconciler serve` (warm), `reconciler sync` (CLI) and the
baseline script; their wall time and peak RSS."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from testkit.processes import Started, die_with_parent, free_port, tail

GNU_TIME = "/usr/bin/time"


def reconciler_command() -> list[str]:
    """The installed `reconciler` console script next to this interpreter, else -m."""
    script = Path(sys.executable).parent / "reconciler"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "reconciler"]


# --------------------------------------------------------------------------------------------
# Peak RSS


def _status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def vm_hwm_mb(pid: int) -> float | None:
    """Peak resident set size (VmHWM) of a live process, in MB (10^6 bytes)."""
    kb = _status_kb(pid, "VmHWM")
    return None if kb is None else kb * 1024 / 1e6


def reset_hwm(pid: int) -> bool:
    """Reset VmHWM to the current RSS (``echo 5 > /proc/PID/clear_refs``, Linux >= 4.0)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a live process has used so far."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            out.append(int(entry.name))
    return sorted(out)


# --------------------------------------------------------------------------------------------
# One-shot runs


@dataclass(frozen=True)
class RunResult:
    returncode: int
    wall_s: float
    max_rss_mb: float
    cpu_s: float | None
    stdout: str
    stderr: str


def run_measured(
    argv: Sequence[str], env: Mapping[str, str], *, cwd: Path | None = None, timeout: float = 3600
) -> RunResult:
    """Run a child to completion: wall time (spawn to exit) and its own peak RSS.

    The peak RSS comes from GNU time (``/usr/bin/time -f %M``) when it is installed: the
    rusage of a child we fork ourselves is useless here, because Linux folds the RSS of the
    forked copy of this (large) process into the child's ru_maxrss when it execs. Without GNU
    time, wait4's ru_maxrss is reported and may be that of this process.
    """
    parent = os.getpid()
    rss_file: Path | None = None
    if os.access(GNU_TIME, os.X_OK):
        fd, name = tempfile.mkstemp(prefix="bench-rss-")
        os.close(fd)
        rss_file = Path(name)
        argv = [GNU_TIME, "-f", "%M %U %S", "-o", name, *argv]
    started = time.perf_counter()
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        preexec_fn=lambda: die_with_parent(parent),  # noqa: PLW1509
    )
    chunks: dict[str, bytes] = {}

    def drain(name: str, stream: Any) -> None:
        chunks[name] = stream.read()

    readers = [
        threading.Thread(target=drain, args=("out", proc.stdout), daemon=True),
        threading.Thread(target=drain, args=("err", proc.stderr), daemon=True),
    ]
    for t in readers:
        t.start()
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    for t in readers:
        t.join()
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    proc.stderr.close()
    max_rss_kb = usage.ru_maxrss  # Linux: KiB
    cpu: float | None = usage.ru_utime + usage.ru_stime
    if rss_file is not None:
        cpu = None
        with contextlib.suppress(OSError, ValueError, IndexError):
            rss, user, system = rss_file.read_text().split()[-3:]
            max_rss_kb, cpu = int(rss), float(user) + float(system)
        rss_file.unlink(missing_ok=True)
    return RunResult(
        returncode=proc.returncode,
        wall_s=wall,
        max_rss_mb=max_rss_kb * 1024 / 1e6,
        cpu_s=cpu,
        stdout=chunks.get("out", b"").decode(errors="replace"),
        stderr=chunks.get("err", b"").decode(errors="replace"),
    )


# --------------------------------------------------------------------------------------------
# The warm service


class ServeProcess(Started):
    """`reconciler serve` on a free loopback port (one process: waitress and the syncs)."""

    def __init__(
        self, config_path: Path, env: Mapping[str, str], log_path: Path, token: str
    ) -> None:
        self.config_path = config_path
        self.env = dict(env)
        self.log_path = log_path
        self.token = token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.worker_pid: int | None = None

    def start(self, timeout: float = 300.0) -> Self:
        env = {
            **self.env,
            "RECONCILER_TRIGGER_TOKEN": self.token,
            "LOG_FORMAT": "json",
            "RECONCILER_LEASE": "off",
        }
        argv = [
            *reconciler_command(),
            "serve",
            "--config",
            str(self.config_path),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
        ]
        parent = os.getpid()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=lambda: die_with_parent(parent),  # noqa: PLW1509
            )
        self._wait_started(time.monotonic() + timeout)
        return self

    def _wait_started(self, deadline: float) -> None:
        """Until the worker is up and its startup sync has finished (/status last_sync)."""
        assert self.proc is not None
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"reconciler serve exited with {self.proc.returncode}; log tail:\n"
                    + self.log_tail()
                )
            status = self._get_json("/status")
            if status is not None and status.get("last_sync") is not None:
                self.worker_pid = self.proc.pid
                return
            if time.monotonic() > deadline:
                raise RuntimeError("reconciler serve did not finish its startup sync in time")
            time.sleep(0.2)

    def _get_json(self, path: str) -> Any:
        try:
            request = urllib.request.Request(
                self.url + path, headers={"Authorization": f"Bearer {self.token}"}
            )
            with urllib.request.urlopen(request, timeout=5) as r:
                return json.loads(r.read())
        except (OSError, ValueError):
            return None

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/readyz", timeout=10) as r:
                return bool(r.status == 200)
        except (OSError, urllib.error.HTTPError):
            return False

    def sync(self, timeout: float = 600.0) -> tuple[dict[str, Any], float]:
        """POST /sync (waits for the run): (reply JSON, client-side wall seconds)."""
        request = urllib.request.Request(
            self.url + "/sync",
            method="POST",
            headers={"Authorization": f"Bearer {self.token}"},
            data=b"",
        )
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=timeout) as r:
                body = r.read()
        except urllib.error.HTTPError as e:  # 502: some site failed; the body still says which
            body = e.read()
            if e.code != 502:
                raise RuntimeError(f"POST /sync answered {e.code}: {body[:500]!r}") from e
        wall = time.perf_counter() - started
        return json.loads(body), wall

    def wait_ready(self, timeout: float = 300.0) -> bool:
        """Until /readyz says ready (the watch cache has listed every namespace)."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    def watch_counts(self) -> dict[str, float]:
        """reconciler_watch_cache_total by count from /metrics ({} with the cache off)."""
        try:
            request = urllib.request.Request(
                self.url + "/metrics", headers={"Authorization": f"Bearer {self.token}"}
            )
            with urllib.request.urlopen(request, timeout=10) as r:
                text = r.read().decode()
        except OSError:
            return {}
        found = re.findall(r'^reconciler_watch_cache_total\{count="(\w+)"\} (\S+)$', text, re.M)
        return {name: float(value) for name, value in found}

    def settle_cache(
        self, at_least: float = 0.0, quiet: float = 0.5, timeout: float = 300.0
    ) -> float | None:
        """Until the cache has heard at least `at_least` events and then nothing for `quiet`
        seconds (the writes made before have reached it); its event count then (None: serve
        runs without the cache)."""
        deadline = time.monotonic() + timeout
        last, since = -1.0, time.monotonic()
        while time.monotonic() < deadline:
            events = self.watch_counts().get("events")
            if events is None:
                return None  # no cache: nothing to wait for
            if events != last:
                last, since = events, time.monotonic()
            elif events >= at_least and time.monotonic() - since >= quiet:
                return events
            time.sleep(0.1)
        raise RuntimeError(f"the watch cache heard {last} events, not {at_least}, in time")

    def log_tail(self, lines: int = 30) -> str:
        return tail(self.log_path, lines)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
