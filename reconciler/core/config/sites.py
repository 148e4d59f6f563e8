"""sites.toml text: validate and default it into frozen dataclasses; errors name file:line:site.

Pure: reading the file is reconciler.sync.config_file, the cron check serve.schedule's (passed
in as `schedule_problem`)."""

from __future__ import annotations

import contextlib
import difflib
import re
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.core.config import keys as configkeys
from reconciler.core.config.clusters import parse_clusters, site_cluster
from reconciler.core.config.gitconfig import check_defaults, parse_git
from reconciler.core.config.lines import Lines, deepest
from reconciler.core.config.targets import claims, conflict_message, conflicts, parse_targets
from reconciler.core.errors import ConfigError, ConfigProblem
from reconciler.core.model import GIT, HELM, KUBERNETES, ClusterRef, HelmSpec, Site, Target
from reconciler.core.notify.config import NotifyConfig, parse_notify
from reconciler.core.plan.template import template_problems
from reconciler.core.promotion import parse_soak, promotions
from reconciler.core.windows import Window, parse_windows, select

# The keys, enums, ranges and patterns come from the one model the JSON Schema is made of.
SITE_KEYS = tuple(configkeys.SITE)
DEFAULT_KEYS = tuple(configkeys.DEFAULTS)
MAX_ROLLOUT_TIMEOUT = configkeys.MAX_ROLLOUT_TIMEOUT
SERVICE_KEYS = tuple(configkeys.SERVICE)
TOP_KEYS = tuple(configkeys.TOP)
VERIFY_MODES = configkeys.VERIFY_MODES
MAX_MESSAGE = 400  # characters of one problem; the middle of a longer one is cut
MAX_NAME_SHOWN = 80  # characters of a site name in a message
MAX_CONFLICTS_SHOWN = 10  # sites on one Deployment reported one by one; the rest as a count
DEFAULT_SCHEDULE = "0 * * * *"
DEFAULT_TIMEZONE = "UTC"

_REPO_RE = re.compile(configkeys.REPO_PATTERN)
_LABEL_RE = re.compile(r"^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$")
_SUBDOMAIN_RE = re.compile(configkeys.SUBDOMAIN_PATTERN)
_SITE_NAME_RE = re.compile(configkeys.SITE_NAME_PATTERN)
_VALUES_KEY_RE = re.compile(configkeys.VALUES_KEY_PATTERN)
_BRANCH_BAD = re.compile(r"(^/|/$|\.\.|[\x00-\x20~^:?*\[\\]|@\{|//|\.lock$|^-)")


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """Settings of `reconciler serve` that live in sites.toml."""

    schedule: str = DEFAULT_SCHEDULE
    jitter: int = 0
    timezone: str = DEFAULT_TIMEZONE


@dataclass(frozen=True, slots=True)
class Config:
    """A validated sites.toml."""

    path: str
    sites: tuple[Site, ...]
    service: ServiceSettings = field(default_factory=ServiceSettings)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    windows: Mapping[str, Window] = field(default_factory=dict)  # [windows.NAME]

    def windows_of(self, site: Site) -> tuple[Window, ...]:
        """The deploy windows a site obeys (its own list, else [defaults]'), in order."""
        return tuple(self.windows[n] for n in site.windows if n in self.windows)

    clusters: Mapping[str, ClusterRef] = field(default_factory=dict)  # [clusters.NAME]
    by_name: Mapping[str, Site] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {s.name: s for s in self.sites})

    def site(self, name: str) -> Site | None:
        return self.by_name.get(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sites)

    def select(self, names: Iterable[str] | None) -> tuple[Site, ...]:
        """The named sites in config order (all when None); unknown names raise KeyError."""
        if names is None:
            return self.sites
        wanted = set(names)
        unknown = sorted(wanted - set(self.names))
        if unknown:
            raise KeyError(", ".join(unknown))
        return tuple(s for s in self.sites if s.name in wanted)


# Why a crontab expression in a time zone is unusable, or None (serve.schedule.cron_problem).
ScheduleCheck = Callable[[str, str], str | None]


def parse(
    text: str, path: str = "sites.toml", *, schedule_problem: ScheduleCheck | None = None
) -> Config:
    """Validate TOML text as a sites.toml; `path` is only used in messages. Without
    `schedule_problem` the [service] schedule is not checked beyond being a string."""
    try:
        data = tomllib.loads(text)
    except (ValueError, RecursionError) as exc:  # TOMLDecodeError is a ValueError
        raise ConfigError([_unparsable(text, path, exc)]) from None
    validator = _Validator(text, path, schedule_problem)
    if isinstance(data.get("defaults"), dict):  # [defaults.git], once (each site's: parse_git)
        check_defaults(data["defaults"], validator.problem)
    return validator.validate(data)


