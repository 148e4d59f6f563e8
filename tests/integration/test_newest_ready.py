"""The newest ready commit, forward only, end to end: the real GitHub adapter (history and
checks from the stand-in) and a real API server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reconciler.adapters.github import GitHubSettings, GitHubSource
from reconciler.adapters.kube import KubeCluster
from reconciler.core.model import Action, SyncRequest
from reconciler.sync.engine import Engine
from testkit.deployments import create_deployment, get_deployment
from testkit.github import GitHubStandIn, random_sha
from testkit.github_fixtures import TOKEN
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
