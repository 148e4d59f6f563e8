"""No valid request waits on the network (#23, "also seen"): the real waitress server, with an
API server that accepts connections and never answers.

`GET /readyz` asked the API server in the request (the kube client's timeouts and retries: 12 s
per request), every probe for itself: as many probes as threads held every thread, and then
`GET //status`, `/healthz`, anything waited behind them. Now the check runs in the background,
one at a time, and a probe reads its last verdict. `GET /sites/<site>` read the site's history
in the request too (30 s read timeout, retried: over 2 minutes); now it waits at most 5 s for
the one read in flight.
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from reconciler.serve.app import create_app
from testkit.processes import free_port
from testkit.serve_process import ServeProcess
from testkit.wait import wait_until
from tests.unit.test_service import service

THREADS = 4  # request threads of the server under test
PROBES = 5 * THREADS
PAGES = THREADS + 1  # each waits 5 s for the site's history


class SilentAPIServer:
    """Accepts every connection, reads the request line, and never answers (until closed)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests: list[str] = []
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with self._lock:
            self._held.append(conn)
        try:
            line = conn.makefile("rb").readline().decode(errors="replace").strip()
        except OSError:
            return
        with self._lock:
            self.requests.append(line)

    def asked(self, path: str) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.split(" ")[1:2] == [path])

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.sock.close()
        with self._lock:
            for conn in self._held:
                conn.close()


@pytest.fixture
def silent_api() -> Iterator[SilentAPIServer]:
    server = SilentAPIServer()
    yield server
    server.close()


def _kubeconfig(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "kubeconfig"
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }
    path.write_text(json.dumps(doc))
    return path


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_probes_never_wait_on_an_api_server_that_does_not_answer(
    tmp_path: Path, silent_api: SilentAPIServer
) -> None:
    sites = tmp_path / "sites.toml"
    sites.write_text('[sites.blog]\nrepo = "acme/blog"\nimage = "gcr.io/p/blog:{sha}"\n')
    env = {
        "KUBECONFIG": str(_kubeconfig(tmp_path, silent_api.url)),
        "GITHUB_API_URL": f"http://127.0.0.1:{free_port()}",  # refused at once
        "RECONCILER_LEASE": "off",
        "RECONCILER_READ_TOKEN": "open",
        "RECONCILER_HTTP_THREADS": str(THREADS),
    }
    with ServeProcess(sites, env, tmp_path / "serve.log") as served:
        with ThreadPoolExecutor(PROBES) as pool:
            probes = list(pool.map(_get, [f"{served.url}/readyz?format=json"] * PROBES))
            asked = silent_api.asked("/version")
            status = _get(f"{served.url}//status")
            pages = list(pool.map(_get, [f"{served.url}/sites/blog?format=json"] * PAGES))
        # Every probe was answered while the API server had answered nothing, and all of
        # them together asked it once (a check in flight is never started twice).
        assert asked == 1, silent_api.requests
        assert [code for code, _ in probes] == [503] * PROBES
        assert {p["checks"]["kubernetes"] for _, p in probes} == {"not checked yet"}
        assert status[0] == 200 and status[1]["sites"][0]["site"] == "blog"
        # So was every request for the site's page (its history is read from the cluster):
        # one read in flight, the page says the API server has not answered.
        deployment = "/apis/apps/v1/namespaces/default/deployments/blog"
        # (the kubernetes client may repeat that one read after a timeout, so the count is of
        # reads per page: fewer than one each)
        assert silent_api.asked(deployment) < PAGES, silent_api.requests
        assert [code for code, _ in pages] == [200] * PAGES
        assert all("has not answered" in page["error"] for _, page in pages), pages[0]
        wait_until(lambda: served.request("GET", "/healthz")[0] == 200, "/healthz answers")
        silent_api.close()  # the startup sync, still waiting on it, fails now: a quick stop


def test_a_failing_check_is_the_verdict_until_it_is_asked_again(tmp_path: Path) -> None:
    from reconciler.serve.process import cached

    calls: list[int] = []

    def check() -> str | None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return None

    probe = cached(check, ttl=0.0)
    assert probe() == "health check failed: RuntimeError: boom"
    wait_until(lambda: probe() is None, "a new verdict once the check runs again")


def test_the_status_page_answers_before_the_first_sync(tmp_path: Path) -> None:
    """Found with the real server while looking for hangs: `GET /` (and `GET //`) answered 500
    until the first sync had a result for every site (the page formatted a time it had not)."""
    svc, _, _ = service(tmp_path)
    try:
        client = create_app(svc, trigger_token=None, reads_open=True).test_client()
        page = client.get("/")
        assert page.status_code == 200 and "not synced yet" in page.get_data(as_text=True)
        assert client.get("/sites/blog").status_code == 200
    finally:
        svc.shutdown(5)