def _unparsable(text: str, path: str, exc: ValueError | RecursionError) -> ConfigProblem:
    """Why tomllib could not read `text`, at the line it stopped on."""
    if isinstance(exc, RecursionError):  # it recurses once per nested array or inline table
        depth, line = deepest(text)
        return ConfigProblem(
            path, line, f"invalid TOML: arrays or inline tables nested {depth} levels deep"
        )
    if isinstance(exc, tomllib.TOMLDecodeError):
        match = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        # "(at end of document)": the last line that has anything on it
        at = int(match.group(1)) if match else text.rstrip().count("\n") + 1
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        return ConfigProblem(path, at, f"invalid TOML: {message}")
    # int() refuses a decimal integer of more digits than sys.get_int_max_str_digits()
    limit = sys.get_int_max_str_digits()
    long_number = re.search(rf"[0-9](?:_?[0-9]){{{limit},}}", text)
    where = text.count("\n", 0, long_number.start()) + 1 if long_number else None
    return ConfigProblem(path, where, f"invalid TOML: a number too long to read ({exc})")


class _Validator:
    def __init__(self, text: str, path: str, schedule_problem: ScheduleCheck | None) -> None:
        self.lines = Lines(text)
        self.path = path
        self.schedule_problem = schedule_problem
        self.problems: list[ConfigProblem] = []
        self.default_timeout: int | None = None
        self.clusters: Mapping[str, ClusterRef] = {}
        self.windows: dict[str, Window] = {}

    def problem(self, where: tuple[str, ...], message: str, site: str | None = None) -> None:
        """Record a problem at the line of `where`; a key or name of any length quoted in it
        is cut (a message stays readable, and as long as the file at most)."""
        if len(message) > MAX_MESSAGE:
            half, cut = MAX_MESSAGE // 2, len(message) - MAX_MESSAGE
            message = f"{message[:half]}[... {cut:,} characters]{message[-half:]}"
        if site is not None and len(site) > MAX_NAME_SHOWN:
            site = f"{site[:MAX_NAME_SHOWN]}..."
        self.problems.append(ConfigProblem(self.path, self.lines.of(*where), message, site))

    def unknown_keys(
        self,
        table: Mapping[str, Any],
        known: tuple[str, ...],
        where: tuple[str, ...],
        site: str | None,
    ) -> None:
        for key in table:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f' (did you mean "{close[0]}"?)' if close else ""
                allowed = ", ".join(known)
                self.problem((*where, key), f'unknown key "{key}"{hint}; allowed: {allowed}', site)

    def string(
        self, table: Mapping[str, Any], key: str, where: tuple[str, ...], site: str | None
    ) -> str | None:
        value = table.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            kind = type(value).__name__
            self.problem((*where, key), f'"{key}" must be a string, not {kind}', site)
            return None
        if not value.strip():
            self.problem((*where, key), f'"{key}" must not be empty', site)
            return None
        return value

    def table(self, data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.problem((key,), f'"{key}" must be a table, e.g. [{key}]')
            return {}
        return value

    def validate(self, data: Mapping[str, Any]) -> Config:
        self.unknown_keys(data, TOP_KEYS, (), None)
        defaults = self.table(data, "defaults")
        self.unknown_keys(defaults, DEFAULT_KEYS, ("defaults",), None)
        service = self._service(self.table(data, "service"))
        self.clusters = parse_clusters(data, self.problem)
        raw_sites = self.table(data, "sites")
        if not raw_sites and not self.problems:
            self.problem((), 'no sites: add a table such as [sites.blog] with repo = "owner/name"')

        self.windows = parse_windows(data, self.problem)
        if "windows" in defaults:
            select(defaults["windows"], self.windows, ("defaults", "windows"), None, self.problem)
        sites: list[Site] = []
        default_verify = self._verify(defaults, ("defaults",), None) or "registry"
        self.default_timeout = self._timeout(defaults, ("defaults",), None)
        for name, raw in raw_sites.items():
            where = ("sites", name)
            if not isinstance(raw, dict):
                self.problem(where, f'site "{name}" must be a table: [sites.{name}]')
                continue
            site = self._site(name, raw, defaults, where, default_verify)
            if site is not None:
                sites.append(site)
        self._duplicates(sites)
        for problem in promotions(raw_sites)[1]:
            self.problem(problem.where, problem.message, problem.site)
        notify = parse_notify(data, raw_sites, self.problem)
        if self.problems:
            self.problems.sort(key=lambda p: p.line or 0)
            raise ConfigError(self.problems)
        return Config(
            self.path, tuple(sites), service, notify, self.windows, clusters=self.clusters
        )

    def _verify(
        self, table: Mapping[str, Any], where: tuple[str, ...], site: str | None
    ) -> str | None:
        mode = self.string(table, "verify", where, site)
        if mode is not None and mode not in VERIFY_MODES:
            allowed = ", ".join(f'"{m}"' for m in VERIFY_MODES)
            self.problem((*where, "verify"), f'"verify" must be one of {allowed}', site)
            return None
        return mode

    def _timeout(
        self, table: Mapping[str, Any], where: tuple[str, ...], site: str | None
    ) -> int | None:
        value = table.get("rollout_timeout")
        if value is None:
            return None
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or not 1 <= value <= MAX_ROLLOUT_TIMEOUT
        ):
            self.problem(
                (*where, "rollout_timeout"),
                f'"rollout_timeout" must be a whole number of seconds, 1 to {MAX_ROLLOUT_TIMEOUT}',
                site,
            )
            return None
        return value

    def _service(self, table: Mapping[str, Any]) -> ServiceSettings:
        where = ("service",)
        self.unknown_keys(table, SERVICE_KEYS, where, None)
        schedule = self.string(table, "schedule", where, None) or DEFAULT_SCHEDULE
        timezone = self.string(table, "timezone", where, None) or DEFAULT_TIMEZONE
        jitter = table.get("jitter", 0)
        top = configkeys.MAX_JITTER
        if not isinstance(jitter, int) or isinstance(jitter, bool) or not 0 <= jitter <= top:
            self.problem(
                (*where, "jitter"), f'"jitter" must be a whole number of seconds, 0 to {top}'
            )
            jitter = 0
        problem = timezone_problem(timezone)
        if problem:
            self.problem((*where, "timezone"), problem)
            timezone = DEFAULT_TIMEZONE
        problem = self.schedule_problem(schedule, timezone) if self.schedule_problem else None
        if problem:
            self.problem((*where, "schedule"), problem)
        return ServiceSettings(schedule=schedule, jitter=jitter, timezone=timezone)

    def _site(
        self,
        name: str,
        raw: Mapping[str, Any],
        defaults: Mapping[str, Any],
        where: tuple[str, ...],
        default_verify: str,
    ) -> Site | None:
        before = len(self.problems)
        if not _SITE_NAME_RE.match(name):
            self.problem(where, "site names use letters, digits, '-', '_' and '.'", name)
        self.unknown_keys(raw, SITE_KEYS, where, name)
        repo = self._repo(raw, where, name)
        follows = raw.get("promote_from")  # a follower has no branch ([defaults]' neither)
        branch = None if follows else self._pick(raw, defaults, "branch", where, name)
        if branch is not None and _BRANCH_BAD.search(branch):
            self.problem((*where, "branch"), f"{branch!r} is not a valid git branch name", name)
        namespace, deployment, container = self._target(raw, defaults, where, name)
        targets: tuple[Target, ...] | None = ()
        if "targets" in raw:
            targets = parse_targets(raw, where, name, self.problem, lambda w: self.lines.of(*w))
            if targets:
                deployment, names = targets[0].name, targets[0].names
                container = names[0] if names else None
        image = self._image(raw, defaults, where, name)
        verify = self._verify(raw, where, name) or default_verify
        timeout = (
            self._timeout(raw, where, name) if "rollout_timeout" in raw else self.default_timeout
        )
        paused = raw.get("paused", False)
        if not isinstance(paused, bool):
            self.problem((*where, "paused"), '"paused" must be true or false', name)
        pin_where = where if "pin_digest" in raw else ("defaults",)
        pin_digest = raw.get("pin_digest", defaults.get("pin_digest", True))
        if not isinstance(pin_digest, bool):
            self.problem((*pin_where, "pin_digest"), '"pin_digest" must be true or false', name)
        required = self._required_checks(raw, where, name, verify)
        helm = self._helm(raw, where, name, namespace)
        git = parse_git(raw, defaults, where, (name, container, targets or ()), self.problem)
        delivered = HELM if helm is not None else GIT if git is not None else None
        cluster = site_cluster(raw, defaults, self.clusters, (where, name), self.problem)
        gates = self._gates(raw, defaults, where, name)
        if len(self.problems) > before or repo is None or image is None or targets is None:
            return None
        return Site(
            name=name,
            repo=repo,
            branch=branch,
            namespace=namespace,
            deployment=deployment,
            container=container,
            image=image,
            paused=bool(paused),
            verify=verify,
            line=self.lines.of(*where),
            pin_digest=bool(pin_digest),
            required_checks=required,
            rollout_timeout=timeout,
            delivery=delivered or KUBERNETES,
            helm=helm,
            git=git,
            **gates,
            targets=targets,
            cluster=cluster,
        )

    def _helm(
        self, raw: Mapping[str, Any], where: tuple[str, ...], name: str, namespace: str
    ) -> HelmSpec | None:
        """[sites.NAME.helm]: the release (default: the site's name, in the site's namespace)
        and the values keys of the image (default: image.tag)."""
        table = raw.get("helm")
        if table is None:
            return None
        here = (*where, "helm")
        if not isinstance(table, dict):
            self.problem(here, '"helm" must be a table: [sites.NAME.helm]', name)
            return None
        if "targets" in raw:
            self.problem(
                here, "a Helm release's workloads come from its manifest: drop [[targets]]", name
            )
        self.unknown_keys(table, tuple(configkeys.HELM), here, name)
        release = self.string(table, "release", here, name) or name
        if not _SUBDOMAIN_RE.match(release) or len(release) > 53:
            self.problem((*here, "release"), f"{release!r} is not a valid Helm release name", name)
        ns = self.string(table, "namespace", here, name) or namespace
        if not _LABEL_RE.match(ns):
            self.problem(
                (*here, "namespace"), f"namespace {ns!r} is not a valid Kubernetes name", name
            )
        values = table.get("values", {"tag": "image.tag"})
        at = (*here, "values")
        if not isinstance(values, dict):
            self.problem(at, '"values" must be a table, e.g. values = { tag = "image.tag" }', name)
            return None
        self.unknown_keys(values, tuple(configkeys.HELM_VALUES), at, name)
        keys = {k: self.string(values, k, at, name) for k in configkeys.HELM_VALUES}
        for key, path in keys.items():
            if path is not None and not _VALUES_KEY_RE.match(path):
                self.problem((*at, key), f"{path!r} is not a dotted values key (image.tag)", name)
        if keys["tag"] is None and keys["digest"] is None:
            self.problem(
                at, 'name the values key of the image: tag = "image.tag" (or digest)', name
            )
        return HelmSpec(release, ns, keys["tag"], keys["repository"], keys["digest"])

    def _gates(
        self,
        raw: Mapping[str, Any],
        defaults: Mapping[str, Any],
        where: tuple[str, ...],
        name: str,
    ) -> dict[str, Any]:
        """promote_from, soak (checked with the whole graph by `promotions`), approval and
        the windows the site obeys (its own list replaces [defaults]')."""
        follows = raw.get("promote_from")
        soak = 0
        if isinstance(follows, str) and isinstance(raw.get("soak"), str):
            with contextlib.suppress(ValueError):  # `promotions` reports it
                soak = parse_soak(raw["soak"])
        approval = self.string(raw, "approval", where, name) or "auto"
        if approval not in configkeys.APPROVAL_MODES:
            allowed = ", ".join(f'"{m}"' for m in configkeys.APPROVAL_MODES)
            self.problem((*where, "approval"), f'"approval" must be one of {allowed}', name)
        if "windows" in raw:
            chosen = select(raw["windows"], self.windows, (*where, "windows"), name, self.problem)
        else:  # [defaults]' list, checked once in validate()
            chosen = select(defaults.get("windows", []), self.windows, (), None, _quiet)
        return {
            "promote_from": follows if isinstance(follows, str) else None,
            "soak": soak,
            "approval": approval,
            "windows": tuple(w.name for w in chosen),
        }

    def _pick(
        self,
        raw: Mapping[str, Any],
        defaults: Mapping[str, Any],
        key: str,
        where: tuple[str, ...],
        name: str,
    ) -> str | None:
        """The site's string setting, else the one in [defaults]."""
        if key in raw:
            return self.string(raw, key, where, name)
        return self.string(defaults, key, ("defaults",), name)

    def _repo(self, raw: Mapping[str, Any], where: tuple[str, ...], name: str) -> str | None:
        repo = self.string(raw, "repo", where, name)
        if "repo" not in raw:
            self.problem(where, 'missing required key "repo" (e.g. repo = "owner/name")', name)
        elif repo is not None and not _REPO_RE.match(repo):
            self.problem(
                (*where, "repo"), f'"repo" must look like "owner/name", not {repo!r}', name
            )
        return repo

    def _target(
        self,
        raw: Mapping[str, Any],
        defaults: Mapping[str, Any],
        where: tuple[str, ...],
        name: str,
    ) -> tuple[str, str, str | None]:
        """namespace, deployment and container, each a valid Kubernetes name."""
        namespace = self._pick(raw, defaults, "namespace", where, name) or "default"
        if not _LABEL_RE.match(namespace):
            self.problem(
                (*where, "namespace"),
                f"namespace {namespace!r} is not a valid Kubernetes name (lowercase, digits, '-')",
                name,
            )
        deployment = self.string(raw, "deployment", where, name) or name
        if "targets" in raw:  # its targets name the workloads and containers (targets.py)
            return namespace, deployment, None
        if not _SUBDOMAIN_RE.match(deployment):
            hint = (
                "" if "deployment" in raw else ' (it defaults to the site name; set "deployment")'
            )
            self.problem(
                (*where, "deployment"),
                f"deployment {deployment!r} is not a valid Kubernetes name{hint}",
                name,
            )
        container = self._pick(raw, defaults, "container", where, name)
        if container is not None and not _LABEL_RE.match(container):
            self.problem(
                (*where, "container"),
                f"container {container!r} is not a valid container name",
                name,
            )
        return namespace, deployment, container

    def _image(
        self,
        raw: Mapping[str, Any],
        defaults: Mapping[str, Any],
        where: tuple[str, ...],
        name: str,
    ) -> str | None:
        image = self._pick(raw, defaults, "image", where, name)
        if image is None:
            if "image" not in raw and "image" not in defaults:
                self.problem(
                    where,
                    'no "image" template: set image = "registry/path:{sha}" here or in [defaults]',
                    name,
                )
        else:
            key_where = (*where, "image") if "image" in raw else ("defaults", "image")
            for message in template_problems(image):
                self.problem(key_where, message, name)
        return image

    def _required_checks(
        self, raw: Mapping[str, Any], where: tuple[str, ...], name: str, verify: str
    ) -> tuple[str, ...]:
        value = raw.get("required_checks")
        if value is None:
            return ()
        key = (*where, "required_checks")
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            self.problem(key, '"required_checks" must be a list of check names', name)
            return ()
        if verify != "checks":
            self.problem(key, '"required_checks" needs verify = "checks"', name)
        return tuple(value)

    def _duplicates(self, sites: list[Site]) -> None:
        """Each claim on the container (or, without one, the whole workload) of an earlier
        claim, by another site or another target of the same site, is reported once, against
        the first such claim; at most MAX_CONFLICTS_SHOWN per workload, then one line says how
        many more there are."""
        by_cluster: dict[str, list[Site]] = {}
        for site in sites:  # the same names in two clusters are two workloads
            by_cluster.setdefault(site.cluster_name, []).append(site)
        for workload, group in (
            item for in_cluster in by_cluster.values() for item in claims(in_cluster).items()
        ):
            clashes = conflicts(group)
            for claim, other in clashes[:MAX_CONFLICTS_SHOWN]:
                where: tuple[str, ...] = ("sites", claim.site.name)
                if not claim.site.single:
                    where = (*where, "targets", str(claim.site.targets.index(claim.target)))
                message = conflict_message(workload, claim, other)
                self.problem(where, message, claim.site.name)
            rest = clashes[MAX_CONFLICTS_SHOWN:]
            if rest:
                lines = ", ".join(str(c.site.line) for c, _ in rest[:MAX_CONFLICTS_SHOWN])
                more = ", ..." if len(rest) > MAX_CONFLICTS_SHOWN else ""
                namespace, _, name = workload
                self.problem(
                    ("sites", rest[0][0].site.name),
                    f"and {len(rest):,} more sites target {namespace}/{name} the same way "
                    f"(lines {lines}{more})",
                )


def _quiet(_where: tuple[str, ...], _message: str, _site: str | None) -> None:
    """A problem already reported elsewhere."""


def timezone_problem(timezone: str) -> str | None:
    """Why a time zone name is not one of this machine's (IANA names such as "Europe/Paris")."""
    from zoneinfo import ZoneInfo

    try:
        ZoneInfo(timezone)
    except (LookupError, ValueError, OSError):  # unknown; malformed; too long, a directory
        example = '(e.g. "UTC", "Europe/Paris")'
        return f'"timezone" {shown(timezone)} is not a known time zone {example}'
    return None


def shown(value: str, limit: int = 80) -> str:
    """A value quoted back in a message, cut to `limit` characters."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value):,} characters)"
