"""[clusters.NAME] of sites.toml and the `cluster` key of a site: which cluster each site's
workloads live in. Pure: a table's values become ClusterRef values; problems are reported through
the validator's `problem` (file:line:site). Credentials never belong in sites.toml: a key or a value
that looks like one is refused with where to put it instead (a mounted kubeconfig file)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from reconciler.core.config import keys as configkeys
from reconciler.core.model import HOME_CLUSTER, ClusterRef

CLUSTER_KEYS = tuple(configkeys.CLUSTER)
_NAME_RE = re.compile(configkeys.CLUSTER_NAME_PATTERN)
# Keys of a kubeconfig's user or cluster entry, or of any secret: refused with a clear error.
_CREDENTIAL_KEY = re.compile(
    r"token|cert|key|password|passwd|secret|credential|bearer|auth|exec|user|server|^ca",
    re.IGNORECASE,
)
# Values that are a kubeconfig's or a certificate's content rather than a path to it.
_CREDENTIAL_VALUE = re.compile(
    r"-----BEGIN|apiVersion:|client-key-data|client-certificate-data|token:|\n|^eyJ[A-Za-z0-9_-]{8,}"
)
_MOUNT_IT = (
    "credentials never go in sites.toml: mount a kubeconfig file (a Secret volume) and set "
    'kubeconfig = "/path/to/it" (docs/clusters.md)'
)

Problem = Callable[[tuple[str, ...], str, str | None], None]


def parse_clusters(data: Mapping[str, Any], problem: Problem) -> dict[str, ClusterRef]:
    """Every [clusters.NAME] table as a ClusterRef, by name; problems go to `problem`."""
    raw = data.get("clusters", {})
    if not isinstance(raw, dict):
        problem(("clusters",), '"clusters" must be a table, e.g. [clusters.prod]', None)
        return {}
    out: dict[str, ClusterRef] = {}
    for name, table in raw.items():
        # one with problems is still known by name: the config fails on its own problems,
        # not on "unknown cluster" at every site that names it
        out[name] = _cluster(name, table, problem) or ClusterRef(name)
    return out


def _cluster(name: str, table: Any, problem: Problem) -> ClusterRef | None:
    where = ("clusters", name)
    if not isinstance(table, dict):
        problem(where, f'cluster "{name}" must be a table: [clusters.{name}]', None)
        return None
    ok = True
    if name == HOME_CLUSTER:
        problem(
            where,
            f'"{HOME_CLUSTER}" is the cluster the reconciler runs in and needs no table; '
            "name this one differently",
            None,
        )
        ok = False
    elif not _NAME_RE.match(name):
        problem(where, "cluster names are DNS labels: lowercase letters, digits and '-'", None)
        ok = False
    for key in table:
        if key in CLUSTER_KEYS:
            continue
        ok = False
        if _CREDENTIAL_KEY.search(key):
            problem((*where, key), f'"{key}": {_MOUNT_IT}', None)
        else:
            allowed = ", ".join(CLUSTER_KEYS)
            problem((*where, key), f'unknown key "{key}"; allowed: {allowed}', None)
    values = {key: _string(table, key, where, problem) for key in CLUSTER_KEYS}
    kubeconfig, context = values["kubeconfig"], values["context"]
    if kubeconfig is not None and not kubeconfig.startswith("/"):
        problem(
            (*where, "kubeconfig"),
            '"kubeconfig" must be the absolute path of a mounted file, e.g. '
            '"/var/run/clusters/prod/kubeconfig"',
            None,
        )
        ok = False
    if "kubeconfig" not in table and "context" not in table and ok:
        problem(where, f'cluster "{name}" needs "kubeconfig" (a mounted file) or "context"', None)
        ok = False
    if not ok or None in (values[k] for k in table if k in CLUSTER_KEYS):
        return None
    return ClusterRef(name, kubeconfig, context)


def _string(
    table: Mapping[str, Any], key: str, where: tuple[str, ...], problem: Problem
) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        problem((*where, key), f'"{key}" must be a non-empty string', None)
        return None
    if _CREDENTIAL_VALUE.search(value):
        problem((*where, key), f'"{key}" holds what looks like a credential; {_MOUNT_IT}', None)
        return None
    return value


def site_cluster(
    raw: Mapping[str, Any],
    defaults: Mapping[str, Any],
    clusters: Mapping[str, ClusterRef],
    at: tuple[tuple[str, ...], str],
    problem: Problem,
) -> ClusterRef | None:
    """The site's cluster (its own `cluster`, else [defaults]'): None for the home cluster; an
    unknown name is a problem at the line that names it. `at`: the site's table and its name.
    Every delivery reaches every cluster (a Helm release, a git site's Deployment)."""
    where, site = at
    key_where = (*where, "cluster") if "cluster" in raw else ("defaults", "cluster")
    value = raw.get("cluster", defaults.get("cluster"))
    if value is None or value == HOME_CLUSTER:
        return None
    if not isinstance(value, str):
        problem(key_where, f'"cluster" must be a string, not {type(value).__name__}', site)
        return None
    ref = clusters.get(value)
    if ref is None:
        known = ", ".join(f'"{n}"' for n in (HOME_CLUSTER, *clusters))
        problem(
            key_where,
            f'unknown cluster "{value[:80]}": define [clusters.{value[:80]}] (known: {known})',
            site,
        )
    return ref
