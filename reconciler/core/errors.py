"""The project's own error types; adapters raise these `from` the third-party library's errors."""

from __future__ import annotations

from dataclasses import dataclass


class ReconcilerError(Exception):
    """Base of every error the reconciler raises on purpose."""


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

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in problems))


class GitHubError(ReconcilerError):
    """GitHub could not answer for one or more repositories."""

    def __init__(self, message: str, *, kind: str = "github", retry_after: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


class KubernetesError(ReconcilerError):
    """The Kubernetes API server refused or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None, kind: str = "kubernetes"):
        super().__init__(message)
        self.status = status
        self.kind = kind


class ConflictError(KubernetesError):
    """The object changed under us (HTTP 409): re-read and re-plan."""


class PubSubError(ReconcilerError):
    """The Pub/Sub subscriber could not be started or kept running."""


class SitesFileError(ConfigError):
    """An edit of sites.toml was refused and the file left byte-for-byte unchanged."""

    def __init__(self, problems: list[ConfigProblem], headline: str = "") -> None:
        super().__init__(problems)
        self.headline = headline
        if headline:
            self.args = (f"{headline}\n{self.args[0]}" if problems else headline,)


class DeliveryError(ReconcilerError):
    """A notification could not be delivered; `retryable` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable
