"""Two `reconciler serve` replicas on one Lease, on the real API server: one syncs at a time, and a
replica whose Lease is taken away mid-run starts no further patch until it holds it again."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from testkit.github import GitHubStandIn, random_sha
from testkit.processes import free_port
from testkit.serve_process import ServeProcess
from testkit.serve_world import TRIGGER, image, start

pytestmark = pytest.mark.controlplane


class GatedRegistry:
    """A registry that says every manifest exists, but holds HEADs while its gate is closed:
    a sync verifying images waits there, holding the Lease."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.held = threading.Event()  # a HEAD is waiting at the closed gate
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                if not registry.gate.is_set():
                    registry.held.set()
                    registry.gate.wait(60)
                self.send_response(200)
                self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                self.send_header("Docker-Content-Digest", "sha256:" + "0" * 64)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def registry() -> Iterator[GatedRegistry]:
    r = GatedRegistry()
    yield r
    r.close()


def replica(world: dict[str, Any], tmp: Path, name: str, registry: GatedRegistry) -> ServeProcess:
    tmp.mkdir()
    (tmp / "sites.toml").write_text(
        f'[defaults]\nnamespace = "{world["ns"]}"\n'
        f'image = "{registry.host}/p/{{repo}}:{{sha}}"\nverify = "registry"\n\n'
        '[service]\nschedule = "0 0 1 1 *"\n\n'  # no scheduled sync during the test
        '[sites.blog]\nrepo = "acme/blog"\ncontainer = "app"\n\n'
        '[sites.shop]\nrepo = "acme/shop"\n'
    )
    return start(
        world,
        tmp,
        POD_NAME=name,
        RECONCILER_LEASE_SECONDS="4",  # renewed every second
        RECONCILER_INSECURE_REGISTRIES=registry.host,
    )


def lease(world: dict[str, Any]) -> Any:
    coord = kubernetes.client.CoordinationV1Api(world["api"])
    return coord.read_namespaced_lease("reconciler", world["ns"])


def test_a_replica_whose_lease_is_taken_mid_run_patches_nothing_more(
    world: dict[str, Any], tmp_path: Path, registry: GatedRegistry
) -> None:
    gh: GitHubStandIn = world["gh"]
    with (
        replica(world, tmp_path / "a", "pod-a", registry) as a,
        replica(world, tmp_path / "b", "pod-b", registry) as b,
    ):
        for proc in (a, b):  # both startup syncs ran, one after the other
            proc.wait_for(lambda p=proc: p.request("GET", "/status")[1]["last_sync"], what="sync")
        running = {"blog": image(world, "blog", "app"), "shop": image(world, "shop")}
        shas = {s: gh.set_branch(f"acme/{s}", "main", random_sha()) for s in running}
        registry.gate.clear()
        status, body = a.request("POST", "/sync?wait=false", TRIGGER)
        assert status == 202, body
        assert registry.held.wait(30), "pod-a's sync never reached the registry"

        taken = lease(world)  # pod-a holds it, mid-run; now pod-b does
        assert taken.spec.holder_identity == "pod-a"
        taken.spec.holder_identity = "pod-b"
        taken.spec.renew_time = datetime.now(UTC)
        coord = kubernetes.client.CoordinationV1Api(world["api"])
        coord.replace_namespaced_lease("reconciler", world["ns"], taken)
        a.wait_for(
            lambda: any(e.get("event") == "lease_lost" for e in a.log_events()),
            what="pod-a to see it lost the Lease",
        )
        registry.gate.set()

        run = a.wait_for(
            lambda: (r := a.request("GET", body["status_url"])[1])["state"] == "done" and r,
            what="pod-a's run",
        )
        for r in run["results"]:
            assert r["error_kind"] == "lease" and r["applied"] is False, r
        now = {"blog": image(world, "blog", "app"), "shop": image(world, "shop")}
        assert now == running, "pod-a patched after it lost the Lease"

        status, body = b.request("POST", "/sync", TRIGGER)  # pod-b holds the Lease: it deploys
        assert status == 200 and all(r["applied"] for r in body["results"]), body
        assert f"/blog:{shas['blog']}" in image(world, "blog", "app")
        assert f"/shop:{shas['shop']}" in image(world, "shop")
        assert lease(world).spec.holder_identity is None  # released after its sync

        status, body = a.request("POST", "/sync", TRIGGER)  # pod-a holds it again: all fine
        assert status == 200 and body["ok"] is True, body
        assert {r["action"] for r in body["results"]} == {"in-sync"}
