"""The clusters a sync talks to: the home one (where the reconciler runs) and one Cluster port
per [clusters.NAME] of sites.toml, each built on first use and rebuilt when its entry changes.

Each named cluster is its own failure domain: every error that comes through its port names it
('cluster "prod": ...'), whether the cluster cannot be reached, refuses our identity or its
kubeconfig is unusable, so the sites there fail with that reason and the others sync."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from reconciler.core.errors import ErrorKind, ReconcilerError
from reconciler.core.model import (
    DEPLOYMENT,
    ApplyResult,
    ClusterRef,
    DeploymentPatch,
    ImageChange,
    NamespaceError,
    NamespaceView,
    ObservedDeployment,
    Site,
)
from reconciler.core.ports import (
    Cluster,
    FreshReads,
    KindRevisionSource,
    NoteStore,
    RevisionSource,
)
from reconciler.core.workloads import Revision

if TYPE_CHECKING:
    from reconciler.core.rollout.history import ReplicaSetRecord

# Builds the port of a named cluster from its kubeconfig file and context; raises
# ReconcilerError (KUBE_CONFIG) when they are unusable.
Connect = Callable[[ClusterRef], Cluster]
# What the cluster's credentials look like now (its kubeconfig file's identity and times): a
# port built on other ones is rebuilt, so a token rotated in a mounted Secret is used once there.
Stamp = Callable[[ClusterRef], object]


def _unchanging(_ref: ClusterRef) -> object:
    return None


class ClusterError(ReconcilerError):
    """A named cluster failed: the message names it, the kind says how (unreachable, ...)."""

    default_kind = ErrorKind.KUBERNETES


def _unconfigured(ref: ClusterRef) -> Cluster:
    raise ClusterError(
        f"{ref}: this reconciler cannot reach other clusters (no way to connect was given)",
        kind=ErrorKind.KUBE_CONFIG,
    )


class Clusters:
    """The home Cluster and the named ones, built lazily by `connect` and kept by their
    ClusterRef (a changed kubeconfig path or context is a new port; one no longer in sites.toml
    is dropped by keep())."""

    def __init__(
        self, home: Cluster, connect: Connect | None = None, stamp: Stamp = _unchanging
    ) -> None:
        self.home = home
        self._connect = connect or _unconfigured
        self._stamp = stamp
        self._built: dict[ClusterRef, tuple[object, Named]] = {}
        self._lock = threading.Lock()
        self._building = threading.Lock()  # one port built at a time: never two for one cluster

    def of(self, site: Site) -> Cluster:
        """The port of the site's cluster; raises a ClusterError naming it if it cannot be built."""
        return self.get(site.cluster)

    def get(self, ref: ClusterRef | None) -> Cluster:
        if ref is None:
            return self.home
        stamp = self._stamp(ref)
        with self._lock:
            built = self._built.get(ref)
        if built is not None and built[0] == stamp:
            return built[1]
        with self._building:
            with self._lock:
                built = self._built.get(ref)
            if built is not None and built[0] == stamp:  # another thread built it meanwhile
                return built[1]
            try:
                port = Named(ref, self._connect(ref))
            except ReconcilerError as exc:  # not kept: the next use tries again (mounted late)
                raise ClusterError(_named(ref, str(exc)), kind=exc.kind) from exc
            with self._lock:
                self._built[ref] = (stamp, port)
        if built is not None:
            built[1].close()  # its credentials changed: the old client goes
        return port

    @contextlib.contextmanager
    def fresh(self) -> Iterator[None]:
        """Inside it, every cluster whose port reads a watch-fed cache (serve's) LISTs instead:
        a sync of named sites, which someone may have just changed."""
        with self._lock:
            ports = [self.home, *(named.inner for _, named in self._built.values())]
        with contextlib.ExitStack() as stack:
            for port in ports:
                if isinstance(port, FreshReads):
                    stack.enter_context(port.fresh())
            yield

    def port(self, site: Site) -> Cluster | None:
        """The site's cluster port, or None when it cannot be built."""
        try:
            return self.of(site)
        except ReconcilerError:
            return None

    def observe(
        self,
        ref: ClusterRef | None,
        namespaces: Collection[str],
        kinds: Mapping[str, frozenset[str]] | None = None,
    ) -> Mapping[str, NamespaceView]:
        """The namespaces of one cluster (`kinds`: the workload kinds to list in each, as
        Cluster.observe); a cluster that fails (or cannot be built) fails each of them, with
        why."""
        try:
            return self.get(ref).observe(namespaces, kinds)
        except ReconcilerError as exc:
            return {ns: NamespaceError(str(exc), exc.kind) for ns in namespaces}

    def keep(self, refs: Iterable[ClusterRef]) -> None:
        """Forget the ports of clusters not among `refs` (sites.toml no longer names them)."""
        wanted = set(refs)
        with self._lock:
            gone = [self._built.pop(ref)[1] for ref in set(self._built) - wanted]
        for port in gone:
            port.close()

    def settle_for(self, sites: Iterable[Site]) -> None:
        """settle() the cluster of each site (each cluster once; none that cannot be built)."""
        seen: list[Cluster] = []
        for site in sites:
            port = self.port(site)
            if port is not None and not any(port is s for s in seen):
                seen.append(port)
                port.settle()


