"""Plain values shared by every layer: sites, branch heads, observed Deployments, plans."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from reconciler.core.errors import ErrorKind


@dataclass(frozen=True, slots=True)
class Site:
    """One site from sites.toml, with defaults already applied."""

    name: str
    repo: str
    branch: str | None
    namespace: str
    deployment: str
    container: str | None
    image: str
    paused: bool = False
    verify: str = "registry"
    line: int | None = None
    pin_digest: bool = True  # deploy image:tag@digest when the registry answered a digest
    required_checks: tuple[str, ...] = ()  # verify = "checks": these must have passed
    rollout_timeout: int | None = None  # seconds; None = the Deployment's progressDeadlineSeconds

    @property
    def owner(self) -> str:
        return self.repo.split("/", 1)[0]

    @property
    def repo_name(self) -> str:
        return self.repo.split("/", 1)[1]

    @property
    def ref(self) -> RepoRef:
        return RepoRef(self.repo, self.branch)


@dataclass(frozen=True, slots=True)
class RepoRef:
    """A repository and branch to resolve; branch None means the repository's default branch."""

    repo: str
    branch: str | None

    def __str__(self) -> str:
        return f"{self.repo}@{self.branch or '(default branch)'}"


@dataclass(frozen=True, slots=True)
class CommitState:
    """A commit of a branch's recent history and its checks' combined state as GitHub rolls
    them up (SUCCESS, PENDING, FAILURE, ERROR, EXPECTED; None when it has none)."""

    sha: str
    checks: str | None = None


@dataclass(frozen=True, slots=True)
class BranchHead:
    """The commit a branch points at, as GitHub reported it, and (when asked for) its recent
    first-parent history, newest first, starting with the head itself."""

    repo: str
    branch: str
    sha: str
    history: tuple[CommitState, ...] = field(default=(), compare=False)  # derived from sha


@dataclass(frozen=True, slots=True)
class HeadError:
    """Why a branch head could not be resolved, and which kind of failure it is."""

    reason: str
    kind: ErrorKind = ErrorKind.GITHUB


HeadResult = BranchHead | HeadError


@dataclass(frozen=True, slots=True)
class Container:
    name: str
    image: str


@dataclass(frozen=True, slots=True)
class FieldOwner:
    """Who last set a field, from the Deployment's managedFields: manager, Update|Apply, when."""

    manager: str
    operation: str = "Update"
    time: str = ""


@dataclass(frozen=True, slots=True)
class DeploymentStatus:
    """The Deployment's rollout status as its controller reports it."""

    observed_generation: int = 0
    desired: int = 1  # spec.replicas
    replicas: int = 0  # status.replicas: pods of every revision
    updated: int = 0
    ready: int = 0
    available: int = 0
    deadline_exceeded: bool = False
    message: str = ""  # the Progressing condition's message
    progress_deadline_seconds: int = 600


