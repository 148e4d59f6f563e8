"""Every port: the small Protocols the sync layer and serve talk to; the adapters fit them."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from reconciler.core.gitops import FileChange, RepoFile
from reconciler.core.model import (
    ApplyResult,
    DeploymentPatch,
    HeadResult,
    ImageChange,
    ImageStatus,
    NamespaceView,
    ObservedDeployment,
    RepoRef,
    VerifyRequest,
)
from reconciler.core.notify.config import Channel
from reconciler.core.notify.render import Comparison, Notification
from reconciler.core.rollout.history import ReplicaSetRecord
from reconciler.core.writeback import WriteRequest, WriteResult

__all__ = [
    "BackgroundTrigger",
    "Cluster",
    "CommitLog",
    "ConfigRepo",
    "HeadSource",
    "HeaderLookup",
    "ImageVerifier",
    "Lease",
    "NoteStore",
    "RateLimit",
    "RevisionSource",
    "Sender",
    "VerifyRequest",
    "WorkloadCache",
]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """GitHub's primary rate limit as last reported."""

    limit: int
    remaining: int
    reset_epoch: float
    resource: str = "core"


class HeadSource(Protocol):
    """Resolves branch heads; never raises for one repository's failure, it becomes a HeadError."""

    def resolve(self, refs: Collection[RepoRef]) -> Mapping[RepoRef, HeadResult]: ...

    def rate_limits(self) -> Mapping[str, RateLimit]: ...


class Cluster(Protocol):
    """Observes and patches Deployments."""

    def observe(self, namespaces: Collection[str]) -> Mapping[str, NamespaceView]: ...

    def read(self, namespace: str, name: str) -> ObservedDeployment | None:
        """One Deployment, fresh (after a conflict); None when it is gone."""
        ...

    def apply(self, change: ImageChange, *, dry_run: bool) -> ApplyResult:
        """Patch one container's image; a 409 comes back as ApplyResult(conflict=True)."""
        ...

    def patch(self, patch: DeploymentPatch, *, dry_run: bool) -> ApplyResult:
        """A rollback, a hold, a resume: same contract as apply()."""
        ...

    def pod_troubles(
        self, namespace: str, selector: Mapping[str, str], container: str, image: str
    ) -> tuple[str, ...]:
        """Why pods running `image` in `container` are stuck (CrashLoopBackOff, ...); () if not."""
        ...

    def settle(self) -> None:
        """Wait until what patch() left to finish in the background (its Events) is done."""
        ...


class ConfigRepo(Protocol):
    """A GitOps configuration repository (the GitHub adapter gitrepo): read a file, who last
    changed it, write an image into it; raises WriteBackError (that site's) or GitHubError."""

    def read(self, repo: str, ref: str, path: str) -> RepoFile: ...

    def last_change(self, repo: str, branch: str, path: str) -> FileChange | None: ...

    def write(self, req: WriteRequest) -> WriteResult: ...


class ImageVerifier(Protocol):
    """Tells whether target images exist (registry) or their commit's checks passed."""

    def verify(
        self, requests: Collection[VerifyRequest]
    ) -> Mapping[VerifyRequest, ImageStatus]: ...


class Sender(Protocol):
    """Delivers one notification to one channel; raises DeliveryError."""

    def send(self, channel: Channel, notification: Notification) -> None: ...


@runtime_checkable
class CommitLog(Protocol):
    """The commits between two SHAs, in one request; raises ReconcilerError."""

    def compare(self, repo: str, base: str, head: str) -> Comparison: ...


@runtime_checkable
class NoteStore(Protocol):
    """Writes one annotation on a Deployment (a merge patch); raises ReconcilerError."""

    def annotate(self, namespace: str, deployment: str, key: str, value: str) -> None: ...


@runtime_checkable
class RevisionSource(Protocol):
    """Lists a Deployment's ReplicaSets (the Kubernetes adapter)."""

    def replica_sets(self, d: ObservedDeployment) -> list[ReplicaSetRecord]: ...


class Lease(Protocol):
    """One replica at a time: acquire raises (LeaseBusy) while another holds it, and says
    whether another replica may have held it since this one last did."""

    def acquire(self) -> bool: ...

    def renew(self) -> None: ...

    def release(self) -> None: ...


class BackgroundTrigger(Protocol):
    """A trigger with a life of its own (the Pub/Sub subscriber)."""

    def start(self) -> None: ...

    def stop(self, timeout: float) -> None: ...


class HeaderLookup(Protocol):
    """Request headers, looked up by name."""

    def get(self, key: str, default: str) -> str: ...


class WorkloadCache(Protocol):
    """A watch-fed view of the Deployments of some namespaces (the port serve would read instead
    of one LIST per namespace; the follower would wait on it instead of polling)."""

    @property
    def synced(self) -> bool:
        """Every namespace has listed at least once (readiness)."""
        ...

    def observe(self, namespaces: Collection[str]) -> Mapping[str, NamespaceView]:
        """As Cluster.observe: each namespace's Deployments, or why there are none to give."""
        ...

    @property
    def version(self) -> int:
        """Grows by one with every change the cache applies."""
        ...

    def wait_for_change(self, after: int, timeout: float) -> int:
        """Block until `version` passes `after` (or `timeout` seconds); the version then."""
        ...

    def subscribe(
        self, callback: Callable[[str, str, ObservedDeployment | None], None]
    ) -> Callable[[], None]:
        """Call `callback(namespace, name, value or None when deleted)` on every change, from the
        cache's thread; returns the unsubscribe function."""
        ...
