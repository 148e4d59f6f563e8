"""The environment, read once into a typed frozen Settings value (every variable the README has)."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from reconciler.core.errors import ErrorKind, SettingsError

DEFAULT_GITHUB_API = "https://api.github.com"
GITHUB_STRATEGIES = ("auto", "graphql", "rest")
LOG_FORMATS = ("json", "text")
MIN_TOKEN_BYTES = 32  # bearer tokens: guessing one must be hopeless
OPEN = "open"  # RECONCILER_READ_TOKEN=open: the page, /status and /metrics need no token
MAX_LOOKBACK = 100  # one page of a GraphQL connection


@dataclass(frozen=True, slots=True)
class GitHubSettings:
    """How to reach GitHub: API base, credentials, and how hard to push."""

    api_url: str = DEFAULT_GITHUB_API
    token: str | None = None
    app_id: str | None = None
    app_private_key: str | None = None
    app_installation_id: int | None = None
    timeout: float = 10.0
    concurrency: int = 8
    max_retry_wait: float = 30.0
    strategy: str = "auto"  # auto: GraphQL when authenticated, else REST conditional requests
    lookback: int = 20  # RECONCILER_LOOKBACK: commits of each branch read for a ready one (0: off)

    @property
    def authenticated(self) -> bool:
        return bool(self.token or self.app_id)

    @property
    def web_url(self) -> str:
        """github.com for api.github.com; https://host for GitHub Enterprise's .../api/v3."""
        if "api.github.com" in self.api_url:
            return "https://github.com"
        return self.api_url.split("/api/", 1)[0].rstrip("/")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the process takes from its environment, validated once at start."""

    config_path: str = "sites.toml"  # RECONCILER_CONFIG (--config wins)
    github: GitHubSettings = field(default_factory=GitHubSettings)
    kubeconfig: str | None = None  # KUBECONFIG
    in_cluster: bool = False  # KUBERNETES_SERVICE_HOST is set: use the pod's ServiceAccount
    trigger_token: str | None = None  # RECONCILER_TRIGGER_TOKEN (at least 32 bytes)
    read_token: str | None = None  # RECONCILER_READ_TOKEN (at least 32 bytes; "open": no token)
    reads_open: bool = False  # RECONCILER_READ_TOKEN=open
    pubsub_subscription: str | None = None  # PUBSUB_SUBSCRIPTION
    pubsub_emulator_host: str | None = None  # PUBSUB_EMULATOR_HOST (the client reads it too)
    pubsub_cloud_build_subscription: str | None = None  # PUBSUB_CLOUD_BUILD_SUBSCRIPTION
    pubsub_gcr_subscription: str | None = None  # PUBSUB_GCR_SUBSCRIPTION
    webhook_secret: str | None = None  # GITHUB_WEBHOOK_SECRET: enables POST /hooks/github
    pod_name: str | None = None  # POD_NAME
    pod_namespace: str | None = None  # POD_NAMESPACE
    lease_namespace: str | None = None  # RECONCILER_LEASE_NAMESPACE, else POD_NAMESPACE
    lease_enabled: bool = True  # RECONCILER_LEASE=off disables it
    lease_seconds: int = 60  # RECONCILER_LEASE_SECONDS: renewed every quarter of it
    docker_config: str | None = None  # DOCKER_CONFIG (a directory holding config.json)
    insecure_registries: tuple[str, ...] = ()  # RECONCILER_INSECURE_REGISTRIES, comma-separated
    registry_auth_hosts: tuple[str, ...] = ()  # RECONCILER_REGISTRY_AUTH_HOSTS, comma-separated
    metadata_host: str | None = None  # GCE_METADATA_HOST, else the GKE one inside a cluster
    bind: str = "0.0.0.0"  # BIND (--bind wins)
    port: int = 8080  # PORT (--port wins)
    http_threads: int = 64  # RECONCILER_HTTP_THREADS: requests handled at once
    apply_concurrency: int = 32  # RECONCILER_APPLY_CONCURRENCY: Deployment patches sent at once
    http_connections: int = 1000  # RECONCILER_HTTP_CONNECTIONS: open connections at most
    malloc_arenas: int = 2  # RECONCILER_MALLOC_ARENAS
    log_format: str | None = None  # LOG_FORMAT: json | text (default: text on a terminal)
    log_level: str = "info"  # LOG_LEVEL: info | debug
    user: str | None = None  # USER, else LOGNAME: who runs a CLI command (hold, rollback)
    cli_name: str = "reconciler"  # RECONCILER_CLI_NAME: how the page's hints name the CLI
    # the environment as read at start: notification channels name their secrets' variables
    # in sites.toml ([notify] slack = { webhook_env = "..." }), so they are looked up here
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def identity(self) -> str:
        """This replica's name: the pod's, else the host's."""
        return self.pod_name or socket.gethostname()

    @property
    def subscriptions(self) -> tuple[tuple[str, str], ...]:
        """(kind, subscription) of every Pub/Sub subscription to pull: Cloud Scheduler jobs
        ("scheduler"), Cloud Build ("cloud-build") and Artifact Registry ("gcr") events."""
        kinds = (
            ("scheduler", self.pubsub_subscription),
            ("cloud-build", self.pubsub_cloud_build_subscription),
            ("gcr", self.pubsub_gcr_subscription),
        )
        return tuple((kind, sub) for kind, sub in kinds if sub)

    @property
    def lease_active(self) -> bool:
        return self.lease_enabled and bool(self.lease_namespace)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read and check the environment; a bad value raises SettingsError naming the variable."""
        pod_namespace = env.get("POD_NAMESPACE") or None
        in_cluster = bool(env.get("KUBERNETES_SERVICE_HOST"))
        metadata = env.get("GCE_METADATA_HOST")
        if metadata is None and in_cluster:
            metadata = "metadata.google.internal"
        log_format = env.get("LOG_FORMAT") or None
        read_open = (env.get("RECONCILER_READ_TOKEN") or "").strip() == OPEN
        if log_format is not None and log_format not in LOG_FORMATS:
            raise SettingsError(f"LOG_FORMAT must be json or text, not {log_format!r}")
        return cls(
            config_path=env.get("RECONCILER_CONFIG") or "sites.toml",
            github=_github(env),
            kubeconfig=env.get("KUBECONFIG") or None,
            in_cluster=in_cluster,
            trigger_token=_token(env, "RECONCILER_TRIGGER_TOKEN"),
            read_token=None if read_open else _token(env, "RECONCILER_READ_TOKEN"),
            reads_open=read_open,
            pubsub_subscription=env.get("PUBSUB_SUBSCRIPTION") or None,
            pubsub_emulator_host=env.get("PUBSUB_EMULATOR_HOST") or None,
            pubsub_cloud_build_subscription=env.get("PUBSUB_CLOUD_BUILD_SUBSCRIPTION") or None,
            pubsub_gcr_subscription=env.get("PUBSUB_GCR_SUBSCRIPTION") or None,
            webhook_secret=env.get("GITHUB_WEBHOOK_SECRET") or None,
            pod_name=env.get("POD_NAME") or None,
            pod_namespace=pod_namespace,
            lease_namespace=env.get("RECONCILER_LEASE_NAMESPACE") or pod_namespace,
            lease_enabled=env.get("RECONCILER_LEASE", "on") != "off",
            lease_seconds=_integer(env, "RECONCILER_LEASE_SECONDS", 60),
            docker_config=env.get("DOCKER_CONFIG") or None,
            insecure_registries=_hosts(env, "RECONCILER_INSECURE_REGISTRIES"),
            registry_auth_hosts=_hosts(env, "RECONCILER_REGISTRY_AUTH_HOSTS"),
            metadata_host=metadata,
            bind=env.get("BIND") or "0.0.0.0",
            port=_integer(env, "PORT", 8080),
            http_threads=_integer(env, "RECONCILER_HTTP_THREADS", 64),
            apply_concurrency=_integer(env, "RECONCILER_APPLY_CONCURRENCY", 32),
            http_connections=_integer(env, "RECONCILER_HTTP_CONNECTIONS", 1000),
            malloc_arenas=_integer(env, "RECONCILER_MALLOC_ARENAS", 2),
            log_format=log_format,
            log_level=(env.get("LOG_LEVEL") or "info").lower(),
            user=env.get("USER") or env.get("LOGNAME") or None,
            cli_name=(env.get("RECONCILER_CLI_NAME") or "reconciler").strip(),
            environ=dict(env),
        )


def _hosts(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list of hosts; spaces around the commas and empty entries ignored."""
    return tuple(h.strip() for h in env.get(name, "").split(",") if h.strip())


