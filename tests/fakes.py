"""In-memory fakes of the ports, injected through the factory/engine (never monkeypatched)."""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace

from reconciler.core.errors import ErrorKind
from reconciler.core.model import (
    DEPLOYMENT,
    ApplyResult,
    BranchHead,
    DeploymentPatch,
    FieldOwner,
    HeadError,
    HeadResult,
    ImageChange,
    ImageStatus,
    NamespaceError,
    NamespaceView,
    ObservedDeployment,
    RepoRef,
    view_key,
)
from reconciler.core.ports import RateLimit, VerifyRequest
from reconciler.core.rollout import state as rollout


@dataclass
class FakeHeads:
    heads: dict[RepoRef, HeadResult] = field(default_factory=dict)
    calls: list[frozenset[RepoRef]] = field(default_factory=list)

    def set(self, repo: str, branch: str | None, sha: str, resolved: str = "main") -> None:
        self.heads[RepoRef(repo, branch)] = BranchHead(repo, branch or resolved, sha)

    def resolve(self, refs: Collection[RepoRef]) -> Mapping[RepoRef, HeadResult]:
        self.calls.append(frozenset(refs))
        return {
            r: self.heads.get(r, HeadError(f"unknown {r}", ErrorKind.REPO_NOT_FOUND)) for r in refs
        }

    def rate_limits(self) -> Mapping[str, RateLimit]:
        return {}


@dataclass
class FakeCluster:
    deployments: dict[tuple[str, str], ObservedDeployment] = field(default_factory=dict)
    broken_namespaces: dict[str, str] = field(default_factory=dict)
    applied: list[tuple[ImageChange, bool]] = field(default_factory=list)
    conflicts: int = 0
    patch_conflicts: int = 0  # the same for patch(): a busy workload's rollback or merged write
    fail: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    patches: list[DeploymentPatch] = field(default_factory=list)
    troubles: dict[str, tuple[str, ...]] = field(default_factory=dict)  # by deployment name
    now: float = 0.0
    settled: int = 0  # settle() calls: one after each run that patched

    def add(self, d: ObservedDeployment) -> None:
        self.deployments[(d.namespace, d.key)] = d

    def observe(
        self, namespaces: Collection[str], kinds: Mapping[str, frozenset[str]] | None = None
    ) -> Mapping[str, NamespaceView]:
        out: dict[str, NamespaceView] = {}
        for ns in namespaces:
            if ns in self.broken_namespaces:
                out[ns] = NamespaceError(self.broken_namespaces[ns], ErrorKind.FORBIDDEN)
            else:
                out[ns] = {n: d for (dns, n), d in self.deployments.items() if dns == ns}
        return out

    def read(self, namespace: str, name: str, kind: str = DEPLOYMENT) -> ObservedDeployment | None:
        return self.deployments.get((namespace, view_key(kind, name)))

    def apply(self, change: ImageChange, *, dry_run: bool) -> ApplyResult:
        with self.lock:
            if change.deployment in self.fail:
                return ApplyResult(False, self.fail[change.deployment], ErrorKind.INVALID)
            key = (change.namespace, view_key(change.kind, change.deployment))
            current = self.deployments[key]
            if self.conflicts:
                self.conflicts -= 1
                self.deployments[key] = replace(
                    current, resource_version=str(int(current.resource_version or 0) + 1)
                )
                return ApplyResult(False, "conflict", ErrorKind.CONFLICT, conflict=True)
            if change.resource_version and change.resource_version != current.resource_version:
                return ApplyResult(False, "conflict", ErrorKind.CONFLICT, conflict=True)
            self.applied.append((change, dry_run))
            if not dry_run:
                self._write(rollout.update_patch(change, self.now))
            return ApplyResult(True)

    def patch(self, patch: DeploymentPatch, *, dry_run: bool) -> ApplyResult:
        with self.lock:
            key = (patch.namespace, view_key(patch.kind, patch.deployment))
            current = self.deployments[key]
            if self.patch_conflicts and patch.resource_version:
                self.patch_conflicts -= 1
                bumped = str(int(current.resource_version or 0) + 1)
                self.deployments[key] = replace(current, resource_version=bumped)
                return ApplyResult(False, "conflict", ErrorKind.CONFLICT, conflict=True)
            if patch.resource_version and patch.resource_version != current.resource_version:
                return ApplyResult(False, "conflict", ErrorKind.CONFLICT, conflict=True)
            if not dry_run:
                self.patches.append(patch)
                self._write(patch)
            return ApplyResult(True)

    def _write(self, patch: DeploymentPatch) -> None:
        key = (patch.namespace, view_key(patch.kind, patch.deployment))
        current = self.deployments[key]
        notes = dict(current.annotations)
        for k, v in patch.annotations.items():
            if v is None:
                notes.pop(k, None)
            else:
                notes[k] = v
        owners = dict(current.image_owners)
        containers, inits = current.containers, current.init_containers
        for one in patch.images:
            if one.init:
                inits = tuple(
                    replace(c, image=one.image) if c.name == one.container else c for c in inits
                )
            else:
                containers = tuple(
                    replace(c, image=one.image) if c.name == one.container else c
                    for c in containers
                )
            owners[one.container] = FieldOwner(rollout.FIELD_MANAGER)
        changed = (containers, inits) != (current.containers, current.init_containers)
        self.deployments[key] = replace(
            current,
            containers=containers,
            init_containers=inits,
            annotations=notes,
            image_owners=owners,
            generation=current.generation + changed,
            resource_version=str(int(current.resource_version or 0) + 1),
        )

    def pod_troubles(
        self, namespace: str, selector: Mapping[str, str], container: str, image: str
    ) -> tuple[str, ...]:
        return self.troubles.get(namespace + "/" + image, ())

    def settle(self) -> None:
        self.settled += 1


@dataclass
class FakeVerifier:
    missing: set[str] = field(default_factory=set)
    digests: dict[str, str] = field(default_factory=dict)
    seen: list[VerifyRequest] = field(default_factory=list)

    def verify(self, requests: Collection[VerifyRequest]) -> Mapping[VerifyRequest, ImageStatus]:
        self.seen.extend(requests)
        return {
            r: ImageStatus(False, f"image {r.image} missing")
            if r.image in self.missing
            else ImageStatus(True, digest=self.digests.get(r.image))
            for r in requests
        }


class GatedCluster(FakeCluster):
    """A FakeCluster whose first observe() waits until `gate` is set (a run held mid-plan)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def observe(
        self, namespaces: Collection[str], kinds: Mapping[str, frozenset[str]] | None = None
    ) -> Mapping[str, NamespaceView]:
        if not self.entered.is_set():
            self.entered.set()
            self.gate.wait(10)
        return super().observe(namespaces, kinds)
