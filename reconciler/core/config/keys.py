"""Every key of sites.toml's [defaults], [service] and [sites.NAME] tables: its type, allowed
values, range and a one-line description. The one model both the validator (sites.py: known
keys, enums, ranges, name patterns) and the JSON Schema (schema.py) read, so they cannot
disagree; [notify] is modelled by notify/config.py's tables, which the schema reads too."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Kind = Literal["string", "boolean", "integer", "strings", "table", "tables"]

VERIFY_MODES = ("registry", "checks", "none")
APPROVAL_MODES = ("auto", "manual")
WINDOW_KINDS = ("deny", "allow")
TARGET_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "CronJob")  # core.model.KINDS
MAX_TARGETS = 20  # workloads of one site
MAX_ROLLOUT_TIMEOUT = 86400
MAX_JITTER = 3600
# Patterns a value must match wherever it is written (JSON Schema and Python agree on them).
REPO_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$"
SITE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
SUBDOMAIN_PATTERN = r"^[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?$"
# A cluster's name is a DNS label (it is a metrics label value and part of messages).
CLUSTER_NAME_PATTERN = r"^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$"
ABSOLUTE_PATH_PATTERN = r"^/"


@dataclass(frozen=True, slots=True)
class Key:
    """One key: ``strings`` is a list of non-empty strings, ``table`` a sub-table, ``tables``
    an array of tables ([[sites.NAME.targets]]) whose keys are ``items``."""

    kind: Kind
    description: str
    enum: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    pattern: str | None = None
    items: Mapping[str, Key] | None = None
    required: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()  # keys of the same table it cannot be written with


_BRANCH = Key("string", "Branch to follow; default: the repository's default branch.")
_NAMESPACE = Key("string", 'Kubernetes namespace of the Deployment; default "default".')
_CONTAINER = Key(
    "string", "Container to update; default: the Deployment's only container (several: error)."
)
_IMAGE = Key(
    "string",
    "Image template, e.g. gcr.io/p/{repo}:{sha}; placeholders {sha} {short_sha} {branch} "
    "{owner} {repo}, and it must contain {sha} or {short_sha}.",
)
_VERIFY = Key(
    "string",
    "How a commit is known to be ready: registry (the image exists, default), checks (its "
    "GitHub checks passed) or none.",
    enum=VERIFY_MODES,
)
_PIN_DIGEST = Key(
    "boolean", "Deploy image:tag@sha256:<digest the registry answered>; default true."
)
_ROLLOUT_TIMEOUT = Key(
    "integer",
    "Seconds new pods may crash-loop or fail to pull before the rollout counts as failed; "
    "default: the Deployment's progressDeadlineSeconds.",
    minimum=1,
    maximum=MAX_ROLLOUT_TIMEOUT,
)

_CLUSTER = Key(
    "string",
    'The cluster of the site\'s workloads: a [clusters.NAME] table, or "home" (default): the '
    "cluster the reconciler runs in.",
    pattern=CLUSTER_NAME_PATTERN,
)

_WINDOWS = Key(
    "strings",
    "Deploy windows ([windows.NAME]) this site obeys; a site's list replaces [defaults]'.",
)

LABEL_PATTERN = r"^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$"
TARGET: Mapping[str, Key] = {
    "kind": Key(
        "string",
        'The workload kind; default "Deployment". A Job cannot be a target (its pod template '
        "is immutable): use a CronJob, or an init container of the workload that needs it.",
        enum=TARGET_KINDS,
    ),
    "name": Key("string", "Required: the workload's name.", pattern=SUBDOMAIN_PATTERN),
    "containers": Key(
        "strings",
        "Containers to set; default: the workload's only container (several: error). "
        "[] with init_containers: only those.",
    ),
    "init_containers": Key("strings", "Init containers to set (a migration, ...); default none."),
    "images": Key(
        "table",
        "Image templates of some of its containers, e.g. { worker = "
        '"gcr.io/p/worker:{sha}" }; the others take the site\'s "image".',
    ),
}
SITE: Mapping[str, Key] = {
    "repo": Key("string", 'Required: the GitHub repository, "owner/name".', pattern=REPO_PATTERN),
    "branch": _BRANCH,
    "namespace": _NAMESPACE,
    "deployment": Key(
        "string", "The Deployment's name; default: the site's name.", pattern=SUBDOMAIN_PATTERN
    ),
    "container": _CONTAINER,
    "image": _IMAGE,
    "paused": Key("boolean", "true: report the site, never change it; default false."),
    "verify": _VERIFY,
    "pin_digest": _PIN_DIGEST,
    "required_checks": Key(
        "strings", 'Check runs or statuses that must pass (only with verify = "checks").'
    ),
    "rollout_timeout": _ROLLOUT_TIMEOUT,
    "targets": Key(
        "tables",
        "The site's workloads, one [[sites.NAME.targets]] each, all moved to the same commit "
        'together (instead of "deployment" and "container").',
        maximum=MAX_TARGETS,
        items=TARGET,
        required=("name",),
        excludes=("deployment", "container"),
    ),
    "notify": Key("table", "This site's notifications ([sites.NAME.notify]), or false: none."),
    "git": Key(
        "table",
        "Deliver through a configuration repository ([sites.NAME.git]): each deploy commits the "
        "image there; a GitOps tool applies it. README: GitOps write-back.",
    ),
    "cluster": _CLUSTER,
    "promote_from": Key(
        "string",
        "Follow this site instead of a branch: deploy the commit it runs once it has soaked "
        '(no "branch" then).',
        pattern=SITE_NAME_PATTERN,
    ),
    "soak": Key(
        "string",
        'How long the source must run a commit available first, e.g. "30m", "1h30m"; default 0.',
        pattern=r"^(?:\d+d)?(?:\d+h)?(?:\d+m)?$",
    ),
    "approval": Key(
        "string",
        "manual: a person approves each commit (reconciler approve) before it deploys; "
        'default "auto".',
        enum=APPROVAL_MODES,
    ),
    "windows": _WINDOWS,
    "helm": Key(
        "table",
        "Deliver by upgrading this Helm release ([sites.NAME.helm]) instead of patching the "
        "Deployment: release, namespace, and the values keys of the image.",
    ),
}
HELM: Mapping[str, Key] = {
    "release": Key(
        "string", "The Helm release's name; default: the site's name.", pattern=SUBDOMAIN_PATTERN
    ),
    "namespace": Key("string", "The release's namespace; default: the site's namespace."),
    "values": Key(
        "table",
        "The values keys (dotted paths) that carry the image: tag, repository, digest; default "
        '{ tag = "image.tag" }.',
    ),
}
VALUES_KEY_PATTERN = r"^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$"
HELM_VALUES: Mapping[str, Key] = {
    "tag": Key(
        "string", "The values key of the image tag, e.g. image.tag.", pattern=VALUES_KEY_PATTERN
    ),
    "repository": Key(
        "string",
        "The values key of the image repository (with tag), e.g. image.repository.",
        pattern=VALUES_KEY_PATTERN,
    ),
    "digest": Key(
        "string",
        "The values key of the image digest (sha256:...), e.g. image.digest.",
        pattern=VALUES_KEY_PATTERN,
    ),
}
DEFAULTS: Mapping[str, Key] = {
    name: SITE[name]
    for name in (
        "branch",
        "namespace",
        "container",
        "image",
        "verify",
        "pin_digest",
        "rollout_timeout",
        "cluster",
        "windows",
    )
}
DEFAULTS = {
    **DEFAULTS,
    "git": Key(
        "table", "What every [sites.NAME.git] inherits: repo, branch, mode, author, committer."
    ),
}
WRITE_MODES = ("commit", "pr")
GIT_PERSON_PATTERN = r"^[^<>]+ <[^<>@\s]+@[^<>\s]+>$"
GIT_KEY_PATTERN = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
MANIFEST_PATTERN = r"^[A-Za-z]+/[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?$"
# [sites.NAME.git]: the configuration repository, the file, how the image is written there
# (exactly one of kustomize_image, values_tag / values_digest, manifest), mode and people.
GIT: Mapping[str, Key] = {
    "repo": Key(
        "string", 'Required: the configuration repository, "owner/name".', pattern=REPO_PATTERN
    ),
    "branch": Key("string", 'Branch the deploy commits go to (mode "pr": the base); "main".'),
    "file": Key(
        "string", "Required: the file's path in the repository, e.g. apps/shop/kustomization.yaml."
    ),
    "kustomize_image": Key(
        "string", "A kustomization's images: entry (its name): newTag is written."
    ),
    "digest": Key(
        "boolean", "With kustomize_image: write newName + digest instead of newTag; false."
    ),
    "values_tag": Key(
        "string",
        "A Helm values file's key path of the tag, e.g. image.tag.",
        pattern=GIT_KEY_PATTERN,
    ),
    "values_repository": Key(
        "string", "... and of the repository, e.g. image.repository.", pattern=GIT_KEY_PATTERN
    ),
    "values_digest": Key(
        "string", "... and of a digest, e.g. image.digest.", pattern=GIT_KEY_PATTERN
    ),
    "manifest": Key(
        "string",
        "A plain manifest's object, \"Kind/name\" (e.g. Deployment/shop): its container's image.",
        pattern=MANIFEST_PATTERN,
    ),
    "container": Key("string", "With manifest: the container; default: the site's container."),
    "mode": Key(
        "string",
        "commit (a commit on the branch, default) or pr (one pull request per site from "
        "branch reconciler/NAME).",
        enum=WRITE_MODES,
    ),
    "author": Key(
        "string",
        "The commits' author, \"Name <email>\"; default: the token's user.",
        pattern=GIT_PERSON_PATTERN,
    ),
    "committer": Key(
        "string",
        'The commits\' committer, "Name <email>"; default: the author.',
        pattern=GIT_PERSON_PATTERN,
    ),
}
GIT_DEFAULTS: Mapping[str, Key] = {
    name: GIT[name] for name in ("repo", "branch", "mode", "author", "committer")
}
CLUSTER: Mapping[str, Key] = {
    "kubeconfig": Key(
        "string",
        "Absolute path of a mounted kubeconfig file that reaches the cluster (credentials stay "
        "in that file, never in sites.toml); default: the reconciler's own kubeconfig.",
        pattern=ABSOLUTE_PATH_PATTERN,
    ),
    "context": Key("string", "The kubeconfig context to use; default: its current context."),
}
WINDOW: Mapping[str, Key] = {  # [windows.NAME] (core/windows.py reads them: WINDOW_KEYS)
    "kind": Key("string", "deny (a freeze) or allow (deploys only inside it).", enum=WINDOW_KINDS),
    "rrule": Key(
        "string", 'When it starts: an RFC 5545 RRULE, e.g. "FREQ=WEEKLY;BYDAY=FR;BYHOUR=16".'
    ),
    "cron": Key("string", 'When it starts: a five-field crontab, e.g. "0 16 * * 5".'),
    "duration": Key("string", 'How long each occurrence lasts, e.g. "65h", "1h30m", "2d".'),
    "timezone": Key("string", 'Required: the IANA zone its times are in, e.g. "Europe/Berlin".'),
    "start": Key("string", "A date or local time: the first start, or a one-off window's start."),
    "end": Key("string", "A date or local time: where it ends (a plain date includes that day)."),
}
SERVICE: Mapping[str, Key] = {
    "schedule": Key(
        "string", 'When to sync every site, a crontab expression; default "0 * * * *".'
    ),
    "jitter": Key(
        "integer",
        "Seconds of random delay added to each scheduled run; default 0.",
        minimum=0,
        maximum=MAX_JITTER,
    ),
    "timezone": Key("string", 'IANA time zone of the schedule; default "UTC".'),
}
TOP: Mapping[str, str] = {
    "defaults": "Values every site inherits unless it sets the key itself.",
    "service": "Settings of `reconciler serve`.",
    "sites": "One table per site, [sites.NAME]: letters, digits, - _ and . in NAME.",
    "notify": "Notifications (docs/notifications.md); secrets are named, never written here.",
    "clusters": "Other clusters, [clusters.NAME] (docs/clusters.md): a kubeconfig file and/or "
    "a context each; sites name theirs with cluster = NAME.",
    "windows": "Named deploy windows, [windows.NAME]: deny (freeze) or allow, by RRULE or cron.",
}
