"""The environment, read once into a typed frozen Settings value (every variable the README has)."""

from __future__ import annotations

import ipaddress
import re
import socket
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from reconciler.core.errors import ErrorKind, SettingsError

DEFAULT_GITHUB_API = "https://api.github.com"
GITHUB_STRATEGIES = ("auto", "graphql", "rest")
LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("info", "debug")
MIN_TOKEN_BYTES = 32  # bearer tokens: guessing one must be hopeless
OPEN = "open"  # RECONCILER_READ_TOKEN=open: the page, /status and /metrics need no token
MAX_LOOKBACK = 100  # one page of a GraphQL connection
LEASE_WAIT_MARGIN = 15  # a trigger waits for a dead holder's whole Lease, and this much more
MAX_PORT = 65535
_DIGITS = re.compile(r"[0-9]+")
# upper bounds of the counts: each is far above any use, and below what the machine can give
# (a thread each, a file descriptor each)
MAX_HTTP_THREADS = 1024
MAX_HTTP_CONNECTIONS = 65536
MAX_APPLY_CONCURRENCY = 1024
MAX_MALLOC_ARENAS = 64
MAX_LEASE_SECONDS = 3600
MAX_GITHUB_CONCURRENCY = 100  # GitHub's secondary limit: concurrent requests per caller
# requests in flight at most by default: room below GitHub's 100 for its own count of a request
# that has just been answered and for other users of the token; each GraphQL answer in flight
# holds its parsed history (memory grows with it)
GITHUB_CONCURRENCY = 32
SUBSCRIPTION = re.compile(r"projects/([^/\s]+)/subscriptions/([^/\s]+)")
SUBSCRIPTION_VARIABLES = (
    "PUBSUB_SUBSCRIPTION",
    "PUBSUB_CLOUD_BUILD_SUBSCRIPTION",
    "PUBSUB_GCR_SUBSCRIPTION",
)


