"""A watch-fed cache of the workloads the reconciler manages: LIST, then WATCH, per namespace.

One thread per namespace lists the kind (paged, as KubeCluster.observe does), then watches from
the list's resourceVersion with allowWatchBookmarks, resuming from the last resourceVersion it
saw whenever the watch ends (the server's timeoutSeconds, a dropped connection). A resume the
API server answers with 410 Gone (its window no longer holds that version: a restart, etcd
compaction) is followed by a fresh LIST, which replaces the namespace's objects and reports
what changed meanwhile. Failures reconnect after a bounded, jittered backoff (core.watch.Backoff).

Only what the reconciler reads is kept: the observed-Deployment value KubeCluster builds, with
the annotations cut to the ones anything reads (core.watch.slim). Readers get a namespace's
objects as the sync's LIST gives them (observe), a change counter to wait on (wait_for_change)
and callbacks (subscribe); it fits core.ports.WorkloadCache. The threads are the cache's own:
start() starts them, set_namespaces() starts and ends them as sites.toml changes, stop() ends
every one of them (it shuts down the sockets their reads block on) and joins them.

CachedCluster is the engine's Cluster port reading the cache and writing through KubeCluster;
serve builds both (wiring.build_process), the CLI does not.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import urllib3
from kubernetes.client.exceptions import ApiException

from reconciler.adapters.kube import (
    LIST_PAGE,
    KubeCluster,
    check_response,
    observed,
    observed_of,
    ping,
    request,
)
from reconciler.core import watch
from reconciler.core.errors import ErrorKind, KubernetesError
from reconciler.core.model import (
    DAEMONSET,
    DEPLOYMENT,
    STATEFULSET,
    ApplyResult,
    ClusterRef,
    DeploymentPatch,
    ImageChange,
    NamespaceError,
    NamespaceView,
    ObservedDeployment,
    Site,
    view_key,
)
from reconciler.core.rollout.history import ReplicaSetRecord

log = logging.getLogger(__name__)

T = TypeVar("T")
Callback = Callable[[str, str, Any], None]


@dataclass(frozen=True)
class Kind(Generic[T]):
    """A kind the cache can hold: where its objects live and the value one becomes."""

    group_version: str  # "apps/v1", or "v1" for the core group
    plural: str  # "deployments"
    reduce: Callable[[Mapping[str, Any]], T]

    def path(self, namespace: str) -> str:
        root = "/api" if "/" not in self.group_version else "/apis"
        return f"{root}/{self.group_version}/namespaces/{namespace}/{self.plural}"


def _slim_deployment(item: Mapping[str, Any]) -> ObservedDeployment:
    return watch.slim(observed(item))


DEPLOYMENTS: Kind[ObservedDeployment] = Kind("apps/v1", "deployments", _slim_deployment)


def _slim_of(kind: str) -> Callable[[Mapping[str, Any]], ObservedDeployment]:
    """A StatefulSet's or DaemonSet's value (their rollout is judged from the object alone; a
    CronJob's needs its Jobs and the clock, so CronJobs are not cached: they are LISTed)."""
    return lambda item: watch.slim(observed_of(kind, item, [], 0.0))


# every kind the cache holds, by the kind's name in sites.toml
CACHED_KINDS: dict[str, Kind[ObservedDeployment]] = {
    DEPLOYMENT: DEPLOYMENTS,
    STATEFULSET: Kind("apps/v1", "statefulsets", _slim_of(STATEFULSET)),
    DAEMONSET: Kind("apps/v1", "daemonsets", _slim_of(DAEMONSET)),
}
BACKOFF = watch.Backoff()
# Opening a watch waits for its headers as long as a LIST waits for its answer; once open, a
# read may wait until the server's own timeoutSeconds (plus a margin) before the connection
# counts as dead. A request being sent cannot be interrupted: with urllib3's retries (3 by
# default) of the connect, STOP_TIMEOUT bounds what stop() may have to wait for.
OPEN_TIMEOUT = (5.0, 30.0)
STOP_TIMEOUT = 60.0
# LISTs answered and parsed at once (each page is up to LIST_PAGE whole objects as JSON, ~17 kB
# a Deployment, until reduced to what is kept): the namespaces' threads take turns, so that the
# first listing of 100 namespaces does not hold all of them parsed at the same time. Watches are
# not bounded.
LISTS_AT_ONCE = 8


class Gone(Exception):
    """The API server no longer has the resourceVersion we resumed from (410): re-list."""


@dataclass
class Stats:
    """What the cache asked the API server, and what it heard (for tests and the benchmark)."""

    lists: int = 0  # LIST requests (pages included)
    watches: int = 0  # WATCH requests
    relists: int = 0  # fresh LISTs after a 410
    reconnects: int = 0  # watches that ended in an error and were retried after a backoff
    events: int = 0  # ADDED / MODIFIED / DELETED applied
    bookmarks: int = 0


@dataclass
class _Namespace(Generic[T]):
    name: str
    stop: threading.Event = field(default_factory=threading.Event)  # set: its thread ends
    thread: threading.Thread | None = None
    objects: dict[str, T] = field(default_factory=dict)
    listed: bool = False
    version: str = ""  # the last resourceVersion applied (a list's, an event's, a bookmark's)
    error: NamespaceError | None = None  # the last failure before the first list
    failing_since: float | None = None  # monotonic time of the first failure since it last read
    response: Any = None  # the watch being read, to shut down on stop()


class KubeCache(Generic[T]):
    """A LIST + WATCH cache of one kind in some namespaces; see the module docstring."""

    def __init__(
        self,
        api: Any,
        namespaces: Collection[str],
        kind: Kind[T],
        *,
        watch_seconds: tuple[int, int] = (300, 600),
        backoff: watch.Backoff = BACKOFF,
        open_timeout: tuple[float, float] = OPEN_TIMEOUT,
        rng: random.Random | None = None,
    ) -> None:
        self.api = api
        self.kind = kind
        self.watch_seconds = watch_seconds
        self.backoff = backoff
        self.open_timeout = open_timeout
        self.stats = Stats()
        self._rng = rng or random.Random()
        self._ns: dict[str, _Namespace[T]] = {n: _Namespace(n) for n in sorted(set(namespaces))}
        self._cond = threading.Condition()
        self._listing = threading.BoundedSemaphore(LISTS_AT_ONCE)
        self._version = 0
        self._callbacks: list[Callback] = []
        self._running = False
        _pool_at_least(api, len(self._ns) + 2)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            if self._running:
                raise RuntimeError("the cache is already started")
            self._running = True
            states = list(self._ns.values())
        for state in states:
            self._start_one(state)

    def _start_one(self, state: _Namespace[T]) -> None:
        state.stop.clear()
        state.thread = threading.Thread(
            target=self._run, args=(state,), name=f"kubecache-{state.name}", daemon=True
        )
        state.thread.start()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """End every thread: no new request starts, the watches being read are shut down (at
        once); a request being sent ends by its own timeout (STOP_TIMEOUT bounds them)."""
        with self._cond:
            self._running = False
            states = list(self._ns.values())
            self._cond.notify_all()
        _end(states, timeout)

    def set_namespaces(self, namespaces: Collection[str], timeout: float = STOP_TIMEOUT) -> None:
        """Watch these namespaces from now on (a reloaded sites.toml): new ones are listed (the
        cache is not synced until they are), dropped ones end their thread and are forgotten."""
        wanted = set(namespaces)
        with self._cond:
            dropped = [s for n, s in self._ns.items() if n not in wanted]
            added = [_Namespace[T](n) for n in sorted(wanted - set(self._ns))]
            for state in dropped:
                del self._ns[state.name]
            self._ns.update((s.name, s) for s in added)
            running = self._running
            self._version += 1
            self._cond.notify_all()
        _pool_at_least(self.api, len(wanted) + 2)
        _end(dropped, timeout)
        if running:
            for state in added:
                self._start_one(state)

    def __enter__(self) -> KubeCache[T]:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- reads ---------------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        with self._cond:
            return all(s.listed for s in self._ns.values())

    @property
    def version(self) -> int:
        with self._cond:
            return self._version

    def observe(self, namespaces: Collection[str]) -> dict[str, Mapping[str, T] | NamespaceError]:
        """Each namespace's objects (a copy), as one LIST per namespace would give them; a
        NamespaceError for one not listed yet or not watched."""
        out: dict[str, Mapping[str, T] | NamespaceError] = {}
        with self._cond:
            for namespace in sorted(set(namespaces)):
                state = self._ns.get(namespace)
                if state is None:
                    out[namespace] = NamespaceError(
                        f"namespace {namespace} is not watched by the cache", ErrorKind.KUBERNETES
                    )
                elif not state.listed:
                    out[namespace] = state.error or NamespaceError(
                        f"the cache has not listed {self.kind.plural} in {namespace} yet",
                        ErrorKind.KUBE_UNREACHABLE,
                    )
                else:
                    out[namespace] = dict(state.objects)
        return out

    def resource_version(self, namespace: str) -> str:
        """The last resourceVersion the namespace's list or watch brought ("" before a list)."""
        with self._cond:
            state = self._ns.get(namespace)
            return "" if state is None else state.version

    def get(self, namespace: str, name: str) -> T | None:
        with self._cond:
            state = self._ns.get(namespace)
            return None if state is None else state.objects.get(name)

    def wait_for_change(self, after: int, timeout: float) -> int:
        with self._cond:
            self._cond.wait_for(lambda: self._version > after or not self._running, timeout)
            return self._version

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until `predicate()` (called under the cache's lock, after each change) holds."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        with self._cond:
            self._callbacks.append(callback)

        def unsubscribe() -> None:
            with self._cond:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return unsubscribe

    # -- the namespace's thread ------------------------------------------------------------------

    def _run(self, state: _Namespace[T]) -> None:
        namespace = state.name
        version: str | None = None
        attempt = 0
        while not state.stop.is_set():
            listed = False
            try:
                if version is None:
                    version, listed = self._list(state), True
                version, too_soon = self._watch(state, version)
                attempt = attempt + 1 if too_soon else 0  # no hot loop on watches cut at once
            except Gone:
                log.info(
                    "%s in %s: version %s is gone, re-listing", self.kind.plural, namespace, version
                )
                self._count("relists")
                version = None
                # a version gone the moment it was listed: back off rather than LIST in a loop
                attempt = attempt + 1 if listed else 0
            except KubernetesError as error:
                attempt += 1
                self._count("reconnects")
                self._failed(state, error)
                log.warning("%s (attempt %d)", error, attempt)
            except Exception:  # never let one namespace's thread die: log it, back off, retry
                attempt += 1
                self._count("reconnects")
                log.exception("watching %s in %s failed", self.kind.plural, namespace)
            if attempt:
                state.stop.wait(self.backoff.delay(attempt, self._rng.random()))

    def _count(self, what: str, n: int = 1) -> None:
        with self._cond:
            setattr(self.stats, what, getattr(self.stats, what) + n)

    def _failed(self, state: _Namespace[T], error: KubernetesError) -> None:
        with self._cond:
            if not state.listed:
                state.error = NamespaceError(str(error), error.kind)
            if state.failing_since is None:
                state.failing_since = time.monotonic()

    def failing_for(self, namespace: str) -> float | None:
        """Seconds since the namespace's list or watch started failing (its objects may be stale
        since then: a patch's resourceVersion still guards the write); None while it is read."""
        with self._cond:
            state = self._ns.get(namespace)
            since = None if state is None else state.failing_since
        return None if since is None else time.monotonic() - since

    def _list(self, state: _Namespace[T]) -> str:
        """LIST every page; replace the namespace's objects; the list's resourceVersion."""
        namespace = state.name
        objects: dict[str, T] = {}
        token: str | None = None
        while True:
            self._count("lists")
            with self._listing:  # one of LISTS_AT_ONCE pages in flight and parsed
                page = request(
                    self.api,
                    "GET",
                    self.kind.path(namespace),
                    action=f"list {self.kind.plural} in namespace {namespace}",
                    query={"limit": LIST_PAGE, "continue": token},
                )
                for item in page.pop("items", None) or []:
                    name = str((item.get("metadata") or {}).get("name") or "")
                    objects[name] = self.kind.reduce(item)
            meta = page.get("metadata") or {}
            token = meta.get("continue") or None
            if not token:
                break
        version = str(meta.get("resourceVersion") or "")
        with self._cond:
            changes = watch.relist_changes(state.objects, objects) if state.listed else []
            state.objects, state.listed, state.error = objects, True, None
            state.failing_since = None
            state.version = version
            self._version += 1 + len(changes)
            self._cond.notify_all()
        self._tell(namespace, changes)
        return version

    def _watch(self, state: _Namespace[T], version: str) -> tuple[str, bool]:
        """Watch from `version` until the watch ends: the last version seen, and whether it ended
        too soon (core.watch.ended_too_soon)."""
        seconds = watch.watch_seconds(*self.watch_seconds, self._rng.random())
        started = time.monotonic()
        self._count("watches")
        response = self._open_watch(state.name, version, seconds)
        heard = 0
        with self._cond:
            state.response = response
            state.failing_since = None
        try:
            if state.stop.is_set():
                return version, False
            for event in _events(response):
                heard += 1
                version = self._apply(state, event) or version
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            if state.stop.is_set():
                return version, False
            action = f"watch {self.kind.plural} in {state.name} (cut after {heard} events)"
            raise check_response(exc, action, self.host) from exc
        finally:
            with self._cond:
                state.response = None
            response.release_conn()
        return version, watch.ended_too_soon(heard, time.monotonic() - started, seconds)

    def _open_watch(self, namespace: str, version: str, seconds: int) -> Any:
        action = f"watch {self.kind.plural} in namespace {namespace}"
        query = {
            "watch": "1",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": seconds,
        }
        params = [(k, v) for k, v in query.items()]
        serialized = self.api.param_serialize(
            method="GET",
            resource_path=self.kind.path(namespace),
            query_params=params,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        try:
            wrapped = self.api.call_api(*serialized, _request_timeout=self.open_timeout)
            response = wrapped.response  # the urllib3 response, its body not read yet
            if response.status == 410:
                response.release_conn()
                raise Gone
            if not 200 <= response.status <= 299:
                wrapped.read()
                raise ApiException.from_response(http_resp=wrapped, body=None, data=None)
            _read_timeout(response, seconds + 30.0)
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            raise check_response(exc, action, self.host) from exc
        return response

    def _apply(self, state: _Namespace[T], event: Mapping[str, Any]) -> str:
        namespace = state.name
        kind = event.get("type")
        if watch.is_gone(event):
            raise Gone
        if kind == watch.EventType.ERROR:
            status = event.get("object") or {}
            raise KubernetesError(
                f"watch {self.kind.plural} in {namespace}: the API server answered "
                f"{status.get('code')}: {status.get('message')}",
                status=status.get("code"),
            )
        if kind == watch.EventType.BOOKMARK:
            with self._cond:
                self.stats.bookmarks += 1  # under the lock, as every count
                state.version = watch.event_version(event)
            return watch.event_version(event)
        name = watch.event_name(event)
        value = None if kind == watch.EventType.DELETED else self.kind.reduce(event["object"])
        with self._cond:
            objects = state.objects
            if value is None:
                objects.pop(name, None)
            else:
                objects[name] = value
            state.version = watch.event_version(event)
            self._version += 1
            self.stats.events += 1
            self._cond.notify_all()
        self._tell(namespace, [(name, value)])
        return watch.event_version(event)

    def _tell(self, namespace: str, changes: list[tuple[str, T | None]]) -> None:
        with self._cond:
            callbacks = list(self._callbacks)
        for name, value in changes:
            for callback in callbacks:
                try:
                    callback(namespace, name, value)
                except Exception:
                    log.exception("a cache subscriber failed on %s/%s", namespace, name)

    @property
    def host(self) -> str:
        return str(self.api.configuration.host)


def deployment_cache(
    api: Any, namespaces: Collection[str], **options: Any
) -> KubeCache[ObservedDeployment]:
    """The cache of the Deployments of `namespaces` (options as KubeCache's)."""
    return KubeCache(api, namespaces, DEPLOYMENTS, **options)


class WorkloadCaches:
    """One KubeCache per cached kind (CACHED_KINDS), each over the namespaces that have targets
    of that kind: what serve keeps. Fits core.ports.WorkloadCache for the follower; names its
    subscribers hear are NamespaceView keys (model.view_key: a Deployment's name, else
    "Kind/name")."""

    def __init__(self, client: Callable[[], Any], **options: Any) -> None:
        """`client()` makes an API client: one per kind, so that each pools one connection per
        namespace it watches."""
        self.by_kind: dict[str, KubeCache[ObservedDeployment]] = {
            kind: KubeCache(client(), (), spec, **options) for kind, spec in CACHED_KINDS.items()
        }

    @property
    def deployments(self) -> KubeCache[ObservedDeployment]:
        return self.by_kind[DEPLOYMENT]

    def start(self) -> None:
        for cache in self.by_kind.values():
            cache.start()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        for cache in self.by_kind.values():
            cache.stop(timeout)

    def set_namespaces(self, by_kind: Mapping[str, Collection[str]]) -> None:
        """Watch each kind in these namespaces (a kind not named: in none)."""
        for kind, cache in self.by_kind.items():
            cache.set_namespaces(by_kind.get(kind, ()))

    @property
    def synced(self) -> bool:
        return all(cache.synced for cache in self.by_kind.values())

    def wait_until_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for cache in self.by_kind.values():
            left = max(0.0, deadline - time.monotonic())
            if not cache.wait_until(_synced(cache), left):
                return False
        return True

    def observe(self, namespaces: Collection[str]) -> Mapping[str, NamespaceView]:
        return self.deployments.observe(namespaces)

    @property
    def version(self) -> int:
        return self.deployments.version

    def wait_for_change(self, after: int, timeout: float) -> int:
        return self.deployments.wait_for_change(after, timeout)

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        ends = [cache.subscribe(_keyed(kind, callback)) for kind, cache in self.by_kind.items()]

        def unsubscribe() -> None:
            for end in ends:
                end()

        return unsubscribe

    def counts(self) -> dict[str, int]:
        """Every cache's Stats, summed (reconciler_watch_cache_total)."""
        total: dict[str, int] = {}
        for cache in self.by_kind.values():
            for name, value in vars(cache.stats).items():
                total[name] = total.get(name, 0) + int(value)
        return total


class CachedCluster:
    """The engine's Cluster port with its reads from the cache: observe() asks the API server
    nothing once the cache has listed a namespace (one it has not listed yet, just added by a
    reloaded sites.toml or still failing its first LIST, is read by KubeCluster's LIST, so no
    site waits for the cache). Every write still goes through `cluster` and carries the
    resourceVersion it was planned against, so a stale cache costs a 409 and a fresh read
    (cluster.read), never a wrong write. serve builds one; the CLI keeps KubeCluster's LIST per
    namespace. Everything else (Events, ReplicaSets, notes) is KubeCluster's."""

    def __init__(
        self,
        cache: KubeCache[ObservedDeployment],
        cluster: KubeCluster,
        more: Mapping[str, KubeCache[ObservedDeployment]] | None = None,
    ) -> None:
        self.cache = cache
        self.cluster = cluster
        self.more = dict(more or {})  # the caches of other kinds (StatefulSet, DaemonSet)
        self._fresh = 0  # fresh() blocks under way: observe() LISTs
        self._fresh_lock = threading.Lock()

    @contextlib.contextmanager
    def fresh(self) -> Iterator[None]:
        """Inside it, observe() LISTs as KubeCluster does (core.ports.FreshReads)."""
        with self._fresh_lock:
            self._fresh += 1
        try:
            yield
        finally:
            with self._fresh_lock:
                self._fresh -= 1

    def observe(
        self, namespaces: Collection[str], kinds: Mapping[str, frozenset[str]] | None = None
    ) -> Mapping[str, NamespaceView]:
        """Deployments from the cache (a namespace it could not list, or inside fresh(): by
        LIST); the other kinds from their caches (StatefulSet, DaemonSet) where they have
        listed the namespace, else (CronJobs and their Jobs, a namespace not listed yet) by the
        cluster's LIST per namespace and kind, merged in."""
        if self._fresh:
            return self.cluster.observe(namespaces, kinds)
        views: dict[str, NamespaceView] = dict(self.cache.observe(namespaces))
        unlisted = [ns for ns, view in views.items() if isinstance(view, NamespaceError)]
        if unlisted:
            views.update(self.cluster.observe(unlisted, kinds))
        others = {
            ns: k - {DEPLOYMENT}
            for ns, k in (kinds or {}).items()
            if k - {DEPLOYMENT} and ns not in unlisted
        }
        others = self._from_caches(views, others)
        if not others:
            return views
        for ns, view in self.cluster.observe(set(others), others).items():
            cached = views.get(ns)
            if isinstance(view, NamespaceError) or isinstance(cached, NamespaceError):
                views[ns] = cached if isinstance(cached, NamespaceError) else view
            else:
                views[ns] = {**(cached or {}), **view}
        return views

    def _from_caches(
        self, views: dict[str, NamespaceView], wanted: Mapping[str, frozenset[str]]
    ) -> dict[str, frozenset[str]]:
        """Merge into `views` each wanted kind its cache has listed; what is left to LIST."""
        left: dict[str, frozenset[str]] = {}
        for ns, kinds in wanted.items():
            rest = set(kinds)
            for kind in kinds & set(self.more):
                view = self.more[kind].observe([ns])[ns]
                here = views.get(ns)
                if isinstance(view, NamespaceError) or isinstance(here, NamespaceError):
                    continue
                views[ns] = {**(here or {}), **{view_key(kind, n): d for n, d in view.items()}}
                rest.discard(kind)
            if rest:
                left[ns] = frozenset(rest)
        return left

    def read(self, namespace: str, name: str, kind: str = DEPLOYMENT) -> ObservedDeployment | None:
        return self.cluster.read(namespace, name, kind)

    def apply(self, change: ImageChange, *, dry_run: bool) -> ApplyResult:
        return self.cluster.apply(change, dry_run=dry_run)

    def patch(self, patch: DeploymentPatch, *, dry_run: bool) -> ApplyResult:
        return self.cluster.patch(patch, dry_run=dry_run)

    def pod_troubles(
        self, namespace: str, selector: Mapping[str, str], container: str, image: str
    ) -> tuple[str, ...]:
        return self.cluster.pod_troubles(namespace, selector, container, image)

    def settle(self) -> None:
        self.cluster.settle()

    def replica_sets(self, d: ObservedDeployment) -> list[ReplicaSetRecord]:
        return self.cluster.replica_sets(d)

    def annotate(
        self, namespace: str, deployment: str, key: str, value: str, kind: str = DEPLOYMENT
    ) -> None:
        self.cluster.annotate(namespace, deployment, key, value, kind)

    def __getattr__(self, name: str) -> Any:
        """Whatever else KubeCluster offers (a write, a read of another kind) is its own."""
        if name.startswith("_") or name in ("cache", "cluster", "fresh", "more"):
            raise AttributeError(name)
        return getattr(self.cluster, name)


def _synced(cache: KubeCache[Any]) -> Callable[[], bool]:
    return lambda: cache.synced


def _keyed(kind: str, callback: Callback) -> Callback:
    """`callback` hearing names as NamespaceView keys (model.view_key) of `kind`."""

    def heard(namespace: str, name: str, value: Any) -> None:
        callback(namespace, view_key(kind, name), value)

    return heard


def _events(response: Any) -> Iterator[Mapping[str, Any]]:
    """The watch's events, one JSON object per line, until the server closes the stream."""
    pending = b""
    for chunk in response.stream(65536, decode_content=True):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                yield json.loads(line)
    if pending.strip():
        yield json.loads(pending)


def _end(states: list[_Namespace[Any]], timeout: float) -> None:
    """Stop the namespaces' threads: shut down the watches they read, join them."""
    for state in states:
        state.stop.set()
        response = state.response
        if response is not None:
            _shutdown(response)
    deadline = time.monotonic() + timeout
    for state in states:
        if state.thread is not None:
            state.thread.join(max(0.0, deadline - time.monotonic()))
    alive = [s.thread.name for s in states if s.thread is not None and s.thread.is_alive()]
    if alive:
        raise RuntimeError(f"cache threads did not stop within {timeout}s: {alive}")
    for state in states:
        state.thread = None


def _pool_at_least(api: Any, size: int) -> None:
    """Room in the client's connection pool for one watch per namespace (pools made from now on:
    the client makes one per host when it first connects), so that a watch's connection is kept
    for the next one rather than discarded."""
    api.configuration.connection_pool_maxsize = max(
        api.configuration.connection_pool_maxsize or 0, size
    )
    pool_kw = getattr(getattr(api.rest_client, "pool_manager", None), "connection_pool_kw", None)
    if isinstance(pool_kw, dict):
        pool_kw["maxsize"] = max(pool_kw.get("maxsize") or 0, size)


def _read_timeout(response: Any, seconds: float) -> None:
    """Let the reads of an open watch wait `seconds` (the request's timeout was for its headers)."""
    sock = getattr(response.connection, "sock", None)
    if sock is not None:
        sock.settimeout(seconds)


def _shutdown(response: Any) -> None:
    """Unblock a read of `response` from another thread (urllib3 >= 2.3)."""
    try:
        response.shutdown()
    except Exception:  # already closed: nothing to unblock
        log.debug("shutting down a watch failed", exc_info=True)


class ClusterCaches:
    """serve's watch-fed caches of the named clusters ([clusters.NAME]): each one's port is a
    CachedCluster over WorkloadCaches of its own, watching the namespaces of that cluster's
    sites (`follow`, at each sites.toml read). A namespace not listed yet, and a cluster that
    cannot be reached, are read by LIST, so no site waits for the cache and a failing cluster
    fails its sites only. Clusters (sync.clusters) builds the ports (`connect`) on first use
    and again when the kubeconfig changes; a replaced or dropped one's caches stop."""

    def __init__(
        self,
        client: Callable[[ClusterRef], Any],
        listing: Callable[[ClusterRef], KubeCluster],
    ) -> None:
        self._client = client  # an API client for the cluster, one per kind cached
        self._listing = listing  # the cluster's KubeCluster (LISTs, GETs and every write)
        self._wanted: dict[str, dict[str, set[str]]] = {}  # by cluster: namespaces by kind
        self._live: dict[str, WorkloadCaches] = {}
        self._lock = threading.Lock()

    def connect(self, ref: ClusterRef) -> CachedCluster:
        caches = WorkloadCaches(lambda: self._client(ref))
        listing = self._listing(ref)
        caches.start()
        with self._lock:
            self._live[ref.name] = caches
            caches.set_namespaces(self._wanted.get(ref.name, {}))
        more = {k: c for k, c in caches.by_kind.items() if k != DEPLOYMENT}
        return _ClosingCached(caches, listing, more, lambda: self._forget(ref.name, caches))

    def _forget(self, name: str, caches: WorkloadCaches) -> None:
        with self._lock:
            if self._live.get(name) is caches:
                del self._live[name]
        _stop_later(caches)

    def follow(self, sites: Iterable[Site]) -> None:
        """Watch, in each named cluster, the namespaces of its sites, per kind."""
        wanted: dict[str, dict[str, set[str]]] = {}
        for site in sites:
            if site.cluster is not None:
                kinds = wanted.setdefault(site.cluster.name, {})
                for target in site.targets:
                    kinds.setdefault(target.kind, set()).add(site.namespace)
        with self._lock:
            self._wanted = wanted
            live = list(self._live.items())
        for name, caches in live:  # a dropped namespace's thread may take a while to end
            _quietly(functools.partial(caches.set_namespaces, wanted.get(name, {})))

    def counts(self) -> dict[str, dict[str, int]]:
        """Each named cluster's cache counts (reconciler_cluster_watch_cache_total)."""
        with self._lock:
            return {name: caches.counts() for name, caches in self._live.items()}

    def start(self) -> None:
        """Nothing: each cluster's caches start with its port."""

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        with self._lock:
            live, self._live = list(self._live.values()), {}
        for caches in live:
            _quietly(functools.partial(caches.stop, timeout))


class _ClosingCached(CachedCluster):
    """A named cluster's CachedCluster: closing it (Clusters drops or rebuilds it) stops its
    caches in the background and closes its client."""

    def __init__(
        self,
        caches: WorkloadCaches,
        listing: KubeCluster,
        more: Mapping[str, KubeCache[ObservedDeployment]],
        forget: Callable[[], None],
    ) -> None:
        super().__init__(caches.deployments, listing, more)
        self._caches = caches
        self._forget = forget

    def observe(
        self, namespaces: Collection[str], kinds: Mapping[str, frozenset[str]] | None = None
    ) -> Mapping[str, NamespaceView]:
        """From memory only while the cluster answers (one GET /version a sync) and no watch
        of these namespaces is failing; else by LIST, so that a cluster gone fails its sites,
        naming it, and never looks in sync from what it said before."""
        failing = any(
            cache.failing_for(ns) is not None
            for cache in self._caches.by_kind.values()
            for ns in namespaces
        )
        if failing or ping(self.cluster.api) is not None:
            with self.fresh():
                return super().observe(namespaces, kinds)
        return super().observe(namespaces, kinds)

    def close(self) -> None:
        self._forget()
        close = getattr(self.cluster, "close", None)
        if callable(close):
            close()


def _stop_later(caches: WorkloadCaches) -> None:
    """Stop the caches on a thread of their own: a watch being read may take a while to end,
    and the sync that replaced the port must not wait for it."""
    threading.Thread(
        target=_quietly, args=(caches.stop,), name="kubecache-stop", daemon=True
    ).start()


def _quietly(step: Callable[[], object]) -> None:
    """A named cluster's cache re-scoped or stopped: a thread that would not end is logged (its
    threads are daemons), never an error of the sync or the shutdown that asked."""
    try:
        step()
    except RuntimeError as exc:
        log.warning("a named cluster's workload cache: %s", exc)
