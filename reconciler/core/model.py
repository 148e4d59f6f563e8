"""Plain values shared by every layer: sites, branch heads, observed Deployments, plans."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


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
class BranchHead:
    """The commit a branch points at, as GitHub reported it."""

    repo: str
    branch: str
    sha: str


@dataclass(frozen=True, slots=True)
class HeadError:
    """Why a branch head could not be resolved; `kind` is a short stable label for metrics."""

    reason: str
    kind: str = "github"


HeadResult = BranchHead | HeadError


@dataclass(frozen=True, slots=True)
class Container:
    name: str
    image: str


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


@dataclass(frozen=True, slots=True)
class NamespaceError:
    """A namespace whose Deployments could not be listed."""

    reason: str
    kind: str = "kubernetes"


NamespaceView = Mapping[str, ObservedDeployment] | NamespaceError


class Action(StrEnum):
    UPDATE = "update"
    IN_SYNC = "in-sync"
    SKIP = "skip"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class SitePlan:
    """The planner's verdict for one site."""

    site: Site
    action: Action
    reason: str = ""
    branch: str | None = None
    sha: str | None = None
    container: str | None = None
    current_image: str | None = None
    target_image: str | None = None
    resource_version: str = ""
    error_kind: str = ""
    running_sha: str | None = None  # the commit the Deployment runs, as last recorded
    changed_at: str | None = None  # when the reconciler last changed it (annotation)
    notified: str | None = None  # what was last notified about it (annotation, JSON)

    @property
    def ok(self) -> bool:
        return self.action is not Action.ERROR


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


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What happened when one ImageChange was sent to the API server."""

    ok: bool
    reason: str = ""
    error_kind: str = ""
    conflict: bool = False
    generation: int | None = None
