"""The newest ready commit, forward only, end to end: the real GitHub adapter (history and
checks from the stand-in) and a real API server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reconciler.adapters.github import GitHubSettings, GitHubSource
from reconciler.adapters.kube import KubeCluster
from reconciler.adapters.registry import RegistryVerifier
from reconciler.core.model import Action, SyncRequest
from reconciler.sync import config_file
from reconciler.sync.engine import Engine
from testkit.deployments import create_deployment, get_deployment
from testkit.github import GitHubStandIn, random_sha
from testkit.github_fixtures import TOKEN
from testkit.registry import DistributionRegistry
from tests.integration.test_kube import cluster, containers, write_sites

pytestmark = pytest.mark.controlplane
__all__ = ["cluster"]  # the fixture, used by name


def _image(api: Any, ns: str) -> str:
    return str(containers(get_deployment(api, ns, "blog"))["app"]["image"])


def test_checks_pending_on_the_head_deploy_the_newest_passed_commit_and_never_back(
    cluster: KubeCluster,
    kube_api_client: Any,
    k8s_namespace: str,
    github: GitHubStandIn,
    tmp_path: Path,
) -> None:
    c0, c1, c2, c3 = (random_sha() for _ in range(4))
    github.add_repo("acme/blog", {"main": c0})
    github.set_checks("acme/blog", c0, "success")
    create_deployment(kube_api_client, k8s_namespace, "blog", f"gcr.io/p/blog:{c0}")
    cfg = write_sites(
        tmp_path,
        k8s_namespace,
        '[sites.blog]\nrepo = "acme/blog"\ncontainer = "app"\nverify = "checks"\n',
    )
    heads = GitHubSource(GitHubSettings(api_url=github.url, token=TOKEN))
    engine = Engine(heads=heads, cluster=cluster, verifier=heads)
    assert engine.run(cfg, SyncRequest()).results[0].action is Action.IN_SYNC

    for sha, state in ((c1, "success"), (c2, "failure"), (c3, "pending")):
        github.set_branch("acme/blog", "main", sha)
        github.set_checks("acme/blog", sha, state)  # type: ignore[arg-type]
    (blog,) = engine.run(cfg, SyncRequest()).results
    assert blog.applied, blog.plan.reason
    assert blog.plan.reason.endswith(
        f"head {c3[:7]} not ready (checks pending); deploying {c1[:7]}, 2 commits behind"
    )
    assert _image(kube_api_client, k8s_namespace) == f"gcr.io/p/blog:{c1}"

    # Forward only: with c1 running, c0 is never a candidate, even when c1's checks turn red.
    github.set_checks("acme/blog", c1, "failure")
    (blog,) = engine.run(cfg, SyncRequest()).results
    assert blog.action is Action.SKIP and not blog.applied
    assert _image(kube_api_client, k8s_namespace) == f"gcr.io/p/blog:{c1}"

    github.set_checks("acme/blog", c3, "success")  # the head is ready: it goes out
    (blog,) = engine.run(cfg, SyncRequest()).results
    assert blog.applied and blog.plan.sha == c3 and "not ready" not in blog.plan.reason
    assert _image(kube_api_client, k8s_namespace) == f"gcr.io/p/blog:{c3}"


PINNED = "sha256:" + "7" * 64  # a digest another tool pinned; no registry here answers it


def test_an_adopted_digest_pinned_deployment_is_never_moved_back(
    cluster: KubeCluster,
    kube_api_client: Any,
    k8s_namespace: str,
    github: GitHubStandIn,
    tmp_path: Path,
) -> None:
    """#17: `blog:<c2>@sha256:…` rolled out by another tool, no reconciler.dev/ annotation;
    c2's checks failed, c1's passed, the head c3 is pending: nothing older than c2 goes out."""
    c1, c2, c3 = (random_sha() for _ in range(3))
    github.add_repo("acme/blog", {"main": c1})
    for sha, state in ((c1, "success"), (c2, "failure"), (c3, "pending")):
        github.set_branch("acme/blog", "main", sha)
        github.set_checks("acme/blog", sha, state)  # type: ignore[arg-type]
    running = f"gcr.io/p/blog:{c2}@{PINNED}"
    create_deployment(kube_api_client, k8s_namespace, "blog", running)
    cfg = write_sites(
        tmp_path,
        k8s_namespace,
        '[sites.blog]\nrepo = "acme/blog"\ncontainer = "app"\nverify = "checks"\n',
    )
    heads = GitHubSource(GitHubSettings(api_url=github.url, token=TOKEN))
    engine = Engine(heads=heads, cluster=cluster, verifier=heads)
    (blog,) = engine.run(cfg, SyncRequest()).results
    assert blog.action is Action.SKIP and not blog.applied, blog.plan.reason
    assert blog.plan.running_sha == c2
    assert _image(kube_api_client, k8s_namespace) == running


def test_registry_mode_never_moves_back_when_the_running_image_is_gone(  # noqa: PLR0917
    cluster: KubeCluster,
    kube_api_client: Any,
    k8s_namespace: str,
    github: GitHubStandIn,
    distribution: Callable[[str], DistributionRegistry],
    tmp_path: Path,
) -> None:
    """#17, verify = "registry": c2 runs pinned but its image was deleted, c1's is there, the
    head c3 is not built: c1 is never deployed."""
    reg = distribution("none")
    repo = f"acme/blog{random_sha()[:6]}"
    c1, c2, c3 = (random_sha() for _ in range(3))
    github.add_repo(repo, {"main": c1})
    github.set_branch(repo, "main", c2)
    github.set_branch(repo, "main", c3)
    reg.push_image(repo, c1)
    running = f"{reg.host}/{repo}:{c2}@{PINNED}"
    create_deployment(kube_api_client, k8s_namespace, "blog", running)
    path = tmp_path / "sites.toml"
    path.write_text(
        f'[sites.blog]\nrepo = "{repo}"\nnamespace = "{k8s_namespace}"\ncontainer = "app"\n'
        f'image = "{reg.host}/{{owner}}/{{repo}}:{{sha}}"\nverify = "registry"\n'
    )
    heads = GitHubSource(GitHubSettings(api_url=github.url, token=TOKEN))
    verifier = RegistryVerifier(insecure=[reg.host])
    engine = Engine(heads=heads, cluster=cluster, verifier=verifier)
    (blog,) = engine.run(config_file.load(path), SyncRequest()).results
    assert blog.action is Action.SKIP and not blog.applied, blog.plan.reason
    assert _image(kube_api_client, k8s_namespace) == running
