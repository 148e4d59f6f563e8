"""A site's [[sites.NAME.targets]]: validate them into Target values (errors name
file:line:site), and find two sites or two targets that claim the same container.

One target per workload the site moves: ``kind`` (Deployment by default, StatefulSet,
DaemonSet or CronJob), ``name``, ``containers`` and ``init_containers`` to set, and
``images``, the own image template of some of those containers (the others take the site's
``image``). A site has either ``targets`` or the single form ``deployment``/``container``,
never both."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from reconciler.core.config import keys as configkeys
from reconciler.core.model import DEPLOYMENT, KINDS, Site, Target
from reconciler.core.plan.template import template_problems

TARGET_KEYS = tuple(configkeys.TARGET)
MAX_TARGETS = configkeys.MAX_TARGETS
MAX_CONFLICTS_SHOWN = 10  # claims on one workload reported one by one; the rest as a count
JOB_MESSAGE = (
    'kind "Job" cannot be a target: a Job\'s pod template is immutable once it is created, so '
    'its image cannot be changed; use kind = "CronJob" (each run is a new Job made from its '
    "template) or an init container of the workload that needs it (init_containers = [...])"
)
SINGLE_FORM = configkeys.SITE["targets"].excludes  # ("deployment", "container")

_SUBDOMAIN_RE = re.compile(configkeys.SUBDOMAIN_PATTERN)
_LABEL_RE = re.compile(configkeys.LABEL_PATTERN)

# problem(where, message, site): record a problem at the line of `where`
Report = Callable[..., None]
Where = tuple[str, ...]


def parse_targets(
    raw: Mapping[str, Any],
    where: Where,
    site: str,
    report: Report,
    line_of: Callable[[Where], int | None],
) -> tuple[Target, ...] | None:
    """The site's targets from its table `raw` (which has "targets"), or None when they have
    problems (each reported); `line_of` gives a target's line."""
    value = raw["targets"]
    key = (*where, "targets")
    mixed = [k for k in SINGLE_FORM if k in raw]
    if mixed:
        keys = " and ".join(f'"{k}"' for k in mixed)
        report(
            (*where, mixed[0]),
            f'{keys} cannot be used with "targets": name the workload in a [[sites.{site}.'
            "targets]] instead (name = ..., containers = [...])",
            site,
        )
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        report(key, f'"targets" must be tables, e.g. [[sites.{site}.targets]]', site)
        return None
    if not value:
        report(key, '"targets" must name at least one workload', site)
        return None
    if len(value) > MAX_TARGETS:
        report(key, f'"targets": at most {MAX_TARGETS} workloads per site', site)
        return None
    parsed = [_target(t, (*key, str(i)), site, report) for i, t in enumerate(value)]
    parsed = [
        None if t is None else replace(t, line=line_of((*key, str(i))))
        for i, t in enumerate(parsed)
    ]
    if mixed or any(t is None for t in parsed):
        return None
    return tuple(t for t in parsed if t is not None)


