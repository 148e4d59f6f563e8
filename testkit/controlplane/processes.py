"""Child processes of a control plane: spawning, killing, and never leaving any behind.

Children run in their own sessions with ``PR_SET_PDEATHSIG=SIGKILL``, so they die with the
Python process that started them; every started control plane is also stopped at interpreter
exit and on SIGTERM, and temp work dirs of owners that were SIGKILLed are swept.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from testkit.processes import die_with_parent

WORK_DIR_PREFIX = "controlplane-"


class Stoppable(Protocol):
    def stop(self) -> None: ...


def spawn(
    argv: list[str], log_path: Path, cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session, stdout+stderr appended to ``log_path``, with
    ``env`` added to this process's environment; it gets SIGKILL when this process dies."""
    parent = os.getpid()
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # Only prctl + getppid run between fork and exec (see die_with_parent).
            preexec_fn=lambda: die_with_parent(parent),  # noqa: PLW1509
            cwd=cwd,
            env={**os.environ, **env} if env else None,
            close_fds=True,
        )


def kill_group(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM ``proc``'s process group, SIGKILL after 5 s; then SIGKILL whatever is left."""
    if proc is None:
        return
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
    # Anything else left in its process group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_work_dirs() -> None:
    """Remove temp work dirs left by owners that were SIGKILLed (their children died with
    them through PDEATHSIG; only the files stayed)."""
    for d in Path(tempfile.gettempdir()).glob(WORK_DIR_PREFIX + "*"):
        with contextlib.suppress(OSError, ValueError):
            pid = int((d / "owner.pid").read_text().strip())
            if d.stat().st_uid == os.getuid() and not _pid_alive(pid):
                shutil.rmtree(d, ignore_errors=True)


def make_work_dir() -> Path:
    """A fresh temp work dir recording its owner's pid (see sweep_stale_work_dirs)."""
    sweep_stale_work_dirs()
    work_dir = Path(tempfile.mkdtemp(prefix=WORK_DIR_PREFIX))
    (work_dir / "owner.pid").write_text(f"{os.getpid()}\n")
    return work_dir


_live: set[Stoppable] = set()
_live_lock = threading.Lock()


@dataclass
class _ExitHooks:
    installed: bool = False
    previous_sigterm: Any = None


_exit_hooks = _ExitHooks()


def register(obj: Stoppable) -> None:
    """Stop ``obj`` at interpreter exit and on SIGTERM unless unregistered first."""
    _install_exit_hooks()
    with _live_lock:
        _live.add(obj)


def unregister(obj: Stoppable) -> None:
    with _live_lock:
        _live.discard(obj)


def _stop_all() -> None:
    with _live_lock:
        live = list(_live)
    for obj in live:
        with contextlib.suppress(Exception):
            obj.stop()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _stop_all()
    previous = _exit_hooks.previous_sigterm
    if callable(previous):
        previous(signum, frame)
        return
    # Default disposition: die by SIGTERM, as we would have without this handler.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _install_exit_hooks() -> None:
    """atexit + SIGTERM (main thread only; SIGTERM's default would skip atexit): stop every
    registered object. An existing SIGTERM handler is chained; SIG_IGN is respected."""
    if _exit_hooks.installed:
        return
    _exit_hooks.installed = True
    atexit.register(_stop_all)
    if threading.current_thread() is threading.main_thread():
        current = signal.getsignal(signal.SIGTERM)
        if current is not signal.SIG_IGN:
            _exit_hooks.previous_sigterm = current
            signal.signal(signal.SIGTERM, _on_sigterm)
