"""`reconciler plan` says how many commits each site is behind, with the compare link."""

from __future__ import annotations

import io
import json
from pathlib import Path

from reconciler.adapters.github import GitHubSource
from reconciler.cli.main import main
from reconciler.core import annotations as ann
from reconciler.core.model import Container, ObservedDeployment
from reconciler.settings import GitHubSettings
from reconciler.wiring import Parts
from testkit.github import GitHubStandIn
from testkit.github_fixtures import TOKEN
from tests.fakes import FakeCluster, FakeVerifier

SITES = """\
[defaults]
image = "gcr.io/p/{repo}:{sha}"

[sites.blog]
repo = "acme/blog"
branch = "main"

[sites.shop]
repo = "acme/shop"
branch = "main"
"""


def test_plan_shows_commits_behind_and_the_compare_link(
    github: GitHubStandIn, tmp_path: Path
) -> None:
    github.add_repo("acme/blog", {"main": "0" * 40})
    github.add_repo("acme/shop", {"main": "1" * 40})
    running = github.set_branch("acme/blog", "main", message="Running", author="Ada")
    for i in range(3):
        head = github.set_branch("acme/blog", "main", message=f"Change {i}", author="Grace")
    cluster = FakeCluster()
    cluster.add(
        ObservedDeployment(
            "default",
            "blog",
            (Container("app", f"gcr.io/p/blog:{running}"),),
            annotations={ann.SHA: running},
            resource_version="1",
        )
    )
    cluster.add(
        ObservedDeployment(
            "default",
            "shop",
            (Container("app", "gcr.io/p/shop:" + "1" * 40),),
            resource_version="1",
        )
    )
    source = GitHubSource(GitHubSettings(api_url=github.url, token=TOKEN))
    cfg = tmp_path / "sites.toml"
    cfg.write_text(SITES)
    env = {"GITHUB_API_URL": github.url}

    def plan(*extra: str) -> str:
        out, err = io.StringIO(), io.StringIO()
        parts = Parts(heads=source, cluster=cluster, verifier=FakeVerifier())
        code = main(
            ["plan", "--config", str(cfg), *extra], parts=parts, env=env, stdout=out, stderr=err
        )
        assert code == 0, err.getvalue()
        return out.getvalue()

    github.reset_stats()
    rows = {r["site"]: r for r in json.loads(plan("--output", "json"))}
    web = GitHubSettings(api_url=github.url).web_url  # GitHub Enterprise style: the API's host
    link = f"{web}/acme/blog/compare/{running}...{head}"
    assert rows["blog"]["commits_behind"] == 3 and rows["blog"]["compare_url"] == link
    assert rows["shop"]["commits_behind"] == 0 and rows["shop"]["compare_url"] is None
    assert github.stats()["by_route"]["rest:compare"] == 1  # only the site that is behind

    text = plan()
    assert "BEHIND" in text.splitlines()[0]
    assert f"blog: 3 commit(s) behind {head[:7]}: {link}" in text