@dataclass(frozen=True, slots=True)
class ObservedDeployment:
    """What the API server says a Deployment runs, reduced to what planning needs."""

    namespace: str
    name: str
    containers: tuple[Container, ...]
    init_containers: tuple[Container, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    resource_version: str = ""
    uid: str = ""
    generation: int = 0
    status: DeploymentStatus | None = None  # None: no controller has reported on it yet
    image_owners: Mapping[str, FieldOwner] = field(default_factory=dict)  # by container name
    selector: Mapping[str, str] = field(default_factory=dict)  # spec.selector.matchLabels


@dataclass(frozen=True, slots=True)
class NamespaceError:
    """A namespace whose Deployments could not be listed."""

    reason: str
    kind: ErrorKind = ErrorKind.KUBERNETES


NamespaceView = Mapping[str, ObservedDeployment] | NamespaceError


class Action(StrEnum):
    UPDATE = "update"
    IN_SYNC = "in-sync"
    SKIP = "skip"
    HELD = "held"  # a person changed the image, or `reconciler hold`: left alone
    ROLLED_BACK = "rolled-back"  # its rollout failed: back to the image before it
    ERROR = "error"


class Rollout(StrEnum):
    """The observed rollout state of a site's Deployment."""

    PROGRESSING = "progressing"
    AVAILABLE = "available"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Note:
    """An Event to record on the Deployment."""

    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class DeploymentPatch:
    """A write to one Deployment: maybe one container's image, annotations under reconciler.dev/
    (None removes one), and Events; guarded by the resourceVersion it was planned against."""

    namespace: str
    deployment: str
    annotations: Mapping[str, str | None]
    container: str | None = None
    image: str | None = None
    change_cause: str | None = None
    events: tuple[Note, ...] = ()
    resource_version: str = ""


class Skip(StrEnum):
    """Why a site was skipped (its action is SKIP)."""

    PAUSED = "paused"  # in sites.toml or by the Deployment's annotation
    IMAGE_MISSING = "image_missing"  # the target image is not there (yet)
    CHECKS_PENDING = "checks_pending"  # verify = "checks": checks still running or not reported
    SHUTTING_DOWN = "shutting_down"  # the reconciler stopped before patching it
    FAILED_COMMIT = "failed_commit"  # the branch head's rollout failed and was rolled back


class SiteState(StrEnum):
    """What an operator wants to know about a site at a glance."""

    IN_SYNC = "in-sync"
    BEHIND = "behind"
    FAILING = "failing"
    PAUSED = "paused"
    HELD = "held"
    ROLLED_BACK = "rolled-back"  # runs the image from before a failed rollout
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class ImageStatus:
    """Whether a target image may be rolled out: True, False (not yet: skip) or None (fail).

    `digest` is the manifest digest the registry answered (the index's for a multi-platform
    image); `kind` says why it failed.
    """

    exists: bool | None
    reason: str = ""
    digest: str | None = None
    kind: ErrorKind | None = None


@dataclass(frozen=True, slots=True)
class VerifyRequest:
    """A target image to check before rollout, with the commit it was built from.

    Two sites sharing an image but verifying it differently are two requests.
    """

    image: str
    repo: str
    sha: str
    mode: str
    required_checks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SitePlan:
    """The planner's verdict for one site."""

    site: Site
    action: Action
    reason: str = ""
    branch: str | None = None
    sha: str | None = None  # the commit the plan targets: the head, or an older ready one
    container: str | None = None
    current_image: str | None = None
    target_image: str | None = None
    resource_version: str = ""
    error_kind: ErrorKind | None = None
    skip: Skip | None = None
    running_sha: str | None = None  # the commit the Deployment runs, as last recorded
    changed_at: str | None = None  # when the reconciler last changed it (annotation)
    notified: str | None = None  # what was last notified about it (annotation, JSON)
    rollout: Rollout | None = None
    progress: str = ""  # e.g. "2/3 ready"
    held_by: str | None = None
    held_at: str | None = None
    failed_sha: str | None = None  # a commit remembered as bad on the Deployment
    fallback: str = ""  # why an older commit than the head is the target (core/fallback.py)
    write: DeploymentPatch | None = None  # what a rolled-back / held verdict writes
    clear: tuple[str, ...] = ()  # hold annotations an update removes (the branch moved on)
    head_sha: str | None = None  # the branch head (differs from sha during a fallback)

    @property
    def ok(self) -> bool:
        return self.action is not Action.ERROR

    def state(self, *, applied: bool = False) -> SiteState:
        """The site's state from the verdict's action and typed cause, never from its reason."""
        if self.action is Action.ERROR:
            return SiteState.FAILING
        if self.action is Action.HELD:
            return SiteState.HELD
        if self.action is Action.ROLLED_BACK or self.skip is Skip.FAILED_COMMIT:
            return SiteState.ROLLED_BACK
        if self.action is Action.IN_SYNC or applied:
            return SiteState.IN_SYNC
        if self.action is Action.SKIP and self.skip is Skip.PAUSED:
            return SiteState.PAUSED
        return SiteState.BEHIND


@dataclass(frozen=True, slots=True)
class Plan:
    """A plan value: one SitePlan per site, in config order."""

    sites: tuple[SitePlan, ...]

    @property
    def updates(self) -> tuple[SitePlan, ...]:
        return tuple(p for p in self.sites if p.action is Action.UPDATE)


@dataclass(frozen=True, slots=True)
class ImageChange:
    """One container image change the applier must make, with what to record about it."""

    namespace: str
    deployment: str
    container: str
    image: str
    previous_image: str
    repo: str
    branch: str
    sha: str
    resource_version: str = ""
    previous_sha: str = ""  # the commit previous_image was built from, when known
    clear: tuple[str, ...] = ()  # reconciler.dev/ annotations this update removes (a hold)
    trigger: str = ""  # what asked for the sync that makes it (recorded on the Deployment)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What happened when one ImageChange was sent to the API server."""

    ok: bool
    reason: str = ""
    error_kind: ErrorKind | None = None
    conflict: bool = False
    generation: int | None = None


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The Lease as the cluster has it: who holds it (None: nobody) and the holder's stamps
    (Unix times, by the holder's clock: shown to people, never used to judge expiry)."""

    holder: str | None
    acquired_at: float | None = None
    renewed_at: float | None = None
    duration: int | None = None
    transitions: int = 0

    @property
    def expires_at(self) -> float | None:
        """When the holder's Lease runs out unless renewed (by the holder's clock)."""
        if self.holder is None or self.renewed_at is None or self.duration is None:
            return None
        return self.renewed_at + self.duration
