"""Promotion (#20) into a site of another delivery (#21), on the local cluster with the real helm:
staging, whose Deployment the reconciler patches, feeds production, a Helm release of the test
chart. Production upgrades its release to the commit staging ran for its soak, with the image of
its own template and a `helm history` description naming the commit, once a person approved
it (recorded on the release's Deployment); it never takes the branch
head staging has not proven, nor a commit that failed on staging.

The engine's clock is the test's (wiring.Parts.clock): the soak is judged at the time the test
says, while every rollout is the controllers' real one and every upgrade helm's. Nothing sleeps.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from reconciler.cli.main import main
from reconciler.core.gates import APPROVED_SHA
from reconciler.wiring import Parts
from testkit.controlplane import LocalCluster, crashloop_sha
from testkit.deployments import create_deployment, get_deployment
from testkit.github import GitHubStandIn, random_sha
from testkit.github_fixtures import TOKEN
from testkit.helm import Helm
from testkit.wait import wait_until

CHART = Path(__file__).resolve().parents[2] / "testkit" / "charts" / "web"
WAIT = ("--wait", "--wait-timeout", "180")
NOW = 1_900_000_000.0


class Pipeline:
    """Deployment `web-staging` (patched) follows main; release `web` (Helm) promotes from it."""

    def __init__(  # noqa: PLR0917 - the fixtures it is made of
        self, helm: Path, cluster: LocalCluster, api: Any, ns: str, github: GitHubStandIn, tmp: Path
    ) -> None:
        self.api, self.ns, self.github, self.now = api, ns, github, NOW
        self.person = Helm(helm, home=tmp / "person", kubeconfig=cluster.kubeconfig_path)
        self.person.ok("install", "web", CHART, "-n", ns, "--set", "image.tag=v1")
        create_deployment(api, ns, "web-staging", "stage.example/web:before")
        self.sites = tmp / "sites.toml"
        self.sites.write_text(
            f'[defaults]\nnamespace = "{ns}"\nverify = "none"\nrollout_timeout = 1\n\n'
            '[sites.staging]\nrepo = "acme/web"\nbranch = "main"\ndeployment = "web-staging"\n'
            'container = "app"\nimage = "stage.example/web:{sha}"\n\n'
            '[sites.prod]\nrepo = "acme/web"\nimage = "registry.example/web:{sha}"\n'
            'promote_from = "staging"\nsoak = "10m"\napproval = "manual"\n\n'
            '[sites.prod.helm]\nrelease = "web"\nvalues = { tag = "image.tag" }\n'
        )
        self.env = {
            "GITHUB_API_URL": github.url,
            "GITHUB_TOKEN": TOKEN,
            "KUBECONFIG": str(cluster.kubeconfig_path),
            "RECONCILER_HELM": str(helm),
            "USER": "alice",
        }
        github.add_repo("acme/web", {"main": random_sha()})

    def head(self, sha: str | None = None) -> str:
        sha = sha or random_sha()
        self.github.set_branch("acme/web", "main", sha)
        return sha

    def cli(self, *argv: str, code: int | None = 0) -> Any:
        """The CLI's JSON answer; `code` is the exit code it must give (None: any)."""
        out, err = io.StringIO(), io.StringIO()
        got = main(
            [*argv, "--config", str(self.sites), "--output", "json"],
            env=self.env,
            stdout=out,
            stderr=err,
            parts=Parts(clock=lambda: self.now),
        )
        assert code is None or got == code, (out.getvalue(), err.getvalue())
        return json.loads(out.getvalue())

    def site(self, verb: str, name: str, *args: str, code: int | None = 0) -> dict[str, Any]:
        (result,) = self.cli(verb, "--site", name, *args, code=code)
        return dict(result)

    def ship_staging(self) -> None:
        """Sync staging until its rollout is available; the sync after that records when."""
        self.site("sync", "staging", *WAIT)
        wait_until(
            lambda: self.site("plan", "staging")["rollout"] == "available",
            "staging's rollout to be available",
            timeout=120,
        )
        self.site("sync", "staging")

    def history(self) -> list[tuple[int, str]]:
        rows = json.loads(self.person.ok("history", "web", "-n", self.ns, "-o", "json"))
        return [(r["revision"], r["description"]) for r in rows]

    def image(self, name: str) -> str:
        spec = get_deployment(self.api, self.ns, name)["spec"]["template"]["spec"]
        return str(next(c["image"] for c in spec["containers"] if c["name"] == "app"))


@pytest.fixture
def pipeline(  # noqa: PLR0917 - fixtures
    helm: Path,
    local_cluster: LocalCluster,
    cluster_api_client: Any,
    cluster_namespace: str,
    github: GitHubStandIn,
    tmp_path: Path,
) -> Pipeline:
    return Pipeline(helm, local_cluster, cluster_api_client, cluster_namespace, github, tmp_path)


def test_a_helm_release_takes_what_staging_proved_and_never_a_failed_commit(
    pipeline: Pipeline,
) -> None:
    p = pipeline
    sha = p.head()
    before = p.site("sync", "prod")  # staging runs no commit of ours: nothing to promote
    assert before["action"] == "skip" and not before["applied"], before
    assert p.history() == [(1, "Install complete")]

    p.ship_staging()
    p.now += 4 * 60
    soaking = p.site("sync", "prod")
    assert soaking["action"] == "skip" and not soaking["applied"], soaking
    assert soaking["reason"] == f"staging runs {sha[:7]}, available 4 of 10 min"
    assert p.history() == [(1, "Install complete")]  # never before the soak

    p.now += 6 * 60  # the edge counts
    waiting = p.site("sync", "prod")
    assert waiting["action"] == "skip" and not waiting["applied"], waiting
    assert waiting["reason"] == f"waiting for approval of {sha[:7]} (`reconciler approve prod`)"
    approved = p.cli("approve", "prod")  # recorded on the release's Deployment, then synced
    assert approved["message"].startswith(f"prod: {sha[:7]} approved by alice"), approved
    assert get_deployment(p.api, p.ns, "web")["metadata"]["annotations"][APPROVED_SHA] == sha
    assert p.history()[-1] == (2, f"reconciler: main@{sha[:7]}")
    wait_until(
        lambda: p.site("sync", "prod")["rollout"] == "available",
        "the release's rollout to be available",
        timeout=120,
    )
    assert p.image("web") == f"registry.example/web:{sha}"  # its own template's image
    again = p.site("sync", "prod")
    assert again["action"] == "in-sync" and again["running_sha"] == sha, again
    assert again["reason"] == f"runs {sha[:7]} like staging", again

    ahead = p.head()  # the branch moves on; staging has not run it yet
    p.now += 60 * 60
    unproven = p.site("sync", "prod")
    assert unproven["action"] == "in-sync" and p.history()[-1][0] == 2, unproven

    bad = p.head(crashloop_sha())
    assert ahead != bad and p.site("sync", "staging")["applied"]
    seen: list[dict[str, Any]] = []

    def rolled_back() -> bool:
        seen.append(p.site("sync", "staging", code=None))
        return bool(seen[-1]["action"] == "rolled-back")

    wait_until(rolled_back, "staging's failed rollout to be rolled back", timeout=120)
    assert seen[-1]["failed_sha"] == bad, seen[-1]
    p.now += 60 * 60  # however long it waits
    after = p.site("sync", "prod")
    assert after["action"] == "in-sync" and not after["applied"], after
    assert after["running_sha"] == sha and after["reason"] == f"runs {sha[:7]} like staging"
    assert p.image("web") == f"registry.example/web:{sha}" and len(p.history()) == 2