@dataclass(frozen=True, slots=True)
class GitHubSettings:
    """How to reach GitHub: API base, credentials, and how hard to push."""

    api_url: str = DEFAULT_GITHUB_API
    token: str | None = None
    app_id: str | None = None
    app_private_key: str | None = None
    app_installation_id: int | None = None
    timeout: float = 10.0
    concurrency: int = 8  # requests in flight at first; grows adaptively up to max_concurrency
    max_concurrency: int = 32  # RECONCILER_GITHUB_CONCURRENCY: GitHub allows 100 at most
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
    # RECONCILER_WATCH_CACHE=off: serve reads Deployments with a LIST per namespace and sync, as
    # the CLI does, instead of keeping them in a LIST + WATCH cache
    watch_cache: bool = True
    lease_seconds: int = 60  # RECONCILER_LEASE_SECONDS: renewed every quarter of it
    # RECONCILER_LEASE_WAIT: how long a trigger waits for the Lease another replica holds before
    # it is answered "queued" (its sync stays queued); default: the Lease and LEASE_WAIT_MARGIN
    lease_wait_seconds: int | None = None
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
    helm_binary: str = "helm"  # RECONCILER_HELM: the helm binary of Helm-delivered sites
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

    @property
    def lease_wait(self) -> float:
        """Seconds a trigger waits for the Lease before its answer says "queued"."""
        return float(self.lease_wait_seconds or self.lease_seconds + LEASE_WAIT_MARGIN)

    def listening(self, bind: str | None, port: int | None) -> Settings:
        """These settings with serve's --bind and --port (they win over BIND and PORT), checked
        like the variables."""
        return replace(
            self,
            bind=self.bind if bind is None else _address(bind, "--bind"),
            port=self.port if port is None else _bounded(port, "--port", MAX_PORT),
        )

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
            raise SettingsError(f"LOG_FORMAT must be json or text, not {_shown(log_format)}")
        log_level = (env.get("LOG_LEVEL") or "info").lower()
        if log_level not in LOG_LEVELS:
            raise SettingsError(f"LOG_LEVEL must be info or debug, not {_shown(log_level)}")
        subscriptions = {name: _subscription(env, name) for name in SUBSCRIPTION_VARIABLES}
        return cls(
            config_path=env.get("RECONCILER_CONFIG") or "sites.toml",
            github=_github(env),
            kubeconfig=env.get("KUBECONFIG") or None,
            in_cluster=in_cluster,
            trigger_token=_token(env, "RECONCILER_TRIGGER_TOKEN"),
            read_token=None if read_open else _token(env, "RECONCILER_READ_TOKEN"),
            reads_open=read_open,
            pubsub_subscription=subscriptions["PUBSUB_SUBSCRIPTION"],
            pubsub_emulator_host=env.get("PUBSUB_EMULATOR_HOST") or None,
            pubsub_cloud_build_subscription=subscriptions["PUBSUB_CLOUD_BUILD_SUBSCRIPTION"],
            pubsub_gcr_subscription=subscriptions["PUBSUB_GCR_SUBSCRIPTION"],
            webhook_secret=env.get("GITHUB_WEBHOOK_SECRET") or None,
            pod_name=env.get("POD_NAME") or None,
            pod_namespace=pod_namespace,
            lease_namespace=env.get("RECONCILER_LEASE_NAMESPACE") or pod_namespace,
            lease_enabled=env.get("RECONCILER_LEASE", "on") != "off",
            watch_cache=_switch(env, "RECONCILER_WATCH_CACHE"),
            lease_seconds=_integer(env, "RECONCILER_LEASE_SECONDS", 60, MAX_LEASE_SECONDS),
            lease_wait_seconds=_integer(env, "RECONCILER_LEASE_WAIT", 0, MAX_LEASE_SECONDS) or None,
            docker_config=env.get("DOCKER_CONFIG") or None,
            insecure_registries=_hosts(env, "RECONCILER_INSECURE_REGISTRIES"),
            registry_auth_hosts=_hosts(env, "RECONCILER_REGISTRY_AUTH_HOSTS"),
            metadata_host=metadata,
            bind=_address(env.get("BIND") or "0.0.0.0", "BIND"),
            port=_integer(env, "PORT", 8080, MAX_PORT),
            http_threads=_integer(env, "RECONCILER_HTTP_THREADS", 64, MAX_HTTP_THREADS),
            apply_concurrency=_integer(
                env, "RECONCILER_APPLY_CONCURRENCY", 32, MAX_APPLY_CONCURRENCY
            ),
            http_connections=_integer(
                env, "RECONCILER_HTTP_CONNECTIONS", 1000, MAX_HTTP_CONNECTIONS
            ),
            malloc_arenas=_integer(env, "RECONCILER_MALLOC_ARENAS", 2, MAX_MALLOC_ARENAS),
            log_format=log_format,
            log_level=log_level,
            user=env.get("USER") or env.get("LOGNAME") or None,
            cli_name=(env.get("RECONCILER_CLI_NAME") or "reconciler").strip(),
            helm_binary=(env.get("RECONCILER_HELM") or "helm").strip(),
            environ=dict(env),
        )


def _switch(env: Mapping[str, str], name: str, default: bool = True) -> bool:
    """on | off (empty or unset: the default)."""
    value = (env.get(name) or "").strip().lower()
    if not value:
        return default
    if value not in ("on", "off"):
        raise SettingsError(f"{name} must be on or off, not {_shown(value)}")
    return value == "on"