def group(sites: Iterable[Site]) -> dict[ClusterRef | None, list[Site]]:
    """The sites by cluster (None: home), in the order they come."""
    out: dict[ClusterRef | None, list[Site]] = {}
    for site in sites:
        out.setdefault(site.cluster, []).append(site)
    return out


def _named(ref: ClusterRef, message: str) -> str:
    prefix = f"{ref}: "
    return message if message.startswith(prefix) else prefix + message


class Named:
    """A named cluster's port: the same calls, every error saying which cluster it came from."""

    def __init__(self, ref: ClusterRef, inner: Cluster) -> None:
        self.ref = ref
        self.inner = inner

    def _raise(self, exc: ReconcilerError) -> ClusterError:
        return ClusterError(_named(self.ref, str(exc)), kind=exc.kind)

    def observe(
        self, namespaces: Collection[str], kinds: Mapping[str, frozenset[str]] | None = None
    ) -> Mapping[str, NamespaceView]:
        try:
            views = self.inner.observe(namespaces, kinds)
        except ReconcilerError as exc:
            raise self._raise(exc) from exc
        return {
            ns: NamespaceError(_named(self.ref, v.reason), v.kind)
            if isinstance(v, NamespaceError)
            else v
            for ns, v in views.items()
        }

    def read(self, namespace: str, name: str, kind: str = DEPLOYMENT) -> ObservedDeployment | None:
        try:
            return self.inner.read(namespace, name, kind)
        except ReconcilerError as exc:
            raise self._raise(exc) from exc

    def _result(self, result: ApplyResult) -> ApplyResult:
        if result.ok or result.conflict:
            return result
        return replace(result, reason=_named(self.ref, result.reason))

    def apply(self, change: ImageChange, *, dry_run: bool) -> ApplyResult:
        try:
            return self._result(self.inner.apply(change, dry_run=dry_run))
        except ReconcilerError as exc:
            raise self._raise(exc) from exc

    def patch(self, patch: DeploymentPatch, *, dry_run: bool) -> ApplyResult:
        try:
            return self._result(self.inner.patch(patch, dry_run=dry_run))
        except ReconcilerError as exc:
            raise self._raise(exc) from exc

    def pod_troubles(
        self, namespace: str, selector: Mapping[str, str], container: str, image: str
    ) -> tuple[str, ...]:
        try:
            return self.inner.pod_troubles(namespace, selector, container, image)
        except ReconcilerError as exc:
            raise self._raise(exc) from exc

    def settle(self) -> None:
        self.inner.settle()

    def close(self) -> None:
        """No longer used (dropped from sites.toml, or its credentials changed): its client's
        background threads end once what they were doing is done."""
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()

    def annotate(
        self, namespace: str, deployment: str, key: str, value: str, kind: str = DEPLOYMENT
    ) -> None:
        if not isinstance(self.inner, NoteStore):
            return
        try:
            self.inner.annotate(namespace, deployment, key, value, kind)
        except ReconcilerError as exc:
            raise self._raise(exc) from exc

    def workload_revisions(self, d: ObservedDeployment) -> list[Revision]:
        if not isinstance(self.inner, KindRevisionSource):
            return []
        try:
            return self.inner.workload_revisions(d)
        except ReconcilerError as exc:
            raise self._raise(exc) from exc

    def replica_sets(self, d: ObservedDeployment) -> list[ReplicaSetRecord]:
        if not isinstance(self.inner, RevisionSource):
            return []
        try:
            return self.inner.replica_sets(d)
        except ReconcilerError as exc:
            raise self._raise(exc) from exc