def _target(raw: Mapping[str, Any], where: Where, site: str, report: Report) -> Target | None:
    problems = 0

    def bad(key: str | None, message: str) -> None:
        nonlocal problems
        problems += 1
        report(where if key is None else (*where, key), message, site)

    for key in raw:
        if key not in TARGET_KEYS:
            close = difflib.get_close_matches(key, TARGET_KEYS, n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            bad(key, f'unknown key "{key}" in a target{hint}; allowed: {", ".join(TARGET_KEYS)}')
    kind = _kind(raw.get("kind", DEPLOYMENT), bad)
    name = raw.get("name")
    if name is None:
        bad(None, 'a target needs "name", the workload\'s name (e.g. name = "web")')
    elif not isinstance(name, str) or not _SUBDOMAIN_RE.match(name):
        bad("name", f"target name {name!r} is not a valid Kubernetes name")
    containers = _names(raw, "containers", bad)
    init = _names(raw, "init_containers", bad)
    if "containers" in raw and not containers and not init:
        bad("containers", '"containers" is empty and no "init_containers": nothing to set')
    twice = sorted(set(containers) & set(init))
    if twice:
        bad("init_containers", f"{twice[0]!r} is in both containers and init_containers")
    images = _images(raw, (*containers, *init), bad)
    if problems or kind is None or not isinstance(name, str):
        return None
    only_init = "containers" in raw and not containers
    return Target(name, kind, containers, init, images, line=None, only_init=only_init)


def _kind(value: Any, bad: Callable[[str | None, str], None]) -> str | None:
    if not isinstance(value, str):
        bad("kind", f'"kind" must be a string, one of {", ".join(KINDS)}')
        return None
    if value in KINDS:
        return value
    if value.lower() == "job":
        bad("kind", JOB_MESSAGE)
        return None
    close = [k for k in KINDS if k.lower() == value.lower()] or difflib.get_close_matches(
        value, KINDS, n=1
    )
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    bad("kind", f"unknown kind {value!r}{hint}; a target is one of {', '.join(KINDS)}")
    return None


def _names(
    raw: Mapping[str, Any], key: str, bad: Callable[[str | None, str], None]
) -> tuple[str, ...]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        bad(key, f'"{key}" must be a list of container names')
        return ()
    for name in value:
        if not _LABEL_RE.match(name):
            bad(key, f"container {name!r} is not a valid container name")
    seen = [n for i, n in enumerate(value) if n in value[:i]]
    if seen:
        bad(key, f"container {seen[0]!r} is named twice")
    return tuple(dict.fromkeys(value))


def _images(
    raw: Mapping[str, Any], names: tuple[str, ...], bad: Callable[[str | None, str], None]
) -> dict[str, str]:
    value = raw.get("images", {})
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        bad("images", '"images" must be a table of container = "image template"')
        return {}
    for container, template in value.items():
        if container not in names:
            bad(
                "images",
                f"images names container {container!r}, which this target does not set: add it "
                'to "containers" (or "init_containers")',
            )
        for message in template_problems(template):
            bad("images", f"images.{container}: {message}")
    return dict(value)


@dataclass(frozen=True, slots=True)
class Claim:
    """A site's claim on one workload: one container, or (None) its only container."""

    site: Site
    target: Target
    container: str | None


def claims(sites: Iterable[Site]) -> dict[tuple[str, str, str], list[Claim]]:
    """Every site's claims, by the workload (namespace, kind, name) they are on."""
    groups: dict[tuple[str, str, str], list[Claim]] = {}
    for site in sites:
        for target in site.targets:
            group = groups.setdefault((site.namespace, target.kind, target.name), [])
            group.extend(Claim(site, target, c) for c, _ in target.sets)
    return groups


def conflicts(group: list[Claim]) -> list[tuple[Claim, Claim]]:
    """(claim, the first earlier claim it conflicts with) for every claim on one workload that
    conflicts with an earlier one, in order: linear, however many sites share it."""
    whole: int | None = None  # the first claim without a container (it takes them all)
    by_container: dict[str, int] = {}  # the first claim naming each container
    out: list[tuple[Claim, Claim]] = []
    for i, claim in enumerate(group):
        if claim.container is None:  # (its own target's init containers are not in the way)
            other = next((j for j in range(i) if not _same(group[j], claim)), None)
            whole = i if whole is None else whole
        else:
            earlier = [
                j
                for j in (whole, by_container.get(claim.container))
                if j is not None and not _same(group[j], claim)
            ]
            other = min(earlier) if earlier else None
            by_container.setdefault(claim.container, i)
        if other is not None:
            out.append((claim, group[other]))
    return out


def _same(a: Claim, b: Claim) -> bool:
    """Two claims of one target (its only container and its init containers)."""
    return a.site is b.site and a.target is b.target


def conflict_message(workload: tuple[str, str, str], claim: Claim, other: Claim) -> str:
    """Why `claim` may not be: `other` claims the same container (or the whole workload)."""
    namespace, kind, name = workload
    shown = f"{namespace}/{name}" if kind == DEPLOYMENT else f"{kind} {namespace}/{name}"
    if claim.container is None or other.container is None:
        noun = "Deployment" if kind == DEPLOYMENT else kind
        key = "container" if claim.site.single else "containers"  # the key where it is written
        what = f'the same {noun} (set a distinct "{key}" on each)'
    else:
        what = f'the same container "{claim.container}"'
    if claim.site is other.site:
        return f"two of its targets claim {shown}: {what}"
    return f'targets {shown} like site "{other.site.name}" (line {other.site.line}): {what}'