def _hosts(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list of hosts; spaces around the commas and empty entries ignored."""
    return tuple(h.strip() for h in env.get(name, "").split(",") if h.strip())


def _token(env: Mapping[str, str], name: str) -> str | None:
    """A bearer token: unset or empty is None; shorter than MIN_TOKEN_BYTES is refused."""
    value = env.get(name) or None
    # surrogateescape: how Python hands over the bytes of a variable that is not UTF-8
    size = len(value.encode("utf-8", "surrogateescape")) if value is not None else 0
    if value is not None and size < MIN_TOKEN_BYTES:
        raise SettingsError(
            f"{name} is {size} bytes; a token must be at least {MIN_TOKEN_BYTES} "
            "bytes (generate one with: openssl rand -hex 32)"
        )
    return value


def _integer(env: Mapping[str, str], name: str, default: int, maximum: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    if not _DIGITS.fullmatch(raw.strip()):
        raise SettingsError(f"{name} must be a whole number, not {_shown(raw)}")
    return _bounded(int(raw.strip()), name, maximum)


def _bounded(value: int, name: str, maximum: int) -> int:
    if not 1 <= value <= maximum:
        raise SettingsError(f"{name} must be from 1 to {maximum}, not {_shown(str(value))}")
    return value


def _address(value: str, name: str) -> str:
    """An address to listen on: an IPv4 or IPv6 address (0.0.0.0 or :: for all), or localhost."""
    if value == "localhost":
        return value
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise SettingsError(
            f"{name} must be an IP address to listen on (0.0.0.0, ::, 127.0.0.1, ...) or "
            f"localhost, not {_shown(value)}"
        ) from None
    return value


def _subscription(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name) or None
    if value is not None and not SUBSCRIPTION.fullmatch(value):
        raise SettingsError(
            f"{name} must be a subscription's full name, projects/PROJECT/subscriptions/NAME, "
            f"not {_shown(value)}"
        )
    return value


def _url(value: str, name: str) -> str:
    """An http(s) URL with a host (and, if any, a valid port), without the trailing slash."""
    try:
        parts = urllib.parse.urlsplit(value)
        _ = parts.port  # raises ValueError unless the port, if any, is a number up to 65535
    except ValueError:
        usable = False
    else:
        usable = parts.scheme in ("http", "https") and bool(parts.hostname)
    if not usable or any(c.isspace() for c in value):
        raise SettingsError(
            f"{name} must be an http(s) URL such as https://ghe.example.com/api/v3, "
            f"not {_shown(value)}"
        )
    return value.rstrip("/")


def _shown(value: str, limit: int = 80) -> str:
    """A value quoted back in a message, cut to `limit` characters."""
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}... ({len(value)} characters)"


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
        except (OSError, ValueError) as exc:  # ValueError: not UTF-8 text
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise SettingsError(
                f"cannot read GITHUB_APP_PRIVATE_KEY_FILE {key_file}: {why}",
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
    if installation is not None and not _DIGITS.fullmatch(installation):
        raise SettingsError("GITHUB_APP_INSTALLATION_ID must be a number", kind=ErrorKind.AUTH)
    strategy = env.get("RECONCILER_GITHUB_STRATEGY") or "auto"
    if strategy not in GITHUB_STRATEGIES:
        raise SettingsError(
            f"RECONCILER_GITHUB_STRATEGY must be one of {', '.join(GITHUB_STRATEGIES)}, "
            f"not {_shown(strategy)}"
        )
    lookback = env.get("RECONCILER_LOOKBACK") or "20"
    if not _DIGITS.fullmatch(lookback) or int(lookback) > MAX_LOOKBACK:
        raise SettingsError(
            f"RECONCILER_LOOKBACK must be a whole number from 0 to {MAX_LOOKBACK}, "
            f"not {_shown(lookback)}"
        )
    ceiling = _integer(
        env, "RECONCILER_GITHUB_CONCURRENCY", GITHUB_CONCURRENCY, MAX_GITHUB_CONCURRENCY
    )
    return GitHubSettings(
        lookback=int(lookback),
        concurrency=min(8, ceiling),
        max_concurrency=ceiling,
        api_url=_url(env.get("GITHUB_API_URL") or DEFAULT_GITHUB_API, "GITHUB_API_URL"),
        token=env.get("GITHUB_TOKEN") or None,
        app_id=app_id,
        app_private_key=key,
        app_installation_id=int(installation) if installation else None,
        strategy=strategy,
    )
