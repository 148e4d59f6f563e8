"""A real, local Pub/Sub emulator for tests and benchmarks.

    with PubSubEmulator() as emu:          # emu.host == "127.0.0.1:PORT", emu.kind
        os.environ["PUBSUB_EMULATOR_HOST"] = emu.host   # the client library does the rest

Two kinds, same gRPC API:

- ``gcloud``: the Google Cloud SDK's Java emulator (``gcloud beta emulators pubsub start``),
  run directly as ``<sdk>/platform/pubsub-emulator/bin/cloud-pubsub-emulator`` (skips
  gcloud's own Python start-up; needs ``java``). Preferred when installed.
- ``pstest``: Google's Go fake (``cloud.google.com/go/pubsub/v2/pstest``) wrapped by
  tools/pstest, built by tools/build-pstest.sh into a cache dir outside the repo (the first
  build takes about a minute; needs Go). ``$RECONCILER_PSTEST_BIN`` names a prebuilt binary.

``$RECONCILER_PUBSUB_EMULATOR=gcloud|pstest`` forces one kind (an unavailable forced kind is an
error, not a fallback). Raises PubSubEmulatorUnavailable when no kind can be had.

The emulator runs in its own session (process group) with ``PR_SET_PDEATHSIG=SIGKILL``, so it
dies with the Python process (thread) that started it; ``stop()`` kills the whole group, and
also runs at interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO

import grpc  # type: ignore[import-untyped]
from google.pubsub_v1 import types as pubsub_types

from testkit.processes import die_with_parent, free_port, tail

__all__ = [
    "KINDS",
    "PubSubEmulator",
    "PubSubEmulatorError",
    "PubSubEmulatorUnavailable",
    "choose_kind",
    "find_gcloud_emulator",
    "find_pstest",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO_ROOT / "tools" / "build-pstest.sh"
KINDS = ("gcloud", "pstest")
ENV_KIND = "RECONCILER_PUBSUB_EMULATOR"
ENV_PSTEST_BIN = "RECONCILER_PSTEST_BIN"
_GCLOUD_SCRIPT = Path("platform", "pubsub-emulator", "bin", "cloud-pubsub-emulator")


class PubSubEmulatorError(RuntimeError):
    """The emulator failed to start (the message carries the log tail)."""


class PubSubEmulatorUnavailable(PubSubEmulatorError):
    """No emulator of the wanted kind can be had on this machine. ``forced``: the kind was
    named by $RECONCILER_PUBSUB_EMULATOR (so falling back or skipping would hide it)."""

    def __init__(self, message: str, *, forced: bool = False) -> None:
        super().__init__(message)
        self.forced = forced


# --------------------------------------------------------------------------------------------
# Finding an emulator


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and os.access(Path(home, "bin", "java"), os.X_OK):
        return str(Path(home, "bin", "java"))
    return shutil.which("java")


def find_gcloud_emulator() -> Path | None:
    """The Cloud SDK's ``cloud-pubsub-emulator`` launcher, if the component is installed."""
    roots: list[Path] = []
    if os.environ.get("CLOUDSDK_ROOT_DIR"):
        roots.append(Path(os.environ["CLOUDSDK_ROOT_DIR"]))
    gcloud = shutil.which("gcloud")
    if gcloud:
        roots.append(Path(gcloud).resolve().parents[1])  # <sdk>/bin/gcloud
    for root in roots:
        script = root / _GCLOUD_SCRIPT
        if os.access(script, os.X_OK):
            return script
    return None


def find_pstest(*, build: bool = True) -> Path:
    """The pstest binary: ``$RECONCILER_PSTEST_BIN``, else built (or reused from the cache) by
    tools/build-pstest.sh. Raises PubSubEmulatorUnavailable."""
    explicit = os.environ.get(ENV_PSTEST_BIN)
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise PubSubEmulatorUnavailable(f"{ENV_PSTEST_BIN}={explicit} is not executable")
        return Path(explicit)
    if not build:
        raise PubSubEmulatorUnavailable("no pstest binary and building is disabled")
    if shutil.which("go") is None:
        raise PubSubEmulatorUnavailable(
            "pstest cannot be built: 'go' is not on PATH (install Go >= 1.26)"
        )
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        stdout=subprocess.PIPE,
        stderr=None,  # progress goes to our stderr
        text=True,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise PubSubEmulatorError(f"{BUILD_SCRIPT} failed (exit {proc.returncode})")
    path = Path(lines[-1])
    if not os.access(path, os.X_OK):
        raise PubSubEmulatorError(f"{BUILD_SCRIPT} printed {path}, which is not executable")
    return path


def choose_kind() -> tuple[str, bool]:
    """(kind, forced): $RECONCILER_PUBSUB_EMULATOR, else gcloud when installed (with java),
    else pstest when Go (or $RECONCILER_PSTEST_BIN) is there. Raises PubSubEmulatorUnavailable."""
    wanted = os.environ.get(ENV_KIND, "").strip().lower()
    if wanted:
        if wanted not in KINDS:
            raise PubSubEmulatorUnavailable(
                f"{ENV_KIND}={wanted!r}: expected one of {', '.join(KINDS)}", forced=True
            )
        return wanted, True
    if find_gcloud_emulator() is not None and _java() is not None:
        return "gcloud", False
    if os.environ.get(ENV_PSTEST_BIN) or shutil.which("go"):
        return "pstest", False
    raise PubSubEmulatorUnavailable(
        "found neither the Cloud SDK's pubsub emulator (with java) nor Go (to build pstest)"
    )


