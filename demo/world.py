"""The demo's example sites: their sites.toml, their repositories and their Deployments."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import kubernetes

from testkit.deployments import create_deployment

NAMESPACE = "demo"
IMAGE = "demo.local/{repo}:{short_sha}"
# kwok crash-loops any container whose image contains this marker (testkit/controlplane/cluster.py)
CRASHING_IMAGE = "demo.local/crashloop/{repo}:{short_sha}"
ROLLOUT_TIMEOUT = 15  # seconds of crash-looping new pods before the rollout counts as failed
SCHEDULE_OFFLINE = 'schedule = "* * * * *"  # every minute: a `kubectl rollout undo` shows soon'
SCHEDULE_ONLINE = (
    'schedule = "*/10 * * * *"  # anonymous GitHub: 60 requests an hour; a sync costs one a site'
)


@dataclass(frozen=True)
class Site:
    name: str
    online_repo: str  # a real public repository (branch: its default branch)
    offline_what: str  # what the site shows, for sites.toml
    online_what: str


SITES = (
    Site(
        "blog",
        "octocat/Hello-World",
        "follows its branch: `scripts/demo push blog` deploys a new commit",
        "follows its branch",
    ),
    Site(
        "shop",
        "kubernetes/kubernetes",
        "`kubectl rollout undo` it: the site is held, not put back",
        "`kubectl rollout undo` it: the site is held, not put back",
    ),
    Site(
        "checkout",
        "python/cpython",
        "`scripts/demo push checkout --bad`: the commit crash-loops and is rolled back",
        "every commit of it crash-loops (the image has kwok's crashloop marker): rolled back",
    ),
)
BAD_SITE = "checkout"
UNDO_SITE = "shop"
# production: a staging → production pair with blog as staging (README: Promotion)
PRODUCTION = "blog-prod"
PRODUCTION_SOURCE = "blog"
PRODUCTION_IMAGE = "demo.local/prod/{repo}:{short_sha}"  # its own registry path
SOAK = "1m"


# one release (README: Targets): a queue worker and a nightly CronJob built from the same commit
RELEASE = "reports"
RELEASE_REPO_ONLINE = "rust-lang/rust"
RELEASE_JOB_IMAGE = "demo.local/reports-job:{short_sha}"  # the CronJob's own image, same commit


def offline_repo(site: str) -> str:
    """The stand-in repository an offline site follows."""
    return f"demo/{site}"


def sites_toml(*, offline: bool) -> str:
    """The example sites.toml (commented: it is the first one a newcomer reads)."""
    head = f"""\
# The demo's sites.toml, written by scripts/demo ({"offline" if offline else "online"} mode).
# See the README's sites.toml reference for every key.

[defaults]
namespace = "{NAMESPACE}"
image = "{IMAGE}"
# verify = "none": the demo has no image registry to ask whether an image exists, and its
# kwok nodes "run" any image tag without pulling it. On a real cluster keep the default,
# verify = "registry", so an image that was never built is never rolled out.
verify = "none"
# A crash-looping rollout is rolled back after this many seconds (default: the
# Deployment's progressDeadlineSeconds, 10 minutes).
rollout_timeout = {ROLLOUT_TIMEOUT}

[service]
{SCHEDULE_OFFLINE if offline else SCHEDULE_ONLINE}
jitter = 0
"""
    tables = []
    for site in SITES:
        repo = offline_repo(site.name) if offline else site.online_repo
        what = site.offline_what if offline else site.online_what
        lines = [f"[sites.{site.name}]  # {what}", f'repo = "{repo}"', 'container = "app"']
        if site.name == BAD_SITE and not offline:
            lines.append(f'image = "{CRASHING_IMAGE}"')
        tables.append("\n".join(lines) + "\n")
    source = next(s for s in SITES if s.name == PRODUCTION_SOURCE)
    repo = offline_repo(source.name) if offline else source.online_repo
    tables.append(
        f"[sites.{PRODUCTION}]  # production: deploys what {source.name} (its staging) ran "
        f"for {SOAK}, once you approve it\n"
        f"# (the page's Approve button, or `scripts/demo run approve {PRODUCTION}`)\n"
        f'repo = "{repo}"\ncontainer = "app"\nimage = "{PRODUCTION_IMAGE}"\n'
        f'promote_from = "{source.name}"\nsoak = "{SOAK}"\napproval = "manual"\n'
    )
    release = offline_repo(RELEASE) if offline else RELEASE_REPO_ONLINE
    tables.append(
        f"[sites.{RELEASE}]  # one release: a worker Deployment and a nightly CronJob move to\n"
        "# the same commit together and roll back together\n"
        f'repo = "{release}"\n\n'
        f"[[sites.{RELEASE}.targets]]\n"
        f'name = "{RELEASE}-worker"\ncontainers = ["app"]\n\n'
        f"[[sites.{RELEASE}.targets]]\n"
        f'kind = "CronJob"\nname = "{RELEASE}-nightly"\ncontainers = ["report"]\n'
        f'images = {{ report = "{RELEASE_JOB_IMAGE}" }}\n'
    )
    return head + "\n" + "\n".join(tables)


def create_deployments(api: Any) -> None:
    """The demo namespace and its Deployments: two replicas, an init container, a sidecar
    (an Envoy proxy the reconciler never touches), ports and env."""
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespace(
        kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=NAMESPACE))
    )
    for name in (*(site.name for site in SITES), PRODUCTION, f"{RELEASE}-worker"):
        create_deployment(api, NAMESPACE, name, f"demo.local/{name}:v1", sidecar=True)
    pod = {
        "restartPolicy": "Never",
        "containers": [{"name": "report", "image": "demo.local/reports-job:v1"}],
    }
    nightly = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": f"{RELEASE}-nightly"},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": pod}}}},
    }
    batch: Any = kubernetes.client.BatchV1Api(api)
    batch.create_namespaced_cron_job(NAMESPACE, nightly)
