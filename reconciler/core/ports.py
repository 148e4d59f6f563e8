"""Every port: the small Protocols the sync layer and serve talk to; the adapters fit them."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from reconciler.core.gitops import FileChange, RepoFile
from reconciler.core.helmrelease import Revision, Upgraded
from reconciler.core.model import (
    DEPLOYMENT,
    ApplyResult,
    DeploymentPatch,
    HeadResult,
    ImageChange,
    ImageStatus,
    NamespaceView,
    ObservedDeployment,
    RepoRef,
    Site,
    SitePlan,
    VerifyRequest,
)
from reconciler.core.notify.config import Channel
from reconciler.core.notify.render import Comparison, Notification
from reconciler.core.rollout.history import Deploy, ReplicaSetRecord
from reconciler.core.workloads import Revision as Revision_
from reconciler.core.writeback import WriteRequest, WriteResult

__all__ = [
    "BackgroundTrigger",
    "Cluster",
    "CommitLog",
    "ConfigRepo",
    "HeadSource",
    "HeaderLookup",
    "HelmReleases",
    "ImageVerifier",
    "Lease",
    "NoteStore",
    "RateLimit",
    "RevisionSource",
    "Sender",
    "SiteDelivery",
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

    def observe(
        self, namespaces: Collection[str], kinds: Mapping[str, frozenset[str]] | None = None
    ) -> Mapping[str, NamespaceView]:
        """Each namespace's workloads, keyed by model.view_key: one LIST per kind in
        `kinds[namespace]` (None: Deployments only; the engine passes it only when a site has a
        StatefulSet, DaemonSet or CronJob target)."""
        ...

    def read(self, namespace: str, name: str, kind: str = DEPLOYMENT) -> ObservedDeployment | None:
        """One workload, fresh (after a conflict, or to follow it); None when it is gone."""
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

    def annotate(
        self, namespace: str, deployment: str, key: str, value: str, kind: str = DEPLOYMENT
    ) -> None: ...


@runtime_checkable
class KindRevisionSource(Protocol):
    """Lists what a StatefulSet's or DaemonSet's ControllerRevisions, or a CronJob's Jobs, tell
    of its history (the Kubernetes adapter)."""

    def workload_revisions(self, d: ObservedDeployment) -> list[Revision_]: ...


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


@runtime_checkable
class FreshReads(Protocol):
    """A cluster whose observe() may answer from a cache: fresh() makes the reads inside it go to
    the API server (a sync of named sites, just written to by a person or a command)."""

    def fresh(self) -> AbstractContextManager[None]: ...


class HelmReleases(Protocol):
    """Helm releases, read and written with the real helm (adapters/helm.py's HelmCLI); every
    failure is a HelmError with helm's own words and a kind (CONFLICT: the deployed revision is
    not the one planned against)."""

    def history(self, namespace: str, name: str) -> tuple[Revision, ...]: ...

    def values(self, namespace: str, name: str, revision: int) -> Mapping[str, object]: ...

    def manifest(self, namespace: str, name: str, revision: int) -> str: ...

    def upgrade(
        self,
        namespace: str,
        name: str,
        values: Sequence[tuple[str, str]],
        *,
        description: str,
        dry_run: bool = False,
        revision: int | None = None,
    ) -> Upgraded: ...

    def rollback(
        self, namespace: str, name: str, revision: int, *, description: str, expect: int | None
    ) -> Revision: ...


class SiteDelivery(Protocol):
    """A way to deliver a site's image other than patching its Deployment (Site.delivery:
    "helm", "git"); today's patch path is the engine's own, the default. reconciler.sync.delivery
    routes each site to one, and the engine drives every one the same way:

    1. `observe(sites)` reads, per site, everything its verdict needs (the release, the config
       repository's file, the workloads it rolls out, who last changed the image) in as few
       requests as it can; it never raises for one site: that site's entry is a ReconcilerError.
    2. `verdict(site, head, seen, now)` is pure over what observe() read: a SitePlan with the
       same actions and vocabulary as the planner's (core/plan/planner.py). The engine then
       verifies an UPDATE's target like any other (registry or checks; target_image may come
       back pinned to image:tag@digest) and falls back to an older ready commit through
       verdict() again, so it may be called several times per observation.
         - UPDATE: `target_image`, `sha`, `branch`, `current_image`, `running_sha` set;
         - IN_SYNC / SKIP (paused, the head is a commit it rolled back: Skip.FAILED_COMMIT);
         - HELD: a person changed the image behind it (held_by, held_at: as far as the
           delivery's records say), or an explicit `reconciler hold`; `resume` lifts it;
         - ROLLED_BACK: the rollout of its own last deploy failed; `back_to` names what apply()
           returns to, `failed_sha` the commit remembered as bad (level-triggered: the memory
           lives where the delivery writes, never in the reconciler's process);
         - `rollout`/`progress` from the rules of the workload kinds it rolls out.
    3. `apply(plan, dry_run, trigger)` carries out an UPDATE or a ROLLED_BACK verdict: nothing
       is written when dry_run (a server-side dry run where there is one). Failures come back as
       ApplyResult(ok=False, reason, error_kind); conflict=True makes the engine observe this one
       site again and retry. It never waits for the rollout: the engine's follow() calls
       observe + verdict again (every second in serve) and apply() once the rollout failed.
    4. `hold`, `resume`, `rollback` and `history` (newest first) are the commands of the CLI
       and HTTP for one site. rollback goes back to the deploy before the current one, or to
       commit `to` whose image (verified, maybe pinned) is `image`, and holds the site there;
       it answers what it did and the image the site runs then. They raise CommandError or
       ReconcilerError with a message for people.
    5. `workload(plan, seen)` is the workload that carries the site's lead time (core.leadtime),
       its annotations as lead time reads them (None: there is none); its writes (the head's
       record, applied-at, available-at) are plain annotation patches of it."""

    def observe(self, sites: Sequence[Site]) -> Mapping[str, object]: ...

    def verdict(
        self, site: Site, head: HeadResult | None, seen: object, now: float
    ) -> SitePlan: ...

    def apply(self, plan: SitePlan, *, dry_run: bool, trigger: str) -> ApplyResult: ...

    def hold(self, site: Site, *, by: str, reason: str, now: float) -> str: ...

    def resume(self, site: Site, *, by: str, now: float) -> str: ...

    def rollback(
        self, site: Site, *, by: str, to: str | None, image: str | None, now: float
    ) -> tuple[str, str | None]: ...

    def history(self, site: Site) -> list[Deploy]: ...

    def workload(self, plan: SitePlan, seen: object) -> ObservedDeployment | None: ...
