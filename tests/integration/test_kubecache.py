"""The watch-fed cache (adapters/kubecache.py) on the real kube-apiserver: the initial LIST,
changes and deletions while watching, a watch cut mid-stream and resumed, changes made while the
cache could not reach the API server, 410 Gone on re-watch (a second API server that compacts
etcd every second and has no watch cache), readiness, and threads that end on stop()."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import kubernetes
import pytest

from reconciler.adapters.kube import KubeCluster
from reconciler.adapters.kubecache import CachedCluster, KubeCache, deployment_cache
from reconciler.core.config import sites as config
from reconciler.core.errors import ErrorKind
from reconciler.core.model import NamespaceError, ObservedDeployment, SyncRequest
from reconciler.core.ports import Cluster, WorkloadCache
from reconciler.core.watch import Backoff
from reconciler.sync.engine import Engine
from testkit.controlplane import ControlPlane, impersonating_api_client
from testkit.deployments import create_deployment, get_deployment
from testkit.tcpproxy import TcpProxy
from testkit.wait import stays, wait_until
from tests.fakes import FakeHeads, FakeVerifier

FAST = Backoff(base=0.1, cap=0.5)


def _client_through(plane: ControlPlane, proxy: TcpProxy) -> kubernetes.client.ApiClient:
    api = plane.api_client()
    api.configuration.host = f"https://127.0.0.1:{proxy.port}"
    return api


@pytest.fixture
def proxy(control_plane: ControlPlane) -> Iterator[TcpProxy]:
    with TcpProxy("127.0.0.1", urlparse(control_plane.host).port or 0) as p:
        yield p


@pytest.fixture
def cache_api(control_plane: ControlPlane, proxy: TcpProxy) -> Iterator[Any]:
    with _client_through(control_plane, proxy) as api:
        yield api


def _ns(name: str) -> kubernetes.client.V1Namespace:
    return kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=name))


def _set_image(api: Any, namespace: str, name: str, image: str) -> None:
    body = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}}
    kubernetes.client.AppsV1Api(api).patch_namespaced_deployment(name, namespace, body)


def _delete(api: Any, namespace: str, name: str) -> None:
    kubernetes.client.AppsV1Api(api).delete_namespaced_deployment(name, namespace)


def _image(cache: KubeCache[ObservedDeployment], namespace: str, name: str) -> str | None:
    d = cache.get(namespace, name)
    return None if d is None else next(c.image for c in d.containers if c.name == "app")


def _cache_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("kubecache-")]


def test_lists_like_the_sync_then_follows_changes_and_deletions(
    kube_api_client: Any, cache_api: Any, k8s_namespace: str
) -> None:
    ns = k8s_namespace
    create_deployment(kube_api_client, ns, "a", "img/a:1")
    create_deployment(kube_api_client, ns, "b", "img/b:1")
    heard: list[tuple[str, str, ObservedDeployment | None]] = []
    with deployment_cache(cache_api, [ns], backoff=FAST) as cache:
        port: WorkloadCache = cache  # the port serve and the follower would read
        port.subscribe(lambda n, name, v: heard.append((n, name, v)))
        wait_until(lambda: cache.synced, "the cache to list")
        assert cache.failing_for(ns) is None
        # the same values as the sync's LIST per namespace
        assert cache.observe([ns]) == KubeCluster(kube_api_client).observe([ns])

        seen = cache.version
        _set_image(kube_api_client, ns, "a", "img/a:2")
        assert cache.wait_for_change(seen, timeout=10) > seen
        assert cache.wait_until(lambda: _image(cache, ns, "a") == "img/a:2", 10)
        fresh = KubeCluster(kube_api_client).read(ns, "a")
        assert cache.get(ns, "a") == fresh

        _delete(kube_api_client, ns, "b")
        assert cache.wait_until(lambda: cache.get(ns, "b") is None, 10)
        view = cache.observe([ns])[ns]
        assert not isinstance(view, NamespaceError) and sorted(view) == ["a"]
        wait_until(lambda: (ns, "b", None) in heard, "the subscriber to hear of the deletion")
        assert cache.stats.lists == 1 and cache.stats.relists == 0
    assert _cache_threads() == []


def test_not_synced_until_every_namespace_has_listed(
    kube_api_client: Any, cache_api: Any, proxy: TcpProxy, k8s_namespace: str
) -> None:
    other = f"{k8s_namespace[:50]}-b"
    kubernetes.client.CoreV1Api(kube_api_client).create_namespace(_ns(other))
    create_deployment(kube_api_client, other, "c", "img/c:1")
    proxy.refuse()
    with deployment_cache(cache_api, [k8s_namespace, other], backoff=FAST) as cache:
        wait_until(lambda: cache.stats.reconnects >= 2, "the cache to fail to list")
        assert not cache.synced
        views = cache.observe([k8s_namespace, other])
        assert all(isinstance(v, NamespaceError) for v in views.values()), views
        assert "unreachable" in str(views[other])
        proxy.admit()
        wait_until(lambda: cache.synced, "the cache to list both namespaces")
        views = cache.observe([k8s_namespace, other])
        seen = views[other]
        assert views[k8s_namespace] == {}
        assert not isinstance(seen, NamespaceError) and sorted(seen) == ["c"]
        unwatched = cache.observe(["elsewhere"])["elsewhere"]
        assert isinstance(unwatched, NamespaceError) and "not watched" in unwatched.reason


def _grant_list_watch(api: Any, namespace: str, sa_name: str) -> None:
    k8s = kubernetes.client
    rbac = k8s.RbacAuthorizationV1Api(api)
    rule = k8s.V1PolicyRule(api_groups=["apps"], resources=["deployments"], verbs=["list", "watch"])
    meta = k8s.V1ObjectMeta(name="cache-reader")
    rbac.create_namespaced_role(namespace, k8s.V1Role(metadata=meta, rules=[rule]))
    ref = k8s.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="cache-reader")
    subject = k8s.RbacV1Subject(kind="ServiceAccount", name=sa_name, namespace=namespace)
    rbac.create_namespaced_role_binding(
        namespace, k8s.V1RoleBinding(metadata=meta, role_ref=ref, subjects=[subject])
    )


def test_a_forbidden_namespace_is_its_own_failure_and_keeps_the_cache_unready(
    control_plane: ControlPlane, kube_api_client: Any, k8s_namespace: str
) -> None:
    allowed, denied = k8s_namespace, f"{k8s_namespace[:50]}-denied"
    kubernetes.client.CoreV1Api(kube_api_client).create_namespace(_ns(denied))
    _grant_list_watch(kube_api_client, allowed, "cache-reader")
    create_deployment(kube_api_client, allowed, "a", "img/a:1")
    with (
        impersonating_api_client(control_plane, allowed, "cache-reader") as api,
        deployment_cache(api, [allowed, denied], backoff=FAST) as cache,
    ):
        wait_until(
            lambda: not isinstance(cache.observe([allowed])[allowed], NamespaceError),
            "the allowed namespace to list",
        )

        def forbidden() -> bool:
            view = cache.observe([denied])[denied]
            return isinstance(view, NamespaceError) and view.kind is ErrorKind.FORBIDDEN

        wait_until(forbidden, "the denied namespace to say it is forbidden")
        view = cache.observe([denied])[denied]
        assert isinstance(view, NamespaceError) and "forbidden by RBAC" in view.reason
        assert not cache.synced
        _set_image(kube_api_client, allowed, "a", "img/a:2")
        assert cache.wait_until(lambda: _image(cache, allowed, "a") == "img/a:2", 10)


def test_namespaces_added_and_dropped_while_running(
    kube_api_client: Any, cache_api: Any, k8s_namespace: str
) -> None:
    first, second = k8s_namespace, f"{k8s_namespace[:50]}-2"
    kubernetes.client.CoreV1Api(kube_api_client).create_namespace(_ns(second))
    create_deployment(kube_api_client, first, "a", "img/a:1")
    create_deployment(kube_api_client, second, "b", "img/b:1")
    with deployment_cache(cache_api, [first], backoff=FAST) as cache:
        wait_until(lambda: cache.synced, "the first namespace to list")
        assert _cache_threads() == [f"kubecache-{first}"]
        cache.set_namespaces([first, second])
        wait_until(lambda: cache.synced, "the added namespace to list")
        assert _image(cache, second, "b") == "img/b:1"
        cache.set_namespaces([second])
        assert _cache_threads() == [f"kubecache-{second}"]
        dropped = cache.observe([first])[first]
        assert isinstance(dropped, NamespaceError) and "not watched" in dropped.reason
        _set_image(kube_api_client, second, "b", "img/b:2")
        assert cache.wait_until(lambda: _image(cache, second, "b") == "img/b:2", 10)
    assert _cache_threads() == []


def test_a_quiet_watch_is_not_cut_by_the_timeout_for_its_headers(
    cache_api: Any, k8s_namespace: str
) -> None:
    # headers within 1 s; then nothing is said for the watch's 4 s: no read may time out
    options: dict[str, Any] = {"open_timeout": (5.0, 1.0), "watch_seconds": (4, 4)}
    with deployment_cache(cache_api, [k8s_namespace], backoff=FAST, **options) as cache:
        wait_until(lambda: cache.synced, "the cache to list")
        stays(lambda: cache.stats.reconnects == 0, 6, "a quiet watch was cut as dead")
        assert cache.stats.watches >= 2  # ran its course and was renewed


def test_a_watch_cut_mid_stream_resumes_from_its_resource_version(
    kube_api_client: Any, cache_api: Any, proxy: TcpProxy, k8s_namespace: str
) -> None:
    ns = k8s_namespace
    create_deployment(kube_api_client, ns, "a", "img/a:1")
    with deployment_cache(cache_api, [ns], backoff=FAST) as cache:
        wait_until(lambda: cache.synced and proxy.live >= 1, "the watch to open")
        proxy.sever()
        wait_until(lambda: cache.stats.watches >= 2, "the cache to watch again")
        _set_image(kube_api_client, ns, "a", "img/a:2")
        assert cache.wait_until(lambda: _image(cache, ns, "a") == "img/a:2", 10)
        assert cache.stats.lists == 1, "resumed from its resourceVersion, no re-list"
        assert cache.stats.relists == 0


def test_changes_made_while_disconnected_are_seen_after_reconnecting(
    kube_api_client: Any, cache_api: Any, proxy: TcpProxy, k8s_namespace: str
) -> None:
    ns = k8s_namespace
    create_deployment(kube_api_client, ns, "a", "img/a:1")
    create_deployment(kube_api_client, ns, "b", "img/b:1")
    with deployment_cache(cache_api, [ns], backoff=FAST) as cache:
        wait_until(lambda: cache.synced and proxy.live >= 1, "the watch to open")
        proxy.refuse()
        wait_until(lambda: cache.stats.reconnects >= 1, "the cache to lose the API server")
        assert (cache.failing_for(ns) or -1) >= 0
        _set_image(kube_api_client, ns, "a", "img/a:2")
        _delete(kube_api_client, ns, "b")
        assert _image(cache, ns, "a") == "img/a:1"  # it cannot know yet
        proxy.admit()
        assert cache.wait_until(
            lambda: _image(cache, ns, "a") == "img/a:2" and cache.get(ns, "b") is None, 15
        )
        assert cache.failing_for(ns) is None
        assert cache.stats.lists == 1 and cache.stats.relists == 0


@pytest.fixture(scope="module")
def compacting_plane(control_plane_binaries: Path) -> Iterator[ControlPlane]:
    """An API server without a watch cache that compacts etcd every second: a watch resumed
    from a resourceVersion older than the last compaction is answered 410 Gone."""
    args = ["--watch-cache=false", "--etcd-compaction-interval=1s"]
    with ControlPlane(bin_dir=control_plane_binaries, extra_apiserver_args=args) as plane:
        yield plane


def _compacted(plane: ControlPlane, namespace: str, version: str) -> bool:
    path = (
        f"/apis/apps/v1/namespaces/{namespace}/deployments"
        f"?watch=1&resourceVersion={version}&timeoutSeconds=1"
    )
    status, body = plane.raw_get(path)
    return status == 410 or '"code":410' in body


def test_gone_on_rewatch_relists_and_reports_what_changed(
    compacting_plane: ControlPlane,
) -> None:
    plane = compacting_plane
    ns = f"gone-{uuid.uuid4().hex[:6]}"
    with plane.api_client() as admin, TcpProxy("127.0.0.1", plane.port) as proxy:
        kubernetes.client.CoreV1Api(admin).create_namespace(_ns(ns))
        create_deployment(admin, ns, "a", "img/a:1")
        create_deployment(admin, ns, "b", "img/b:1")
        heard: list[tuple[str, ObservedDeployment | None]] = []
        with (
            _client_through(plane, proxy) as api,
            deployment_cache(api, [ns], backoff=FAST, watch_seconds=(60, 60)) as cache,
        ):
            cache.subscribe(lambda _n, name, v: heard.append((name, v)))
            wait_until(lambda: cache.synced and proxy.live >= 1, "the watch to open")
            proxy.refuse()
            wait_until(lambda: cache.stats.reconnects >= 1, "the cache to lose the API server")
            version = cache.resource_version(ns)
            _set_image(admin, ns, "a", "img/a:2")
            _delete(admin, ns, "b")
            create_deployment(admin, ns, "c", "img/c:1")
            wait_until(lambda: _compacted(plane, ns, version), "etcd to compact", timeout=30)
            proxy.admit()
            assert cache.wait_until(lambda: cache.stats.relists >= 1, 20)
            assert cache.wait_until(lambda: cache.get(ns, "c") is not None, 10)
            assert _image(cache, ns, "a") == "img/a:2"
            assert cache.get(ns, "b") is None
            assert cache.stats.lists >= 2
            names = [name for name, _ in heard]
            assert ("b", None) in heard and "a" in names and "c" in names
    assert _cache_threads() == []


def test_stop_ends_every_thread_even_while_backing_off(
    cache_api: Any, proxy: TcpProxy, k8s_namespace: str
) -> None:
    namespaces = [k8s_namespace, f"{k8s_namespace[:50]}-x", f"{k8s_namespace[:50]}-y"]
    cache = deployment_cache(cache_api, namespaces, backoff=Backoff(base=30, cap=60))
    cache.start()
    wait_until(lambda: cache.synced and proxy.live >= 3, "three watches to open")
    assert len(_cache_threads()) == 3
    cache.stop()  # raises if a thread is still alive after its timeout
    assert _cache_threads() == []

    proxy.refuse()
    cache = deployment_cache(cache_api, namespaces, backoff=Backoff(base=30, cap=60))
    cache.start()
    wait_until(lambda: cache.stats.reconnects >= 3, "every namespace to back off")
    cache.stop()
    assert _cache_threads() == []


def test_a_sync_planned_on_a_stale_cache_meets_a_conflict_and_writes_right(
    kube_api_client: Any, cache_api: Any, proxy: TcpProxy, k8s_namespace: str
) -> None:
    ns = k8s_namespace
    create_deployment(kube_api_client, ns, "blog", "gcr.io/p/blog:old")
    cfg = config.parse(
        f'[defaults]\nnamespace = "{ns}"\nimage = "gcr.io/p/{{repo}}:{{sha}}"\n'
        'verify = "none"\n\n[sites.blog]\nrepo = "acme/blog"\ncontainer = "app"\n'
    )
    heads = FakeHeads()
    heads.set("acme/blog", None, "1" * 40)
    with deployment_cache(cache_api, [ns], backoff=FAST) as cache:
        wait_until(lambda: cache.synced and proxy.live >= 1, "the watch to open")
        proxy.refuse()  # the cache stops hearing: what it holds goes stale
        wait_until(lambda: cache.stats.reconnects >= 1, "the cache to lose the API server")
        stale = cache.get(ns, "blog")
        assert stale is not None
        # someone else changes the Deployment meanwhile (not its image)
        kubernetes.client.AppsV1Api(kube_api_client).patch_namespaced_deployment(
            "blog", ns, {"metadata": {"labels": {"team": "web"}}}
        )
        port: Cluster = CachedCluster(cache, KubeCluster(kube_api_client))
        engine = Engine(heads=heads, cluster=port, verifier=FakeVerifier())
        engine.conflict_pause = lambda attempt: 0.0
        report = engine.run(cfg, SyncRequest(trigger="test"))

        (result,) = report.results
        assert result.ok and result.applied, result.as_dict()
        live = KubeCluster(kube_api_client).read(ns, "blog")
        assert live is not None and live.resource_version != stale.resource_version
        images = {c.name: c.image for c in live.containers}
        assert images["app"] == "gcr.io/p/blog:" + "1" * 40
        raw = get_deployment(kube_api_client, ns, "blog")
        assert raw["metadata"]["labels"].get("team") == "web", "the other change is kept"
        assert _image(cache, ns, "blog") == "gcr.io/p/blog:old", "planned on a stale cache"
