"""Environments (#20) on the local cluster (controllers, scheduler, kwok nodes) with the GitHub
stand-in, through the CLI: a staging → production pair where production promotes what staging
ran for its soak, waits for a person's approval of that commit and obeys a deploy window.

The engine's clock is the test's (wiring.Parts.clock): the soak and the windows are judged at
the time the test says, while every rollout is the controllers' real one. Nothing sleeps.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from reconciler.cli.main import main
from reconciler.core import annotations as ann
from reconciler.core import gates
from reconciler.core.promotion import AVAILABLE_AT
from reconciler.core.rollout.state import parse_time
from reconciler.core.windows import WINDOW_OVERRIDE, WINDOW_OVERRIDE_BY, WINDOW_OVERRIDE_SHA
from reconciler.wiring import Parts
from testkit.controlplane import LocalCluster, crashloop_sha
from testkit.deployments import create_deployment, get_deployment
from testkit.github import GitHubStandIn, random_sha
from testkit.github_fixtures import TOKEN
from testkit.wait import wait_until

WAIT = ("--wait", "--wait-timeout", "180")
NOW = 1_900_000_000.0  # a Tuesday (2030-03-17 is a Sunday; this is 2030-03-17T17:46:40Z)


class Pipeline:
    """blog-staging follows main; blog-prod promotes from it (soak 10 min, manual approval,
    the windows given). Both Deployments live in one namespace."""

    def __init__(
        self, api: Any, ns: str, github: GitHubStandIn, tmp: Path, kubeconfig: Path
    ) -> None:
        self.api, self.ns, self.github = api, ns, github
        self.now = NOW
        self.sites = tmp / "sites.toml"
        self.env = {
            "GITHUB_API_URL": github.url,
            "GITHUB_TOKEN": TOKEN,
            "KUBECONFIG": str(kubeconfig),
            "USER": "alice",
        }
        self.first = random_sha()
        github.add_repo("acme/blog", {"main": self.first})
        create_deployment(api, ns, "blog-staging", "stage.example/blog:before")
        create_deployment(api, ns, "blog-prod", "prod.example/blog:before")
        self.write()

    def write(self, windows: str = "", site_windows: str = "") -> None:
        self.sites.write_text(
            f'{windows}\n[defaults]\nnamespace = "{self.ns}"\ncontainer = "app"\n'
            'verify = "none"\n\n'
            '[sites.staging]\nrepo = "acme/blog"\nbranch = "main"\ndeployment = "blog-staging"\n'
            'image = "stage.example/blog:{sha}"\nrollout_timeout = 1\n\n'
            '[sites.prod]\nrepo = "acme/blog"\ndeployment = "blog-prod"\n'
            'image = "prod.example/blog:{sha}"\npromote_from = "staging"\nsoak = "10m"\n'
            f'approval = "manual"\n{site_windows}'
        )

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

    def refused(self, *argv: str) -> str:
        """What the CLI says when it refuses (exit code 1 or 2, nothing on stdout)."""
        out, err = io.StringIO(), io.StringIO()
        got = main(
            [*argv, "--config", str(self.sites)],
            env=self.env,
            stdout=out,
            stderr=err,
            parts=Parts(clock=lambda: self.now),
        )
        assert got in (1, 2) and not out.getvalue(), (got, out.getvalue())
        return err.getvalue()

    def site(self, verb: str, name: str, *args: str, code: int | None = 0) -> dict[str, Any]:
        (result,) = self.cli(verb, "--site", name, *args, code=code)
        return dict(result)

    def ship_staging(self) -> dict[str, Any]:
        """Sync staging and wait until its rollout is available, as the controller reports it
        (old pods gone too); the sync after that records when (available-at), by the clock."""
        started = self.site("sync", "staging", *WAIT)

        def available() -> bool:
            return bool(self.site("plan", "staging")["rollout"] == "available")

        wait_until(available, "staging's rollout to be available", timeout=120)
        self.site("sync", "staging")
        return started

    def head(self, sha: str | None = None) -> str:
        sha = sha or random_sha()
        self.github.set_branch("acme/blog", "main", sha)
        return sha

    def get(self, name: str) -> dict[str, Any]:
        return get_deployment(self.api, self.ns, name)

    def notes(self, name: str) -> dict[str, str]:
        return dict(self.get(name)["metadata"].get("annotations") or {})

    def image(self, name: str) -> str:
        return str(self.get(name)["spec"]["template"]["spec"]["containers"][0]["image"])

    def events(self, name: str) -> dict[str, str]:
        core = kubernetes.client.CoreV1Api(self.api)
        return {
            str(e.reason): str(e.message)
            for e in core.list_namespaced_event(self.ns).items
            if e.involved_object.name == name
        }


@pytest.fixture
def pipeline(
    local_cluster: LocalCluster,
    cluster_api_client: Any,
    cluster_namespace: str,
    github: GitHubStandIn,
    tmp_path: Path,
) -> Pipeline:
    return Pipeline(
        cluster_api_client, cluster_namespace, github, tmp_path, local_cluster.kubeconfig_path
    )


def test_production_promotes_what_staging_ran_for_the_soak_once_approved_by_cli(
    pipeline: Pipeline,
) -> None:
    sha = pipeline.first
    staging = pipeline.ship_staging()
    assert staging["applied"]
    # the sync recorded when the rollout was available, by the test's clock
    assert parse_time(pipeline.notes("blog-staging")[AVAILABLE_AT]) == NOW

    pipeline.now = NOW + 4 * 60
    soaking = pipeline.site("plan", "prod")
    assert soaking["action"] == "skip"
    assert soaking["reason"] == f"staging runs {sha[:7]}, available 4 of 10 min"
    assert pipeline.site("sync", "prod")["applied"] is False
    assert pipeline.image("blog-prod") == "prod.example/blog:before"

    pipeline.now = NOW + 10 * 60  # the edge counts: exactly the soak is ready
    waiting = pipeline.site("sync", "prod")
    assert waiting["reason"] == f"waiting for approval of {sha[:7]} (`reconciler approve prod`)"
    assert not waiting["applied"]

    approved = pipeline.cli("approve", "prod")
    assert approved["message"].startswith(f"prod: {sha[:7]} approved by alice (cli)")
    (deployed,) = approved["sync"]
    assert deployed["applied"] and deployed["target_image"] == f"prod.example/blog:{sha}"
    notes = pipeline.notes("blog-prod")
    assert notes[gates.APPROVED_SHA] == sha and notes[gates.APPROVED_BY] == "alice (cli)"
    assert notes[ann.SHA] == sha
    assert (
        f"approved {sha[:7]} for deploy by alice (cli)" in pipeline.events("blog-prod")["Approved"]
    )

    # the approval named its commit: the next one soaks and waits again
    nxt = pipeline.head()
    pipeline.ship_staging()
    pipeline.now += 11 * 60
    again = pipeline.site("sync", "prod")
    assert again["reason"] == f"waiting for approval of {nxt[:7]} (`reconciler approve prod`)"
    assert pipeline.image("blog-prod") == f"prod.example/blog:{sha}"


def test_a_failing_staging_rollout_never_promotes(pipeline: Pipeline) -> None:
    good = pipeline.first
    pipeline.ship_staging()
    pipeline.now += 11 * 60
    pipeline.cli("approve", "prod")
    pipeline.site("sync", "prod", *WAIT)
    assert pipeline.image("blog-prod") == f"prod.example/blog:{good}"

    bad = pipeline.head(crashloop_sha())
    started = pipeline.site("sync", "staging")
    assert started["applied"]
    rolling = pipeline.site("plan", "prod")
    assert rolling["action"] == "skip" and rolling["reason"].startswith(
        f"staging rolls out {bad[:7]}"
    )
    # a sync rolls it back once its new pods were seen stuck for the rollout timeout
    seen: list[dict[str, Any]] = []

    def rolled_back() -> bool:
        seen.append(pipeline.site("sync", "staging", code=None))
        return bool(seen[-1]["action"] == "rolled-back")

    wait_until(rolled_back, "staging's failed rollout to be rolled back", timeout=120)
    assert seen[-1]["failed_sha"] == bad, seen[-1]
    assert pipeline.notes("blog-staging")[ann.SHA] == good

    pipeline.now += 60 * 60  # however long it waits
    after = pipeline.site("sync", "prod")
    assert after["action"] == "in-sync" and after["reason"] == f"runs {good[:7]} like staging"
    assert pipeline.image("blog-prod") == f"prod.example/blog:{good}"
    assert "Approved" in pipeline.events("blog-prod")  # only the first one's
    # not even a person's approval of that very commit lets it through
    pipeline.cli("approve", "prod", "--sha", bad)
    assert pipeline.site("sync", "prod")["reason"] == f"runs {good[:7]} like staging"
    assert pipeline.image("blog-prod") == f"prod.example/blog:{good}"
    short = pipeline.refused("approve", "prod", "--sha", bad[:7])
    assert "waits for no approval" in short


def test_a_freeze_defers_the_deploy_and_an_override_deploys_it_on_record(
    pipeline: Pipeline,
) -> None:
    sha = pipeline.first
    launch = (
        '[windows.launch-freeze]\nkind = "deny"\ntimezone = "Europe/Berlin"\n'
        'start = "2030-03-16"\nend = "2030-03-19"\n'
    )
    pipeline.write(launch, 'windows = ["launch-freeze"]\n')
    pipeline.ship_staging()
    pipeline.now += 11 * 60
    pipeline.cli("approve", "prod")  # approves; the sync after it is frozen
    frozen = pipeline.site("sync", "prod")
    assert frozen["action"] == "skip" and not frozen["applied"]
    assert frozen["reason"] == "frozen until Wed 00:00 Europe/Berlin by window launch-freeze"
    assert pipeline.site("plan", "prod")["reason"] == frozen["reason"]
    assert pipeline.image("blog-prod") == "prod.example/blog:before"

    assert "--reason" in pipeline.refused("sync", "--site", "prod", "--override-window")

    urgent = pipeline.site("sync", "prod", "--override-window", "--reason", "CVE fix", *WAIT)
    assert urgent["applied"] and urgent["rollout"] == "available"
    assert "through window launch-freeze: override by alice (cli): CVE fix" in urgent["reason"]
    assert pipeline.image("blog-prod") == f"prod.example/blog:{sha}"
    notes = pipeline.notes("blog-prod")
    assert notes[WINDOW_OVERRIDE] == "CVE fix" and notes[WINDOW_OVERRIDE_SHA] == sha
    assert notes[WINDOW_OVERRIDE_BY] == "alice (cli)"
    assert "override by alice (cli): CVE fix" in pipeline.events("blog-prod")["WindowOverride"]


def test_a_commit_that_fails_on_production_is_rolled_back_and_remembered_there(
    pipeline: Pipeline,
) -> None:
    sha = pipeline.first
    pipeline.write(site_windows="rollout_timeout = 1\n")
    crashing = pipeline.sites.read_text().replace(
        'image = "prod.example/blog:{sha}"', 'image = "prod.example/crashloop/blog:{sha}"'
    )
    pipeline.sites.write_text(crashing)  # production's own image of it crash-loops (kwok)
    pipeline.ship_staging()
    pipeline.now += 11 * 60
    (deployed,) = pipeline.cli("approve", "prod")["sync"]  # approve syncs it at once
    assert deployed["applied"] and deployed["target_image"] == f"prod.example/crashloop/blog:{sha}"
    seen: list[dict[str, Any]] = []

    def rolled_back() -> bool:  # what a sync does once the new pods are stuck for 1 s
        seen.append(pipeline.site("sync", "prod", code=None))
        return bool(seen[-1]["action"] == "rolled-back")

    wait_until(rolled_back, "production's failed rollout to be rolled back", timeout=120)
    assert seen[-1]["failed_sha"] == sha, seen[-1]
    assert pipeline.image("blog-prod") == "prod.example/blog:before"
    assert pipeline.notes("blog-prod")[ann.FAILED_SHA] == sha

    pipeline.now += 60 * 60
    after = pipeline.site("sync", "prod")
    assert after["action"] == "skip"
    assert after["reason"] == f"blocked: {sha[:7]} failed here (staging keeps it)"
    assert pipeline.image("blog-staging") == f"stage.example/blog:{sha}"
    assert pipeline.image("blog-prod") == "prod.example/blog:before"


def test_a_follower_of_several_targets_waits_for_the_soak_and_approval_then_moves_them_all(
    pipeline: Pipeline,
) -> None:
    p = pipeline
    create_deployment(p.api, p.ns, "worker-staging", "stage.example/worker:before")
    create_deployment(p.api, p.ns, "worker-prod", "prod.example/worker:before")
    targets = (
        'targets = [{{ name = "blog-{env}", containers = ["app"] }}, {{ name = "worker-{env}", '
        'containers = ["app"], images = {{ app = "{reg}.example/worker:{{sha}}" }} }}]\n'
    )
    p.sites.write_text(
        f'[defaults]\nnamespace = "{p.ns}"\nverify = "none"\nrollout_timeout = 1\n\n'
        '[sites.staging]\nrepo = "acme/blog"\nbranch = "main"\n'
        'image = "stage.example/blog:{sha}"\n' + targets.format(env="staging", reg="stage") + "\n"
        '[sites.prod]\nrepo = "acme/blog"\nimage = "prod.example/blog:{sha}"\n'
        'promote_from = "staging"\nsoak = "10m"\napproval = "manual"\n'
        + targets.format(env="prod", reg="prod")
    )
    sha = p.first
    p.ship_staging()
    assert p.image("worker-staging") == f"stage.example/worker:{sha}"

    p.now = NOW + 4 * 60  # soaking: production, which runs no commit yet, waits; no error
    soaking = p.site("sync", "prod")
    assert soaking["action"] == "skip" and not soaking["applied"], soaking
    assert soaking["reason"] == f"staging runs {sha[:7]}, available 4 of 10 min", soaking
    assert [t["action"] for t in soaking["targets"]] == ["skip", "skip"], soaking

    p.now = NOW + 11 * 60
    waiting = p.site("sync", "prod")
    assert waiting["reason"] == f"waiting for approval of {sha[:7]} (`reconciler approve prod`)"
    (deployed,) = p.cli("approve", "prod")["sync"]
    assert deployed["action"] == "update" and deployed["applied"], deployed
    assert p.image("blog-prod") == f"prod.example/blog:{sha}"
    assert p.image("worker-prod") == f"prod.example/worker:{sha}"
