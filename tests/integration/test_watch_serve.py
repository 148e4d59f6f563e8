"""serve on its watch-fed cache (#22), against the real kube-apiserver: /readyz waits for the
cache's first LISTs; a steady sync of every site reads nothing from the API server (it succeeds
with the API server out of reach); a watch cut while a person changes a Deployment resumes and the
follower shows the site held, no sync run; a reloaded sites.toml is watched in its new namespace.
serve reaches the API server through a TCP proxy the test controls (testkit/tcpproxy.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import kubernetes
import pytest

from testkit.controlplane import ControlPlane
from testkit.deployments import create_deployment
from testkit.github import random_sha
from testkit.serve_process import ServeProcess
from testkit.serve_world import QUIET_SCHEDULE, TRIGGER, image, sites_toml, start
from testkit.tcpproxy import TcpProxy

pytestmark = pytest.mark.controlplane


@pytest.fixture
def proxy(control_plane: ControlPlane) -> Iterator[TcpProxy]:
    with TcpProxy("127.0.0.1", urlparse(control_plane.host).port or 0) as p:
        yield p


def through(proxy: TcpProxy, plane: ControlPlane, tmp_path: Path) -> str:
    """A copy of the admin kubeconfig that reaches the API server through the proxy."""
    text = plane.kubeconfig_path.read_text()
    assert plane.host in text
    path = tmp_path / "proxied.kubeconfig"
    path.write_text(text.replace(plane.host, f"https://127.0.0.1:{proxy.port}"))
    return str(path)


def serve(world: dict[str, Any], tmp_path: Path, proxy: TcpProxy) -> ServeProcess:
    kubeconfig = through(proxy, world["cp"], tmp_path)
    return start(world, tmp_path, KUBECONFIG=kubeconfig, RECONCILER_LEASE="off")


def site(served: ServeProcess, name: str) -> dict[str, Any]:
    return next(s for s in served.request("GET", "/status")[1]["sites"] if s["site"] == name)


def watch_count(served: ServeProcess, count: str) -> float:
    text = served.request("GET", "/metrics")[1]
    key = f'reconciler_watch_cache_total{{count="{count}"}} '
    return float(next(line for line in text.splitlines() if line.startswith(key)).split()[-1])


def sync_all(served: ServeProcess) -> dict[str, Any]:
    status, body = served.request("POST", "/sync", TRIGGER)
    assert status == 200, [(r["site"], r["reason"]) for r in body.get("results", [])]
    return {r["site"]: r for r in body["results"]}


def in_sync(served: ServeProcess) -> bool:
    results = sync_all(served)
    return all(r["action"] == "in-sync" and not r["applied"] for r in results.values())


def set_image_as_a_person(api: Any, ns: str, name: str, container: str, image: str) -> None:
    body = {"spec": {"template": {"spec": {"containers": [{"name": container, "image": image}]}}}}
    kubernetes.client.AppsV1Api(api).patch_namespaced_deployment(
        name, ns, body, field_manager="kubectl-set"
    )


def test_not_ready_until_the_cache_has_listed_then_a_steady_sync_reads_nothing(
    world: dict[str, Any], tmp_path: Path, proxy: TcpProxy
) -> None:
    proxy.refuse()  # the API server is out of reach from the start
    served = serve(world, tmp_path, proxy)
    try:
        assert served.request("GET", "/readyz")[0] == 503
        status, body = served.request("GET", "/readyz", TRIGGER)
        assert status == 503 and body["checks"]["watch"] != "ok", body

        proxy.admit()
        served.wait_for(lambda: served.request("GET", "/readyz")[0] == 200, what="ready")
        assert watch_count(served, "lists") >= 1
        first = sync_all(served)
        assert first["blog"]["applied"] and first["shop"]["applied"], first
        served.wait_for(lambda: in_sync(served), what="the cache to see its own patches")

        proxy.refuse()  # nothing reaches the API server now: the steady sync reads the cache
        steady = sync_all(served)
        assert {r["action"] for r in steady.values()} == {"in-sync"}, steady
        head = world["gh"].branch_sha("acme/blog", "main")
        assert image(world, "blog", "app") == f"gcr.io/p/blog:{head}"
    finally:
        proxy.admit()
        served.stop()


def test_a_change_made_while_the_watch_was_cut_shows_held_when_it_resumes(
    world: dict[str, Any], tmp_path: Path, proxy: TcpProxy
) -> None:
    served = serve(world, tmp_path, proxy)
    try:
        served.wait_for(lambda: served.request("GET", "/readyz")[0] == 200, what="ready")
        sync_all(served)
        served.wait_for(lambda: in_sync(served), what="in sync")
        last = served.request("GET", "/status")[1]["last_sync"]["run_id"]
        watches = watch_count(served, "watches")

        proxy.refuse()  # every watch is cut mid-stream; reconnects are refused meanwhile
        set_image_as_a_person(world["api"], world["ns"], "blog", "app", "gcr.io/p/blog:hotfix")
        assert site(served, "blog")["state"] == "in-sync"  # serve cannot know yet
        proxy.admit()

        held = served.wait_for(
            lambda: (s := site(served, "blog"))["state"] == "held" and s, what="held"
        )
        assert held["held_by"] == "kubectl-set", held
        assert watch_count(served, "watches") > watches  # it re-watched (from its version)
        assert served.request("GET", "/status")[1]["last_sync"]["run_id"] == last  # no sync ran
        assert site(served, "shop")["state"] == "in-sync"
    finally:
        proxy.admit()
        served.stop()


def test_a_reloaded_sites_toml_is_watched_in_its_new_namespace(
    world: dict[str, Any], tmp_path: Path, proxy: TcpProxy
) -> None:
    other = f"{world['ns']}-b"
    core = kubernetes.client.CoreV1Api(world["api"])
    core.create_namespace(
        kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=other))
    )
    try:
        create_deployment(world["api"], other, "docs", "gcr.io/p/docs:old")
        served = serve(world, tmp_path, proxy)
        try:
            served.wait_for(lambda: served.request("GET", "/readyz")[0] == 200, what="ready")
            lists = watch_count(served, "lists")
            extra = (
                f'\n[sites.docs]\nrepo = "acme/docs"\nnamespace = "{other}"\ncontainer = "app"\n'
            )
            (tmp_path / "sites.toml").write_text(QUIET_SCHEDULE + sites_toml(world["ns"], extra))
            world["gh"].set_branch("acme/docs", "main", sha := random_sha())
            docs = sync_all(served)["docs"]  # read by a LIST: the cache has not listed it yet
            assert docs["applied"] and docs["action"] == "update", docs
            assert image({**world, "ns": other}, "docs") == f"gcr.io/p/docs:{sha}"
            served.wait_for(lambda: watch_count(served, "lists") > lists, what="its LIST")
            served.wait_for(lambda: served.request("GET", "/readyz")[0] == 200, what="ready")
        finally:
            served.stop()
    finally:
        core.delete_namespace(other)


def test_a_statefulset_target_is_read_from_the_cache_too(
    world: dict[str, Any], tmp_path: Path, proxy: TcpProxy
) -> None:
    body: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db"},
        "spec": {
            "replicas": 1,
            "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {
                "metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "app", "image": "gcr.io/p/docs:old"}]},
            },
        },
    }
    apps = kubernetes.client.AppsV1Api(world["api"])
    apps.create_namespaced_stateful_set(world["ns"], body)  # type: ignore[arg-type]
    extra = (
        '\n[sites.db]\nrepo = "acme/docs"\n\n'
        '[[sites.db.targets]]\nkind = "StatefulSet"\nname = "db"\n'
    )
    (tmp_path / "sites.toml").write_text(QUIET_SCHEDULE + sites_toml(world["ns"], extra))
    served = serve(world, tmp_path, proxy)
    try:
        served.wait_for(lambda: served.request("GET", "/readyz")[0] == 200, what="ready")
        served.wait_for(lambda: in_sync(served), what="in sync (the startup sync deployed)")
        sts = apps.read_namespaced_stateful_set("db", world["ns"]).to_dict()
        head = world["gh"].branch_sha("acme/docs", "main")
        image = sts["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image == f"gcr.io/p/docs:{head}"
        assert watch_count(served, "lists") >= 2  # Deployments and StatefulSets of the namespace

        proxy.refuse()
        steady = sync_all(served)
        assert steady["db"]["action"] == "in-sync", steady["db"]
    finally:
        proxy.admit()
        served.stop()
