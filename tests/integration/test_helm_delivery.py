"""Sites delivered by a Helm release, end to end with the real helm on the local cluster (#21):
the CLI's sync upgrades the release (its own chart, --reuse-values, a description naming the
commit) and follows its Deployment; a crash-looping commit is undone by `helm rollback` and never
retried; a person's `helm rollback` holds the site until `reconciler resume`; a dry run writes
nothing; `serve` does the same on its own. Each test waits on what the cluster and helm say."""

from __future__ import annotations

import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from reconciler.cli.main import main
from reconciler.core import annotations as ann
from reconciler.core import leadtime
from reconciler.core.rollout.state import parse_time
from testkit.controlplane import (
    LocalCluster,
    crashloop_sha,
    kubeconfig_for_token,
    serviceaccount_token,
)
from testkit.deployments import get_deployment
from testkit.github import GitHubStandIn, random_sha
from testkit.github_fixtures import TOKEN
from testkit.helm import Helm
from testkit.manifests import policy_for
from testkit.serve_process import ServeProcess
from testkit.serve_world import QUIET_SCHEDULE, TRIGGER
from testkit.wait import wait_until

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "testkit" / "charts" / "web"
WAIT = ("--wait", "--wait-timeout", "180")


class HelmWorld:
    """Release `web` of the test chart installed by a person; site `web` delivered by it."""

    def __init__(  # noqa: PLR0917 - the fixtures it is made of
        self, helm: Path, cluster: LocalCluster, api: Any, ns: str, github: GitHubStandIn, tmp: Path
    ) -> None:
        self.api, self.ns, self.github = api, ns, github
        self.person = Helm(helm, home=tmp / "person", kubeconfig=cluster.kubeconfig_path)
        self.person.ok("install", "web", CHART, "-n", ns, "--set", "image.tag=v1")
        self.sites = tmp / "sites.toml"
        self.sites.write_text(
            f'[sites.web]\nrepo = "acme/web"\nbranch = "main"\nnamespace = "{ns}"\n'
            'image = "registry.example/web:{sha}"\nverify = "none"\nrollout_timeout = 1\n'
            '\n[sites.web.helm]\nrelease = "web"\nvalues = { tag = "image.tag" }\n'
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

    def cli(self, *argv: str) -> tuple[int, Any]:
        out, err = io.StringIO(), io.StringIO()
        code = main(
            [*argv, "--config", str(self.sites), "--output", "json"],
            env=self.env,
            stdout=out,
            stderr=err,
        )
        text = out.getvalue()
        return code, (json.loads(text) if text.strip() else err.getvalue())

    def sync(self, *args: str, code: int = 0) -> dict[str, Any]:
        got, results = self.cli("sync", *args)
        assert got == code, results
        return dict(results[0])

    def history(self) -> list[tuple[int, str, str]]:
        rows = json.loads(self.person.ok("history", "web", "-n", self.ns, "-o", "json"))
        return [(r["revision"], r["status"], r["description"]) for r in rows]

    def image(self) -> str:
        spec = get_deployment(self.api, self.ns, "web")["spec"]["template"]["spec"]
        return str(next(c["image"] for c in spec["containers"] if c["name"] == "app"))

    def generation(self) -> int:
        return int(get_deployment(self.api, self.ns, "web")["metadata"]["generation"])

    def notes(self) -> dict[str, str]:
        """The release's Deployment's annotations (the reconciler's notes, its lead time)."""
        return dict(get_deployment(self.api, self.ns, "web")["metadata"].get("annotations") or {})

    def revision_time(self, number: int) -> float | None:
        rows = json.loads(self.person.ok("history", "web", "-n", self.ns, "-o", "json"))
        updated = next(r["updated"] for r in rows if r["revision"] == number)
        return datetime.fromisoformat(updated).timestamp() // 1


@pytest.fixture
def world(  # noqa: PLR0917 - fixtures
    helm: Path,
    local_cluster: LocalCluster,
    cluster_api_client: Any,
    cluster_namespace: str,
    github: GitHubStandIn,
    tmp_path: Path,
) -> HelmWorld:
    return HelmWorld(helm, local_cluster, cluster_api_client, cluster_namespace, github, tmp_path)


def test_a_good_commit_is_a_helm_upgrade_followed_until_available(world: HelmWorld) -> None:
    sha = world.head()
    code, plan = world.cli("plan")
    assert code == 0 and plan[0]["action"] == "update"
    assert f"image.tag v1 → {sha}" in plan[0]["reason"] and "Deployment/web" in plan[0]["reason"]
    assert [r[0] for r in world.history()] == [1]  # plan wrote nothing
    waiting = plan[0]["lead"]  # ready (verify = "none"): a plan does not deploy it
    assert waiting["waiting"] == "sync" and waiting["head"]["sha"] == sha, waiting
    assert ann.HEAD_STAGES not in world.notes()  # plan wrote nothing

    done = world.sync(*WAIT)
    assert done["action"] == "update" and done["applied"], done
    assert done["rollout"] == "available", done
    assert done["lead"]["deployed"]["available"] and done["lead"]["waiting"] is None, done["lead"]
    assert world.image() == f"registry.example/web:{sha}"
    assert world.history() == [
        (1, "superseded", "Install complete"),
        (2, "deployed", f"reconciler: main@{sha[:7]}"),
    ]
    again = world.sync()
    assert again["action"] == "in-sync" and again["running_sha"] == sha
    assert len(world.history()) == 2

    # lead time, stage by stage: the stages on the release's Deployment, the upgrade from helm's
    # record, available as `sync --wait` followed it
    notes = world.notes()
    recorded = leadtime.loads(notes[ann.STAGES])
    assert recorded is not None and recorded.sha == sha and recorded.pushed is not None
    lead = again["lead"]
    assert lead["waiting"] is None and lead["deployed"]["sha"] == sha, lead
    upgraded = parse_time(lead["deployed"]["patched"])
    assert upgraded == world.revision_time(2)
    available = parse_time(notes[ann.AVAILABLE_AT])
    assert available is not None and upgraded is not None and upgraded <= available
    line = lead["deployed"]["line"]
    assert line.startswith("pushed ") and " → upgraded +" in line and " → available +" in line
    assert set(lead["deployed"]["seconds"]) == {"patched", "available"}


def test_a_dry_run_is_a_server_side_dry_run_that_writes_nothing(world: HelmWorld) -> None:
    world.head()
    before, generation = world.history(), world.generation()
    done = world.sync("--dry-run")
    assert done["action"] == "update" and done["applied"], done
    assert world.history() == before
    assert world.generation() == generation and world.image() == "registry.example/web:v1"


def test_a_crash_looping_commit_is_rolled_back_by_helm_and_never_retried(world: HelmWorld) -> None:
    good = world.head()
    world.sync(*WAIT)
    bad = world.head(crashloop_sha())
    back = world.sync(*WAIT, code=1)
    assert back["action"] == "rolled-back" and back["applied"], back
    assert back["failed_sha"] == bad and "new pods are not coming up" in back["reason"]
    wait_until(
        lambda: world.image() == f"registry.example/web:{good}", "the good image is back", 60
    )
    history = world.history()
    assert [(n, d) for n, _, d in history[1:]] == [
        (2, f"reconciler: main@{good[:7]}"),
        (3, f"reconciler: main@{bad[:7]} (was {good[:7]})"),
        (4, history[3][2]),
    ]
    assert history[3][2].startswith(f"reconciler: rollback of main@{bad} to revision 2: ")

    skipped = world.sync()
    assert skipped["action"] == "skip" and "waiting for a new commit" in skipped["reason"]
    assert len(world.history()) == 4  # never retried
    fixed = world.head()
    assert world.sync(*WAIT)["action"] == "update"
    assert world.image() == f"registry.example/web:{fixed}"


def test_a_persons_helm_rollback_holds_the_site_until_resume(world: HelmWorld) -> None:
    first = world.head()
    world.sync(*WAIT)
    second = world.head()
    world.sync(*WAIT)
    world.person.ok("rollback", "web", "2", "-n", world.ns)  # back to `first`, by hand
    moved = world.head()  # the branch moves on: still held
    held = world.sync()
    assert held["action"] == "held", held
    # the head waits for the hold, recorded on the release's Deployment (Helm keeps none)
    assert held["lead"]["waiting"] == "hold" and held["lead"]["head"]["sha"] == moved
    head_record = leadtime.loads(world.notes().get(ann.HEAD_STAGES))
    assert head_record is not None and head_record.sha == moved
    assert held["held_by"] == "helm revision 4 (Rollback to 2)"
    assert f"image set to :{first}" in held["reason"] and f"(was :{second})" in held["reason"]
    assert world.image() == f"registry.example/web:{first}"
    assert len(world.history()) == 4

    code, said = world.cli("resume", "web")  # lifts the hold and syncs the site
    assert code == 0 and said["sync"][0]["action"] == "update", said
    assert world.image() == f"registry.example/web:{moved}"
    code, deploys = world.cli("history", "web")
    assert code == 0, deploys
    assert [(d["revision"], d["sha"], d["by"]) for d in deploys] == [
        (5, moved[:7], "reconciler"),
        (4, None, "helm (not the reconciler)"),
        (3, second[:7], "reconciler"),
        (2, first[:7], "reconciler"),
        (1, None, "helm (not the reconciler)"),
    ]
    assert deploys[1]["by"] == "helm (not the reconciler)"


def test_serve_upgrades_follows_and_rolls_back_a_helm_site_on_its_own(
    world: HelmWorld, tmp_path: Path
) -> None:
    env = {
        **world.env,
        "RECONCILER_TRIGGER_TOKEN": TRIGGER,
        "POD_NAMESPACE": world.ns,
        "POD_NAME": "serve-0",
    }
    world.sites.write_text(QUIET_SCHEDULE + world.sites.read_text())
    good = world.head()
    with ServeProcess(world.sites, env, tmp_path / "serve.log") as served:
        # serve's first sync or this one upgrades the release to `good`
        status, body = served.request("POST", "/sync/web", TRIGGER)
        assert status == 200 and body["results"][0]["action"] in ("update", "in-sync"), body

        def site() -> dict[str, Any]:
            return dict(served.request("GET", "/status")[1]["sites"][0])

        served.wait_for(
            lambda: (
                world.image() == f"registry.example/web:{good}" and site()["rollout"] == "available"
            ),
            120,
            "the upgrade available",
        )
        # its lead time, as for a patched site: /status, the page's line, the histogram
        live = served.wait_for(
            lambda: (s := site())["lead"]["deployed"].get("available") and s,
            60,
            "the upgrade recorded available",
        )
        assert live["lead"]["deployed"]["sha"] == good and live["lead"]["waiting"] is None
        line = live["lead"]["deployed"]["line"]
        assert " → upgraded +" in line and " → available +" in line, line
        assert line in served.request("GET", "/sites/web")[1]
        metrics = served.request("GET", "/metrics")[1]
        for stage in ("patched", "available"):
            assert f'reconciler_lead_time_seconds_count{{stage="{stage}"}} 1.0' in metrics
        bad = world.head(crashloop_sha())
        status, body = served.request("POST", "/sync/web", TRIGGER)
        assert status == 200 and body["results"][0]["applied"], body
        # the follower, not a sync, sees the rollout fail and rolls the release back
        rolled = served.wait_for(
            lambda: (s := site())["state"] == "rolled-back" and s, 120, "the helm rollback"
        )
        assert rolled["failed_sha"] == bad, rolled
        assert world.history()[-1][2].startswith(f"reconciler: rollback of main@{bad} to ")
        served.wait_for(
            lambda: world.image() == f"registry.example/web:{good}", 60, "the good image back"
        )
        descriptions = [d for _, _, d in world.history()]
        assert descriptions[-3:-1] == [
            f"reconciler: main@{good[:7]}" + descriptions[-3].partition(good[:7])[2],
            f"reconciler: main@{bad[:7]} (was {good[:7]})",
        ]
        upgrades = [e for e in served.log_events() if e.get("event") == "helm_upgrade"]
        assert upgrades and all(e["site"] == "web" for e in upgrades)


def test_the_shipped_roles_are_all_a_helm_site_needs(
    world: HelmWorld, local_cluster: LocalCluster, tmp_path: Path
) -> None:
    """As the ServiceAccount with Roles "reconciler" and "reconciler-helm" (k8s/rbac,
    k8s/rbac-helm), nothing more: upgrade, follow, roll back."""
    ns = world.ns
    for role in ("rbac", "rbac-helm"):
        local_cluster.kubectl("apply", "-n", ns, "-f", str(REPO / "k8s" / role / "role.yaml"))
    for role in ("reconciler", "reconciler-helm"):
        local_cluster.kubectl(
            "create", "rolebinding", role, "-n", ns, f"--role={role}",
            f"--serviceaccount={ns}:reconciler",
        )  # fmt: skip
    token = serviceaccount_token(local_cluster, ns, "reconciler")
    world.env["KUBECONFIG"] = str(kubeconfig_for_token(local_cluster, token, tmp_path / "sa"))
    # and the admission policy (k8s/admission-policy.yaml) in force for that ServiceAccount:
    # helm's upgrade and rollback of the Deployment change its images only, so it admits them
    shipped = list(yaml.safe_load_all((REPO / "k8s" / "admission-policy.yaml").read_text()))
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump_all(policy_for([d for d in shipped if d], ns)))
    local_cluster.kubectl("apply", "-f", str(policy))
    sa = local_cluster.kubectl  # the ServiceAccount's kubectl: replicas are refused once in force

    def in_force() -> bool:
        got = sa(
            "--kubeconfig", world.env["KUBECONFIG"], "-n", ns, "patch", "deployment/web",
            "-p", '{"spec": {"replicas": 3}}', check=False,
        )  # fmt: skip
        if "ValidatingAdmissionPolicy" in got.stderr:
            return True
        # admitted before the policy was in force: undo, as an admin (the chart's 2 replicas)
        local_cluster.kubectl(
            "-n", ns, "patch", "deployment/web", "-p", '{"spec": {"replicas": 2}}'
        )
        return False

    wait_until(in_force, "the admission policy in force", 60)
    good = world.head()
    assert world.sync(*WAIT)["rollout"] == "available"
    world.head(crashloop_sha())
    assert world.sync(*WAIT, code=1)["action"] == "rolled-back"
    wait_until(lambda: world.image() == f"registry.example/web:{good}", "the good image", 60)
