"""Runs `reconciler serve` as a real waitress process on loopback, for tests and the benchmark."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from testkit.processes import die_with_parent, free_port

REPO = Path(__file__).resolve().parents[1]


class ServeProcess:
    """`python -m reconciler serve` with the given env; .url, .request(), .stop()."""

    def __init__(self, config: Path, env: Mapping[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = config
        self.env = {**os.environ, "LOG_FORMAT": "json", **env}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServeProcess:
        return self if self.proc is not None else self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self, timeout: float = 30.0) -> ServeProcess:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "reconciler",
                "serve",
                "--config",
                str(self.config),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
            preexec_fn=functools.partial(die_with_parent, os.getpid()),  # noqa: PLW1509
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited {self.proc.returncode}:\n{self.logs()[-3000:]}")
            try:
                if self.request("GET", "/healthz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"serve did not answer /healthz in {timeout}s:\n{self.logs()[-3000:]}")

    def request(
        self,
        method: str,
        path: str,
        token: str | None = None,
        timeout: float = 60.0,
        body: Any = None,
    ) -> tuple[int, Any]:
        """`token` goes as a bearer token; a GET without one carries the read token (the
        RECONCILER_READ_TOKEN or trigger token of the env, as an operator's client would), and
        token="" sends none at all."""
        if token is None and method == "GET":
            token = self.env.get("RECONCILER_READ_TOKEN") or self.env.get(
                "RECONCILER_TRIGGER_TOKEN"
            )
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                answer = r.read()
                status = r.status
                ctype = r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as err:
            answer, status, ctype = err.read(), err.code, err.headers.get("Content-Type", "")
        if "json" in ctype:
            return status, json.loads(answer)
        return status, answer.decode()

    def wait_for(self, predicate: Any, timeout: float = 30.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}:\n{self.logs()[-3000:]}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.logs().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def terminate(self, timeout: float = 40.0) -> int:
        """SIGTERM, then the exit code (within timeout)."""
        self.sigterm()
        return self.wait_exit(timeout)

    def sigterm(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float = 40.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
