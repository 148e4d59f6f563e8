"""The [notify] table of sites.toml and per-site overrides, validated into frozen dataclasses."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

DEFAULT_BLOCKED_AFTER = 1800  # seconds a head may stay not-ready before "blocked" is sent
NOTIFY_KEYS = (
    "status_url",
    "events",
    "blocked_after",
    "slack",
    "webhook",
    "google_chat",
    "github_deployments",
)
CHANNEL_KEYS: dict[str, tuple[str, ...]] = {
    "slack": ("webhook_env", "webhook_file"),
    "google_chat": ("webhook_env", "webhook_file"),
    "webhook": ("url_env", "url_file", "secret_env", "secret_file"),
}
_SECRET_LITERALS = ("webhook", "url", "secret", "token")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class EventKind(StrEnum):
    """What a notification is about."""

    DEPLOYING = "deploying"  # a new image was applied; its rollout runs (off by default)
    DEPLOYED = "deployed"
    ROLLED_BACK = "rolled-back"
    HELD = "held"
    BLOCKED = "blocked"
    FAILING = "failing"
    RECOVERED = "recovered"
    FLAPPING = "flapping"
    RATE_LIMITED = "rate-limited"
    WAITING = "waiting"  # approval = "manual": a commit waits for a person (once per commit)
    APPROVED = "approved"  # an approved commit goes out
    WINDOW_OVERRIDE = "window-override"  # a deploy went through a closed deploy window


class ChannelKind(StrEnum):
    SLACK = "slack"
    WEBHOOK = "webhook"
    GOOGLE_CHAT = "google_chat"
    GITHUB_DEPLOYMENTS = "github_deployments"


@dataclass(frozen=True, slots=True)
class SecretRef:
    """Where a secret comes from: an environment variable or a mounted file, never sites.toml."""

    env: str | None = None
    file: str | None = None

    def __str__(self) -> str:
        return f"${self.env}" if self.env else f"file {self.file}"


# What GitHub Deployments follow: a deployment per commit, its statuses as the rollout goes.
# A held site (a person's undo or set image, `reconciler rollback`) shows what runs instead.
DEPLOYMENT_EVENTS = frozenset(
    {
        EventKind.DEPLOYING,
        EventKind.APPROVED,  # a deploy that starts with an approval or a window override
        EventKind.WINDOW_OVERRIDE,
        EventKind.DEPLOYED,
        EventKind.ROLLED_BACK,
        EventKind.HELD,
    }
)
STARTS = frozenset({EventKind.DEPLOYING, EventKind.APPROVED, EventKind.WINDOW_OVERRIDE})
DEFAULT_EVENTS = frozenset(EventKind) - {EventKind.DEPLOYING}


@dataclass(frozen=True, slots=True)
class Channel:
    """One destination: its kind, its URL (a secret), for webhooks an optional HMAC key, for
    GitHub Deployments the environment (None: the site's name; the token is GitHub's)."""

    kind: ChannelKind
    url: SecretRef | None = None
    secret: SecretRef | None = None
    environment: str | None = None

    @property
    def name(self) -> str:
        return self.kind.value


@dataclass(frozen=True, slots=True)
class NotifySettings:
    """The effective notification settings of one site."""

    channels: tuple[Channel, ...] = ()
    events: frozenset[EventKind] = DEFAULT_EVENTS
    blocked_after: int = DEFAULT_BLOCKED_AFTER
    status_url: str | None = None

    def channels_for(self, kind: EventKind) -> tuple[Channel, ...]:
        """The channels an event goes to (GitHub Deployments take only the rollout's events)."""
        return tuple(
            c
            for c in self.channels
            if (
                kind in DEPLOYMENT_EVENTS
                if c.kind is ChannelKind.GITHUB_DEPLOYMENTS
                else kind in self.events
            )
        )


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    """[notify] defaults and the sites that override them."""

    defaults: NotifySettings = field(default_factory=NotifySettings)
    sites: Mapping[str, NotifySettings] = field(default_factory=dict)

    def for_site(self, name: str) -> NotifySettings:
        return self.sites.get(name, self.defaults)

    @property
    def channels(self) -> tuple[Channel, ...]:
        """Every distinct message channel of any site (for global events: the rate limit)."""
        seen: dict[Channel, None] = dict.fromkeys(self.defaults.channels)
        for settings in self.sites.values():
            seen.update(dict.fromkeys(settings.channels))
        return tuple(c for c in seen if c.kind is not ChannelKind.GITHUB_DEPLOYMENTS)


Problem = Callable[[tuple[str, ...], str, "str | None"], None]


def parse_notify(
    data: Mapping[str, Any], raw_sites: Mapping[str, Any], problem: Problem
) -> NotifyConfig:
    """Validate [notify] and every [sites.NAME.notify]; report through `problem`."""
    raw = data.get("notify", {})
    if not isinstance(raw, dict):
        problem(("notify",), '"notify" must be a table, e.g. [notify]', None)
        raw = {}
    defaults = _settings(raw, NotifySettings(), ("notify",), None, problem)
    sites: dict[str, NotifySettings] = {}
    for name, site in raw_sites.items():
        if not isinstance(site, dict) or "notify" not in site:
            continue
        where = ("sites", name, "notify")
        value = site["notify"]
        if value is False:
            sites[name] = replace(defaults, channels=())
        elif isinstance(value, dict):
            sites[name] = _settings(value, defaults, where, name, problem)
        else:
            problem(where, '"notify" must be a table ([sites.NAME.notify]) or false', name)
    return NotifyConfig(defaults, sites)


def _settings(
    raw: Mapping[str, Any],
    base: NotifySettings,
    where: tuple[str, ...],
    site: str | None,
    problem: Problem,
) -> NotifySettings:
    out = base
    for key in raw:
        if key not in NOTIFY_KEYS:
            problem(
                (*where, key),
                f'unknown key "{key}" in notify; allowed: ' + ", ".join(NOTIFY_KEYS),
                site,
            )
    status_url = raw.get("status_url")
    if status_url is not None:
        if not isinstance(status_url, str) or not re.match(r"^https?://\S+$", status_url):
            problem((*where, "status_url"), '"status_url" must be an http(s) URL', site)
        else:
            out = replace(out, status_url=status_url.rstrip("/"))
    events = raw.get("events")
    if events is not None:
        known = [e.value for e in EventKind]
        if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
            problem((*where, "events"), '"events" must be a list of event names', site)
        else:
            bad = [e for e in events if e not in known]
            if bad:
                problem(
                    (*where, "events"),
                    f"unknown event(s) {', '.join(bad)}; known: {', '.join(known)}",
                    site,
                )
            else:
                out = replace(out, events=frozenset(EventKind(e) for e in events))
    blocked = raw.get("blocked_after")
    if blocked is not None:
        if not isinstance(blocked, int) or isinstance(blocked, bool) or not 0 <= blocked <= 604800:
            problem(
                (*where, "blocked_after"),
                '"blocked_after" must be a whole number of seconds, 0 to 604800',
                site,
            )
        else:
            out = replace(out, blocked_after=blocked)
    channels = {c.kind: c for c in base.channels}
    for kind in ChannelKind:
        if kind.value not in raw:
            continue
        value = raw[kind.value]
        if value is False:
            channels.pop(kind, None)
            continue
        if kind is ChannelKind.GITHUB_DEPLOYMENTS:
            channel = _deployments(value, (*where, kind.value), site, problem)
        else:
            channel = _channel(kind, value, (*where, kind.value), site, problem)
        if channel is not None:
            channels[kind] = channel
    return replace(out, channels=tuple(channels.values()))


def _deployments(
    raw: Any, where: tuple[str, ...], site: str | None, problem: Problem
) -> Channel | None:
    """github_deployments = true (environment: the site's name) or "environment-name"."""
    if raw is True:
        return Channel(ChannelKind.GITHUB_DEPLOYMENTS)
    if isinstance(raw, str) and raw.strip() and len(raw) <= 255:
        return Channel(ChannelKind.GITHUB_DEPLOYMENTS, environment=raw)
    problem(
        where,
        '"github_deployments" must be true, false or an environment name such as "production"',
        site,
    )
    return None


def _channel(
    kind: ChannelKind, raw: Any, where: tuple[str, ...], site: str | None, problem: Problem
) -> Channel | None:
    example = 'slack = { webhook_env = "SLACK_WEBHOOK_URL" }'
    if not isinstance(raw, dict):
        problem(where, f'"{kind.value}" must be a table such as {example}, or false', site)
        return None
    allowed = CHANNEL_KEYS[kind.value]
    ok = True
    for key in raw:
        if key in _SECRET_LITERALS:
            problem(
                (*where, key),
                f'"{key}" would put a secret in sites.toml: use {key}_env (an environment '
                f"variable) or {key}_file (a mounted file) instead"
                if key in ("url", "secret")
                else f'"{key}" would put a secret in sites.toml: use webhook_env or webhook_file',
                site,
            )
            ok = False
        elif key not in allowed:
            problem((*where, key), f'unknown key "{key}"; allowed: {", ".join(allowed)}', site)
            ok = False
    if not ok:
        return None
    url_key = "url" if kind is ChannelKind.WEBHOOK else "webhook"
    url = _secret(raw, url_key, where, site, problem, required=True)
    secret = _secret(raw, "secret", where, site, problem, required=False)
    return None if url is None else Channel(kind, url, secret)


def _secret(
    raw: Mapping[str, Any],
    base: str,
    where: tuple[str, ...],
    site: str | None,
    problem: Problem,
    *,
    required: bool,
) -> SecretRef | None:
    env, path = raw.get(f"{base}_env"), raw.get(f"{base}_file")
    if env is not None and path is not None:
        problem((*where, f"{base}_env"), f'set "{base}_env" or "{base}_file", not both', site)
        return None
    if env is not None:
        if not isinstance(env, str) or not _ENV_RE.match(env):
            problem(
                (*where, f"{base}_env"), f'"{base}_env" must name an environment variable', site
            )
            return None
        return SecretRef(env=env)
    if path is not None:
        if not isinstance(path, str) or not path.startswith("/"):
            problem((*where, f"{base}_file"), f'"{base}_file" must be an absolute path', site)
            return None
        return SecretRef(file=path)
    if required:
        problem(where, f'missing "{base}_env" (or "{base}_file"): where to read the URL from', site)
    return None
