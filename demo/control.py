"""The running demo's state file and its loopback control endpoint (`scripts/demo push`)."""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

STATE_FILE = "demo.json"
# Variables that would point the reconciler elsewhere than the demo's world (a real cluster, a
# token): serve and `scripts/demo run` go without them.
FOREIGN_ENV = ("GITHUB_", "PUBSUB_", "RECONCILER_", "KUBE", "POD_", "LOG_", "DOCKER_CONFIG")
Handler = Callable[[dict[str, Any]], dict[str, Any]]


class DemoNotRunning(Exception):
    """No demo answers at the address its state file gives."""


class PushRefused(Exception):
    """The demo answered, but would not move the branch (its message says why)."""


def write_state(demo_dir: Path, state: dict[str, Any]) -> Path:
    """Write the state file (readable by its owner only: it holds the tokens)."""
    path = demo_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


def read_state(demo_dir: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads((demo_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        raise DemoNotRunning(f"no demo is running (no {demo_dir / STATE_FILE})") from None
    with contextlib.suppress(ProcessLookupError, PermissionError, KeyError):
        os.kill(int(state["pid"]), 0)
        return state
    raise DemoNotRunning(f"no demo is running (the one in {demo_dir / STATE_FILE} has exited)")


def clear_state(demo_dir: Path) -> None:
    (demo_dir / STATE_FILE).unlink(missing_ok=True)


class ControlServer:
    """POST /push {"site", "bad"} with the demo's control token; answers the handler's JSON."""

    def __init__(self, token: str, push: Handler) -> None:
        outer = self

        class _H(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                auth = self.headers.get("Authorization", "")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not hmac.compare_digest(auth, f"Bearer {token}"):
                    self._answer(401, {"error": "bad control token"})
                elif self.path != "/push":
                    self._answer(404, {"error": f"no {self.path}"})
                else:
                    try:
                        self._answer(200, outer.push(json.loads(body or b"{}")))
                    except (PushRefused, ValueError, TypeError) as e:
                        self._answer(409, {"error": str(e)})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.push = push
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> ControlServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def push(demo_dir: Path, site: str, *, bad: bool) -> dict[str, Any]:
    """Ask the running demo to move SITE's branch to a new commit (a crash-looping one if bad)."""
    state = read_state(demo_dir)
    req = urllib.request.Request(
        state["control_url"] + "/push",
        data=json.dumps({"site": site, "bad": bad}).encode(),
        headers={
            "Authorization": f"Bearer {state['control_token']}",
            "Content-Type": "application/json",
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            answer: dict[str, Any] = json.loads(r.read())
            return answer
    except urllib.error.HTTPError as e:
        raise PushRefused(json.loads(e.read()).get("error", str(e))) from None
    except OSError as e:
        raise DemoNotRunning(f"the demo does not answer at {state['control_url']}: {e}") from None
