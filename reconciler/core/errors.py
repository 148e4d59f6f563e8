"""The one exception tree and its error kinds; adapters raise these `from` their clients'."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ErrorKind(StrEnum):
    """Why a site failed, as a short stable label (metrics, JSON, the status page)."""

    # config and environment
    CONFIG = "config"
    SETTINGS = "settings"
    # GitHub
    GITHUB = "github"
    AUTH = "auth"
    GITHUB_UNAVAILABLE = "github_unavailable"
    GITHUB_UNREACHABLE = "github_unreachable"
    RATE_LIMITED = "rate_limited"
    REPO_NOT_FOUND = "repo_not_found"
    BRANCH_NOT_FOUND = "branch_not_found"
    BRANCH_RENAMED = "branch_renamed"
    # Kubernetes
    KUBERNETES = "kubernetes"
    KUBE_CONFIG = "kube_config"
    KUBE_AUTH = "kube_auth"
    KUBE_UNREACHABLE = "kube_unreachable"
    FORBIDDEN = "forbidden"
    INVALID = "invalid"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    LEASE = "lease"
    # planning
    DEPLOYMENT_NOT_FOUND = "deployment_not_found"
    CONTAINER_NOT_FOUND = "container_not_found"
    IMAGE_UNVERIFIED = "image_unverified"
    # verification (registries, commit checks)
    REGISTRY = "registry"
    REGISTRY_AUTH = "registry_auth"
    REGISTRY_CREDENTIALS = "registry_credentials"
    REGISTRY_UNREACHABLE = "registry_unreachable"
    CHECKS_FAILED = "checks_failed"
    INTERNAL = "internal"
    # serving
    PUBSUB = "pubsub"
    JOB = "job"
    SHUTTING_DOWN = "shutting_down"
    COMMAND = "command"  # a hold, resume or rollback that cannot be done
    DELIVERY = "delivery"  # a notification could not be delivered
    # writing the image into a configuration repository (GitOps write-back)
    WRITEBACK_YAML = "writeback_yaml"  # the file does not parse
    WRITEBACK_TARGET = "writeback_target"  # the entry, key or container is not in the file
    WRITEBACK_NOT_FOUND = "writeback_not_found"  # no such repository, branch or file
    WRITEBACK_FORBIDDEN = "writeback_forbidden"  # the token may not push
    WRITEBACK_PROTECTED = "writeback_protected"  # the branch refuses direct writes
    WRITEBACK_CONFLICT = "writeback_conflict"  # the file kept moving under us
    # delivering through a Helm release
    HELM = "helm"  # helm failed; the message is helm's
    HELM_MISSING = "helm_missing"  # no helm binary where the settings say
    HELM_RELEASE_NOT_FOUND = "helm_release_not_found"
    HELM_BUSY = "helm_busy"  # another install/upgrade/rollback of the release is in progress
    HELM_TIMEOUT = "helm_timeout"
    HELM_CHART = "helm_chart"  # the deployed chart cannot be rebuilt from the release record


class ReconcilerError(Exception):
    """Base of every error the reconciler raises on purpose; `kind` says which, as an enum."""

    default_kind: ErrorKind = ErrorKind.INTERNAL

    def __init__(self, message: str = "", *, kind: ErrorKind | None = None) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind or self.default_kind


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem found in a config file, located by file, line and site."""

    path: str
    line: int | None
    message: str
    site: str | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        who = f' site "{self.site}":' if self.site else ""
        return f"{where}:{who} {self.message}"


class ConfigError(ReconcilerError):
    """The config file cannot be used; carries every problem found, not just the first."""

    default_kind = ErrorKind.CONFIG

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in problems))


class SitesFileError(ConfigError):
    """An edit of sites.toml was refused and the file left byte-for-byte unchanged."""

    def __init__(self, problems: list[ConfigProblem], headline: str = "") -> None:
        super().__init__(problems)
        self.headline = headline
        if headline:
            self.args = (f"{headline}\n{self.args[0]}" if problems else headline,)


class ConfigUnavailable(ReconcilerError):
    """No valid sites.toml has been read yet."""

    default_kind = ErrorKind.CONFIG


class SettingsError(ReconcilerError):
    """The environment (GITHUB_*, PORT, ...) holds a value that cannot be used."""

    default_kind = ErrorKind.SETTINGS


class GitHubError(ReconcilerError):
    """GitHub could not answer for one or more repositories."""

    default_kind = ErrorKind.GITHUB

    def __init__(
        self, message: str, *, kind: ErrorKind | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, kind=kind)
        self.retry_after = retry_after


class KubernetesError(ReconcilerError):
    """The Kubernetes API server refused or could not be reached."""

    default_kind = ErrorKind.KUBERNETES

    def __init__(
        self, message: str, *, status: int | None = None, kind: ErrorKind | None = None
    ) -> None:
        super().__init__(message, kind=kind)
        self.status = status


class ConflictError(KubernetesError):
    """The object changed under us (HTTP 409): re-read and re-plan."""

    default_kind = ErrorKind.CONFLICT


class LeaseBusy(KubernetesError):
    """Another replica holds the Lease (or took it from us): `holder` names it when known, and
    `remaining` says in how many seconds this replica takes it over unless it is renewed."""

    default_kind = ErrorKind.LEASE

    def __init__(
        self,
        message: str = "",
        *,
        kind: ErrorKind | None = None,
        holder: str | None = None,
        remaining: float | None = None,
    ) -> None:
        super().__init__(message, kind=kind)
        self.status = None
        self.holder = holder
        self.remaining = remaining


class RegistryError(ReconcilerError):
    """A registry, its token service or the credentials for it made one image uncheckable."""

    default_kind = ErrorKind.REGISTRY


class PubSubError(ReconcilerError):
    """The Pub/Sub subscriber could not be started or kept running."""

    default_kind = ErrorKind.PUBSUB


class JobError(ReconcilerError):
    """A Cloud Scheduler message that does not describe a job we can run."""

    default_kind = ErrorKind.JOB


class DeliveryError(ReconcilerError):
    """A notification could not be delivered; `retryable` says whether trying again may help."""

    default_kind = ErrorKind.DELIVERY

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class ShuttingDown(ReconcilerError):
    """The runner no longer takes requests."""

    default_kind = ErrorKind.SHUTTING_DOWN


class CommandError(ReconcilerError):
    """A hold, resume or rollback that cannot be done, and why."""

    default_kind = ErrorKind.COMMAND


class WriteBackError(ReconcilerError):
    """The image cannot be written into the site's configuration repository: that site's
    failure, with a message naming the repository, branch, file and what is wrong."""

    default_kind = ErrorKind.WRITEBACK_TARGET


class HelmError(ReconcilerError):
    """A Helm release cannot be read, upgraded or rolled back: that site's failure, with a
    message naming the release and, when helm failed, helm's own words."""

    default_kind = ErrorKind.HELM
