"""The small Protocols the core talks to; the adapters (GitHub, Kubernetes, registry) fit them."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Protocol

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

__all__ = ["Cluster", "HeadSource", "ImageVerifier", "RateLimit", "VerifyRequest"]


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


class ImageVerifier(Protocol):
    """Tells whether target images exist (registry) or their commit's checks passed."""

    def verify(
        self, requests: Collection[VerifyRequest]
    ) -> Mapping[VerifyRequest, ImageStatus]: ...
