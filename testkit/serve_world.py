"""pytest fixtures for serve-mode tests: a cluster and GitHub world, and a served process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit.controlplane import ControlPlane
from testkit.deployments import create_deployment, get_deployment
from testkit.github import GitHubStandIn, random_sha
from testkit.github_fixtures import TOKEN
from testkit.serve_process import ServeProcess

TRIGGER = "s3cret-trigger-token-of-at-least-32-bytes"
QUIET_SCHEDULE = '[service]\nschedule = "0 0 1 1 *"\n\n'  # once a year


def sites_toml(ns: str, extra: str = "") -> str:
    return (
        f'[defaults]\nnamespace = "{ns}"\nimage = "gcr.io/p/{{repo}}:{{sha}}"\nverify = "none"\n\n'
        '[sites.blog]\nrepo = "acme/blog"\ncontainer = "app"\n\n'
        '[sites.shop]\nrepo = "acme/shop"\n' + extra
    )


@pytest.fixture
def world(
    control_plane: ControlPlane, kube_api_client: Any, k8s_namespace: str, github: GitHubStandIn
) -> dict[str, Any]:
    github.add_repo("acme/blog", {"main": random_sha()})
    github.add_repo("acme/shop", {"main": random_sha()})
    github.add_repo("acme/docs", {"main": random_sha()})
    for name, sidecar in (("blog", True), ("shop", False), ("docs", False)):
        create_deployment(
            kube_api_client, k8s_namespace, name, f"gcr.io/p/{name}:old", sidecar=sidecar
        )
    return {"ns": k8s_namespace, "api": kube_api_client, "gh": github, "cp": control_plane}


def start(world: dict[str, Any], tmp_path: Path, **env: str) -> ServeProcess:
    config = tmp_path / "sites.toml"
    if not config.exists():  # no scheduled sync during a test (the default fires every hour)
        config.write_text(QUIET_SCHEDULE + sites_toml(world["ns"]))
    base = {
        "GITHUB_API_URL": world["gh"].url,
        "GITHUB_TOKEN": TOKEN,
        "KUBECONFIG": str(world["cp"].kubeconfig_path),
        "RECONCILER_TRIGGER_TOKEN": TRIGGER,
        "POD_NAMESPACE": world["ns"],
        "POD_NAME": "reconciler-test-0",
    }
    base.update(env)
    return ServeProcess(config, base, tmp_path / "serve.log").start()


@pytest.fixture
def served(world: dict[str, Any], tmp_path: Path) -> Iterator[ServeProcess]:
    with start(world, tmp_path) as proc:
        proc.wait_for(
            lambda: proc.request("GET", "/status")[1]["last_sync"], what="the startup sync"
        )
        yield proc


def image(world: dict[str, Any], name: str, container: str | None = None) -> str:
    d = get_deployment(world["api"], world["ns"], name)
    cs = d["spec"]["template"]["spec"]["containers"]
    return str(next(c["image"] for c in cs if container in (None, c["name"])))