# --------------------------------------------------------------------------------------------
# Processes


_live: set[PubSubEmulator] = set()
_live_lock = threading.Lock()
_atexit_installed: list[bool] = []  # non-empty once the hook is registered


def _stop_all() -> None:
    with _live_lock:
        emulators = list(_live)
    for emu in emulators:
        with contextlib.suppress(Exception):
            emu.stop()


def _register(emu: PubSubEmulator) -> None:
    with _live_lock:
        _live.add(emu)
        if not _atexit_installed:
            atexit.register(_stop_all)
            _atexit_installed.append(True)


# --------------------------------------------------------------------------------------------
# The emulator


class PubSubEmulator:
    """A Pub/Sub emulator on a free loopback port. Use as a context manager or start()/stop().

    After start(): ``host`` ("127.0.0.1:PORT", the value for $PUBSUB_EMULATOR_HOST), ``port``,
    ``kind`` ("gcloud" or "pstest"), ``project``, ``log_path``, ``startup_seconds``.
    """

    def __init__(
        self, kind: str | None = None, *, project: str = "reconciler-test", timeout: float = 60.0
    ) -> None:
        """``kind``: "gcloud" or "pstest" (default: choose_kind()). ``timeout``: how long to
        wait for the emulator to answer gRPC."""
        if kind is not None and kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        self._kind_arg = kind
        self._forced = kind is not None
        self.kind = kind or ""
        self.project = project
        self.timeout = timeout
        self.port = 0
        self.host = ""
        self.startup_seconds = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: str | None = None
        self._log: IO[bytes] | None = None
        self.log_path = Path()

    def __enter__(self) -> PubSubEmulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def env(self) -> dict[str, str]:
        return {"PUBSUB_EMULATOR_HOST": self.host}

    def _command(self, port: int) -> list[str]:
        if self.kind == "gcloud":
            script = find_gcloud_emulator()
            if script is None:
                raise PubSubEmulatorUnavailable(
                    "the Cloud SDK pubsub emulator is not installed "
                    "(gcloud components install pubsub-emulator)",
                    forced=self._forced,
                )
            if _java() is None:
                raise PubSubEmulatorUnavailable(
                    "the Cloud SDK pubsub emulator needs Java, and there is no 'java' on PATH",
                    forced=self._forced,
                )
            return [str(script), "--host=127.0.0.1", f"--port={port}"]
        try:
            binary = find_pstest()
        except PubSubEmulatorUnavailable as e:
            e.forced = self._forced
            raise
        return [str(binary), f"--port={port}"]

    def start(self) -> PubSubEmulator:
        if self._proc is not None:
            return self
        self._forced = self._kind_arg is not None
        if not self.kind:
            self.kind, self._forced = choose_kind()
        self._dir = tempfile.mkdtemp(prefix=f"pubsub-{self.kind}-")
        self.log_path = Path(self._dir, "emulator.log")
        _register(self)
        t0 = time.monotonic()
        try:
            for attempt in range(3):  # a free port can be taken before the child binds it
                self.port = free_port()
                self.host = f"127.0.0.1:{self.port}"
                if self._spawn(self._command(self.port)):
                    break
                if attempt == 2:
                    raise PubSubEmulatorError(
                        f"the {self.kind} emulator exited at start-up:\n{tail(self.log_path)}"
                    )
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def _spawn(self, cmd: list[str]) -> bool:
        """Start ``cmd`` and wait until it answers gRPC; False if it exited (port race?)."""
        if self._log is not None:
            self._log.close()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log.write(f"$ {' '.join(cmd)}\n".encode())
        self._log.flush()
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self._dir,
            start_new_session=True,
            preexec_fn=functools.partial(die_with_parent, os.getpid()),  # noqa: PLW1509
        )
        deadline = time.monotonic() + self.timeout
        channel = grpc.insecure_channel(self.host)
        try:
            list_topics = channel.unary_unary(
                "/google.pubsub.v1.Publisher/ListTopics",
                request_serializer=pubsub_types.ListTopicsRequest.serialize,
                response_deserializer=pubsub_types.ListTopicsResponse.deserialize,
            )
            request = pubsub_types.ListTopicsRequest(project=f"projects/{self.project}")
            while True:
                if self._proc.poll() is not None:
                    self._kill_group()
                    self._proc = None
                    return False
                try:
                    list_topics(request, timeout=1.0)
                    return True
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise PubSubEmulatorError(
                        f"the {self.kind} emulator did not answer gRPC on {self.host} within "
                        f"{self.timeout:.0f}s:\n{tail(self.log_path)}"
                    )
                time.sleep(0.1)
        finally:
            channel.close()

    def _kill_group(self, sig: int = signal.SIGKILL) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the whole process group (SIGTERM, then SIGKILL), remove the temp dir."""
        proc = self._proc
        if proc is not None:
            # The leader is not reaped before killpg, so its pid (= the group id) is still ours.
            self._kill_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
            self._kill_group(signal.SIGKILL)  # stragglers in the group, or a leader that hung
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        with _live_lock:
            _live.discard(self)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __repr__(self) -> str:
        return f"PubSubEmulator(kind={self.kind!r}, host={self.host!r})"