def _token(env: Mapping[str, str], name: str) -> str | None:
    """A bearer token: unset or empty is None; shorter than MIN_TOKEN_BYTES is refused."""
    value = env.get(name) or None
    if value is not None and len(value.encode()) < MIN_TOKEN_BYTES:
        raise SettingsError(
            f"{name} is {len(value.encode())} bytes; a token must be at least {MIN_TOKEN_BYTES} "
            "bytes (generate one with: openssl rand -hex 32)"
        )
    return value


def _integer(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, not {raw!r}") from None
    if value < 1:
        raise SettingsError(f"{name} must be at least 1, not {value}")
    return value


def _github(env: Mapping[str, str]) -> GitHubSettings:
    """GITHUB_TOKEN, or GITHUB_APP_ID + GITHUB_APP_PRIVATE_KEY[_FILE] + _INSTALLATION_ID."""
    key = env.get("GITHUB_APP_PRIVATE_KEY") or None
    key_file = env.get("GITHUB_APP_PRIVATE_KEY_FILE")
    # Read only for a GitHub App: the manifests always name the file, which exists only when
    # the Secret holds a key.
    if key is None and key_file and env.get("GITHUB_APP_ID"):
        try:
            with open(key_file, encoding="utf-8") as f:
                key = f.read()
        except OSError as exc:
            raise SettingsError(
                f"cannot read GITHUB_APP_PRIVATE_KEY_FILE {key_file}: {exc.strerror}",
                kind=ErrorKind.AUTH,
            ) from exc
    installation = env.get("GITHUB_APP_INSTALLATION_ID")
    app_id = env.get("GITHUB_APP_ID") or None
    if app_id and not (key and installation):
        raise SettingsError(
            "GITHUB_APP_ID is set but GITHUB_APP_PRIVATE_KEY (or _FILE) and "
            "GITHUB_APP_INSTALLATION_ID are not: a GitHub App needs all three",
            kind=ErrorKind.AUTH,
        )
    if installation is not None and not installation.isdigit():
        raise SettingsError("GITHUB_APP_INSTALLATION_ID must be a number", kind=ErrorKind.AUTH)
    strategy = env.get("RECONCILER_GITHUB_STRATEGY") or "auto"
    if strategy not in GITHUB_STRATEGIES:
        raise SettingsError(
            f"RECONCILER_GITHUB_STRATEGY must be one of {', '.join(GITHUB_STRATEGIES)}, "
            f"not {strategy!r}"
        )
    lookback = env.get("RECONCILER_LOOKBACK") or "20"
    if not lookback.isdigit() or int(lookback) > MAX_LOOKBACK:
        raise SettingsError(
            f"RECONCILER_LOOKBACK must be a whole number from 0 to {MAX_LOOKBACK}, not {lookback!r}"
        )
    return GitHubSettings(
        lookback=int(lookback),
        api_url=(env.get("GITHUB_API_URL") or DEFAULT_GITHUB_API).rstrip("/"),
        token=env.get("GITHUB_TOKEN") or None,
        app_id=app_id,
        app_private_key=key,
        app_installation_id=int(installation) if installation else None,
        strategy=strategy,
    )
