"""Sites whose target is a StatefulSet, a DaemonSet or a CronJob, synced by the CLI on the local
cluster (one cluster for the module: three kwok nodes and the statefulset, daemonset, job and
cronjob controllers), kubectl as the person. A commit whose SHA carries the cluster's crash-loop
marker gives pods that never become ready; one with the job-failure marker a Job that fails.
Nothing here sleeps or times anything: each step waits on what the API server says."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from reconciler.cli.main import main
from reconciler.core import annotations as ann
from testkit.controlplane import (
    REPO_ROOT,
    LocalCluster,
    crashloop_sha,
    jobfail_sha,
    kubeconfig_for_token,
    serviceaccount_token,
    wait_for,
)
from testkit.github import GitHubStandIn, random_sha
from testkit.github_fixtures import TOKEN

WAIT = ("--wait", "--wait-timeout", "180")
IMAGE = "gcr.io/p/shop:{sha}"


class KindsWorld:
    """One site ("shop") whose target is one workload of `kind`, in its own namespace."""

    def __init__(
        self, cluster: LocalCluster, ns: str, github: GitHubStandIn, tmp: Path, kind: str
    ) -> None:
        self.cluster, self.ns, self.github, self.kind = cluster, ns, github, kind
        self.name = {"StatefulSet": "db", "DaemonSet": "agent", "CronJob": "nightly"}[kind]
        self.sites = tmp / "sites.toml"
        self.sites.write_text(
            f'[sites.shop]\nrepo = "acme/shop"\nbranch = "main"\nnamespace = "{ns}"\n'
            f'image = "{IMAGE}"\nverify = "none"\nrollout_timeout = 1\n'
            f'[[sites.shop.targets]]\nkind = "{kind}"\nname = "{self.name}"\n'
        )
        self.env = {
            "GITHUB_API_URL": github.url,
            "GITHUB_TOKEN": TOKEN,
            "KUBECONFIG": str(cluster.kubeconfig_path),
            "USER": "alice",
        }
        github.add_repo("acme/shop", {"main": random_sha()})
        self.apply(_workload(kind, self.name, "gcr.io/p/shop:before"))

    def as_shipped_serviceaccount(self, tmp: Path) -> None:
        """The CLI from now on runs as the ServiceAccount with the Role k8s/ ships, no more."""
        self.kubectl("apply", "-f", str(REPO_ROOT / "k8s" / "rbac" / "role.yaml"))
        account = f"--serviceaccount={self.ns}:reconciler"
        self.kubectl("create", "rolebinding", "reconciler", "--role=reconciler", account)
        token = serviceaccount_token(self.cluster, self.ns, "reconciler")
        path = kubeconfig_for_token(self.cluster, token, tmp / "sa.kubeconfig")
        self.env["KUBECONFIG"] = str(path)

    def apply(self, body: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=json.dumps(body))

    def kubectl(self, *args: str, **kw: Any) -> Any:
        return self.cluster.kubectl("-n", self.ns, *args, **kw)

    def head(self, sha: str | None = None) -> str:
        sha = sha or random_sha()
        self.github.set_branch("acme/shop", "main", sha)
        return sha

    def cli(self, *argv: str, code: int | None = 0) -> Any:
        out, err = io.StringIO(), io.StringIO()
        got = main(
            [*argv, "--config", str(self.sites), "--output", "json"],
            env=self.env,
            stdout=out,
            stderr=err,
        )
        text = out.getvalue()
        assert code is None or got == code, text or err.getvalue()
        return json.loads(text) if text.strip() else err.getvalue()

    def cli_text(self, *argv: str) -> str:
        out = io.StringIO()
        got = main([*argv, "--config", str(self.sites)], env=self.env, stdout=out)
        assert got == 0, out.getvalue()
        return out.getvalue()

    def sync(self, *args: str, code: int = 0) -> dict[str, Any]:
        return dict(self.cli("sync", *args, code=code)[0])

    def rollout(self, state: str) -> dict[str, Any] | None:
        """The site's plan once its rollout is `state`, else None."""
        plan: dict[str, Any] = self.cli("plan", code=None)[0]
        return plan if plan["rollout"] == state else None

    def get(self) -> dict[str, Any]:
        out = self.kubectl("get", f"{self.kind.lower()}/{self.name}", "-o", "json")
        data: dict[str, Any] = json.loads(out.stdout)
        return data

    def image(self) -> str:
        obj = self.get()
        spec = obj["spec"]
        if self.kind == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        return str(spec["template"]["spec"]["containers"][0]["image"])

    def events(self) -> set[str]:
        out = self.kubectl("get", "events", "-o", "json")
        items = json.loads(out.stdout)["items"]
        return {e["reason"] for e in items if e["involvedObject"]["name"] == self.name}


def _pod_template(app: str, image: str, restart: str = "Always") -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": app}},
        "spec": {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "app", "image": image}],
        },
    }


def _workload(kind: str, name: str, image: str) -> dict[str, Any]:
    selector = {"matchLabels": {"app": name}}
    if kind == "StatefulSet":
        spec: dict[str, Any] = {
            "replicas": 2,
            "serviceName": name,
            "podManagementPolicy": "Parallel",
            "selector": selector,
            "template": _pod_template(name, image),
        }
        return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}
    if kind == "DaemonSet":
        spec = {"selector": selector, "template": _pod_template(name, image)}
        return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}
    spec = {
        "schedule": "0 0 1 1 *",  # once a year: the tests create its Jobs themselves
        "timeZone": "Etc/UTC",
        "jobTemplate": {
            "spec": {"backoffLimit": 0, "template": _pod_template(name, image, "Never")}
        },
    }
    return {"apiVersion": "batch/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


@pytest.fixture
def world(
    request: pytest.FixtureRequest,
    workload_cluster: LocalCluster,
    workload_namespace: str,
    github: GitHubStandIn,
    tmp_path: Path,
) -> KindsWorld:
    world = KindsWorld(workload_cluster, workload_namespace, github, tmp_path, request.param)
    world.as_shipped_serviceaccount(tmp_path)  # RBAC per kind, as the ServiceAccount's token
    return world


@pytest.mark.parametrize("world", ["StatefulSet", "DaemonSet"], indirect=True)
def test_a_good_commit_rolls_out_a_crash_looping_one_is_rolled_back_and_never_retried(
    world: KindsWorld,
) -> None:
    good = world.head()
    done = world.sync(*WAIT)
    assert done["action"] == "update" and done["applied"], done
    assert done["rollout"] == "available", done
    assert world.image() == f"gcr.io/p/shop:{good}"
    assert world.get()["metadata"]["annotations"][ann.SHA] == good
    assert world.sync()["action"] == "in-sync"

    bad = world.head(crashloop_sha())
    back = world.sync(*WAIT, code=1)
    assert back["action"] == "rolled-back" and back["applied"], back
    assert back["failed_sha"] == bad and "CrashLoopBackOff" in back["reason"], back
    assert world.image() == f"gcr.io/p/shop:{good}"
    assert {"ImageUpdated", "RolloutFailed", "RolledBack"} <= world.events()

    again = world.sync()
    assert again["action"] == "skip" and again["failed_sha"] == bad, again
    assert world.image() == f"gcr.io/p/shop:{good}"

    # History from the ControllerRevisions: the bad commit's revision says it was rolled back.
    history = world.cli("history", "shop")
    by_sha = {d["sha"]: d for d in history if d["sha"]}
    assert "rolled back" in by_sha[bad]["outcome"], history
    assert by_sha[good]["by"] == "reconciler", history


@pytest.mark.parametrize("world", ["StatefulSet", "DaemonSet"], indirect=True)
def test_a_persons_rollout_undo_or_set_image_holds_the_site(world: KindsWorld) -> None:
    world.head()
    world.sync(*WAIT)
    newer = world.head()
    world.sync(*WAIT)
    assert world.image() == f"gcr.io/p/shop:{newer}"

    if world.kind == "StatefulSet":
        world.kubectl("rollout", "undo", f"statefulset/{world.name}")
    else:
        world.kubectl("set", "image", f"daemonset/{world.name}", "app=gcr.io/p/shop:hotfix")
    wait_for(lambda: world.image() != f"gcr.io/p/shop:{newer}", what="the person's change")
    person = world.image()
    third = world.head()
    held = world.sync()
    assert held["action"] == "held" and "kubectl" in (held["held_by"] or ""), held
    assert world.image() == person

    resumed = world.cli("resume", "shop")  # and syncs the site: the head goes out
    assert resumed["sync"][0]["action"] == "update" and resumed["sync"][0]["applied"], resumed
    assert world.image() == f"gcr.io/p/shop:{third}"


@pytest.mark.parametrize("world", ["CronJob"], indirect=True)
def test_a_cronjobs_first_job_decides_available_or_failed_and_rolled_back(
    world: KindsWorld,
) -> None:
    good = world.head()
    done = world.sync(*WAIT)  # not waited for: the CronJob waits for its schedule (exit 0)
    assert done["action"] == "update" and done["applied"], done
    assert "waiting for the next schedule" in done["progress"], done
    assert world.image() == f"gcr.io/p/shop:{good}"
    waiting = world.cli("plan")[0]
    assert waiting["rollout"] == "progressing", waiting
    assert "waiting for the next schedule" in waiting["progress"], waiting

    world.kubectl("create", "job", "first", f"--from=cronjob/{world.name}")
    ok = wait_for(lambda: world.rollout("available"), what="the first Job to succeed")
    assert ok["action"] == "in-sync" and "job first succeeded" in ok["progress"], ok

    bad = world.head(jobfail_sha())
    world.sync()
    assert world.image() == f"gcr.io/p/shop:{bad}"
    world.kubectl("create", "job", "second", f"--from=cronjob/{world.name}")
    wait_for(lambda: world.rollout("failed"), what="the second Job to fail")
    back = world.sync()
    assert back["action"] == "rolled-back" and back["failed_sha"] == bad, back
    assert "job second failed" in back["reason"], back
    assert world.image() == f"gcr.io/p/shop:{good}"
    assert world.sync()["action"] == "skip"
    history = world.cli("history", "shop")  # the CronJob's Jobs, newest first
    assert [d["outcome"] for d in history] == [
        "job second failed, rolled back",
        "job first succeeded",
    ], history

    world.kubectl("patch", f"cronjob/{world.name}", "-p", '{"spec": {"suspend": true}}')
    world.head()
    world.sync()
    assert "suspended" in world.cli("plan")[0]["progress"]


# --- one release: a Deployment and a CronJob of one site ----------------------------------------

RELEASE_SITE = """\
[sites.shop]
repo = "acme/shop"
branch = "main"
namespace = "{ns}"
image = "gcr.io/p/shop:{{sha}}"
verify = "none"
rollout_timeout = 1

[[sites.shop.targets]]
name = "web"
containers = ["app"]

[[sites.shop.targets]]
kind = "CronJob"
name = "nightly"
images = {{ app = "gcr.io/p/shop-jobs:{{sha}}" }}
containers = ["app"]
"""


@pytest.fixture
def release(
    workload_cluster: LocalCluster, workload_namespace: str, github: GitHubStandIn, tmp_path: Path
) -> KindsWorld:
    world = KindsWorld(workload_cluster, workload_namespace, github, tmp_path, "CronJob")
    world.sites.write_text(RELEASE_SITE.format(ns=workload_namespace))
    deployment = _workload("StatefulSet", "web", "gcr.io/p/shop:before")
    deployment["kind"], deployment["spec"] = (
        "Deployment",
        {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": _pod_template("web", "gcr.io/p/shop:before"),
        },
    )
    world.apply(deployment)
    return world


def _web_image(world: KindsWorld) -> str:
    out = world.kubectl(
        "get", "deployment/web", "-o", "jsonpath={.spec.template.spec.containers[0].image}"
    )
    return str(out.stdout)


def test_a_deployment_and_a_cronjob_of_one_site_move_together_and_roll_back_together(
    release: KindsWorld,
) -> None:
    world = release
    world.as_shipped_serviceaccount(world.sites.parent)
    good = world.head()
    done = world.sync(*WAIT)
    assert done["action"] == "update" and done["applied"], done
    assert [(t["kind"], t["name"], t["action"]) for t in done["targets"]] == [
        ("Deployment", "web", "update"),
        ("CronJob", "nightly", "update"),
    ], done
    assert _web_image(world) == f"gcr.io/p/shop:{good}"
    assert world.image() == f"gcr.io/p/shop-jobs:{good}"
    world.kubectl("create", "job", "first", "--from=cronjob/nightly")
    wait_for(lambda: world.rollout("available"), what="both targets available")

    bad = world.head(jobfail_sha())  # the web pods run; the nightly Job fails
    moved = world.sync()
    assert moved["action"] == "update" and moved["applied"], moved
    assert _web_image(world) == f"gcr.io/p/shop:{bad}"
    assert world.image() == f"gcr.io/p/shop-jobs:{bad}"
    world.kubectl("create", "job", "second", "--from=cronjob/nightly")
    wait_for(lambda: world.rollout("failed"), what="the nightly Job to fail")
    back = world.sync()
    assert back["action"] == "rolled-back" and back["failed_sha"] == bad, back
    assert "CronJob/nightly (app) failed" in back["reason"], back
    assert _web_image(world) == f"gcr.io/p/shop:{good}"  # the Deployment went back too
    assert world.image() == f"gcr.io/p/shop-jobs:{good}"
    again = world.sync()
    assert again["action"] == "skip" and _web_image(world) == f"gcr.io/p/shop:{good}", again


def test_a_refused_patch_puts_back_the_targets_already_patched_and_fails_the_site(
    release: KindsWorld, tmp_path: Path
) -> None:
    world = release
    good = world.head()
    world.sync(*WAIT)
    # From now on the reconciler may patch Deployments but not CronJobs.
    ns = world.ns
    world.kubectl(
        "create", "role", "limited", "--verb=get,list,watch,patch", "--resource=deployments"
    )
    world.kubectl(
        "create",
        "role",
        "reads",
        "--verb=get,list,watch",
        "--resource=cronjobs,jobs,pods,replicasets",
    )
    world.kubectl("create", "role", "events", "--verb=create", "--resource=events")
    for role in ("limited", "reads", "events"):
        world.kubectl(
            "create", "rolebinding", role, f"--role={role}", f"--serviceaccount={ns}:limited"
        )
    token = serviceaccount_token(world.cluster, ns, "limited")
    world.env["KUBECONFIG"] = str(
        kubeconfig_for_token(world.cluster, token, tmp_path / "l.kubeconfig")
    )

    newer = world.head()
    failed = world.sync(code=1)
    assert failed["action"] == "error" and not failed["applied"], failed
    assert "CronJob/nightly (app)" in failed["reason"], failed
    assert "put back Deployment/web (app)" in failed["reason"], failed
    assert _web_image(world) == f"gcr.io/p/shop:{good}"  # not {newer}: undone
    assert world.image() == f"gcr.io/p/shop-jobs:{good}"
    assert newer not in json.dumps(world.kubectl("get", "deployment/web", "-o", "json").stdout)


def test_resume_and_rollback_act_on_every_target_of_the_site(release: KindsWorld) -> None:
    world = release
    world.as_shipped_serviceaccount(world.sites.parent)
    good = world.head()
    world.sync(*WAIT)
    newer = world.head()
    world.sync(*WAIT)
    assert world.image() == f"gcr.io/p/shop-jobs:{newer}"

    # A person changes the second target: the site is held; resume lifts it on that target too.
    world.kubectl("set", "image", "cronjob/nightly", "app=gcr.io/p/shop-jobs:hotfix")
    third = world.head()
    assert world.sync()["action"] == "held"
    resumed = world.cli("resume", "shop")
    assert resumed["sync"][0]["action"] == "update" and resumed["sync"][0]["applied"], resumed
    assert _web_image(world) == f"gcr.io/p/shop:{third}"
    assert world.image() == f"gcr.io/p/shop-jobs:{third}"

    # rollback --to moves every target to that commit's images and holds the site there.
    back = world.cli("rollback", "shop", "--to", good)
    assert good[:7] in back["message"], back
    assert _web_image(world) == f"gcr.io/p/shop:{good}"
    assert world.image() == f"gcr.io/p/shop-jobs:{good}"
    assert world.sync()["action"] == "held"

    # rollback (to the previous commit) after a resume: every target goes back to `third`'s
    # predecessor recorded on it.
    world.cli("resume", "shop")
    assert _web_image(world) == f"gcr.io/p/shop:{third}"
    world.cli("rollback", "shop")
    assert _web_image(world) == f"gcr.io/p/shop:{good}"
    assert world.image() == f"gcr.io/p/shop-jobs:{good}"

    # history covers every target: the Deployment's revisions and the CronJob's Jobs, each row
    # naming its workload, target by target, each newest first.
    history = world.cli("history", "shop")
    targets = [d["target"] for d in history]
    assert "Deployment/web" in targets, history  # the CronJob has run no Job yet: no rows
    assert set(targets) <= {"Deployment/web", "CronJob/nightly"}, history
    assert targets == sorted(targets, key=["Deployment/web", "CronJob/nightly"].index)
    web = [d for d in history if d["target"] == "Deployment/web"]
    assert web[0]["image"] == f"gcr.io/p/shop:{good}", web
    assert "running" in web[0]["outcome"], web
    text = world.cli_text("history", "shop")
    assert text.splitlines()[0].split()[:2] == ["TARGET", "REVISION"], text


TWO_CONTAINERS = """\
[sites.shop]
repo = "acme/shop"
branch = "main"
namespace = "{ns}"
image = "gcr.io/p/shop:{{sha}}"
verify = "none"
rollout_timeout = 1

[[sites.shop.targets]]
name = "web"
containers = ["app", "worker"]
images = {{ worker = "gcr.io/p/worker:{{sha}}" }}
"""


def test_a_crash_looping_commit_puts_back_each_container_of_one_workload_to_its_own_image(
    workload_cluster: LocalCluster, workload_namespace: str, github: GitHubStandIn, tmp_path: Path
) -> None:
    world = KindsWorld(workload_cluster, workload_namespace, github, tmp_path, "CronJob")
    world.sites.write_text(TWO_CONTAINERS.format(ns=workload_namespace))
    template = _pod_template("web", "gcr.io/p/shop:before")
    template["spec"]["containers"].append({"name": "worker", "image": "gcr.io/p/worker:before"})
    spec = {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": template}
    world.apply(
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": spec}
    )

    def images() -> dict[str, str]:
        out = world.kubectl("get", "deployment/web", "-o", "json")
        containers = json.loads(out.stdout)["spec"]["template"]["spec"]["containers"]
        return {c["name"]: c["image"] for c in containers}

    good = world.head()
    first = world.sync(*WAIT)
    assert first["action"] == "update" and first["applied"], first
    assert images() == {"app": f"gcr.io/p/shop:{good}", "worker": f"gcr.io/p/worker:{good}"}
    bad = world.head(crashloop_sha())
    back = world.sync(*WAIT, code=1)
    assert back["action"] == "rolled-back" and back["failed_sha"] == bad, back
    assert images() == {"app": f"gcr.io/p/shop:{good}", "worker": f"gcr.io/p/worker:{good}"}
    assert world.sync()["action"] == "skip"

    world.cli("rollback", "shop", "--to", good)
    assert images() == {"app": f"gcr.io/p/shop:{good}", "worker": f"gcr.io/p/worker:{good}"}
    world.cli("resume", "shop")  # the failed head is not retried: a new head goes out
    newer = world.head()
    world.sync(*WAIT)
    assert images() == {"app": f"gcr.io/p/shop:{newer}", "worker": f"gcr.io/p/worker:{newer}"}
    world.cli("rollback", "shop")  # to the previous commit: each container its own image
    assert images() == {"app": f"gcr.io/p/shop:{good}", "worker": f"gcr.io/p/worker:{good}"}


# --- init containers: a migration built from the same commit -------------------------------------

INIT_SITE = """\
[sites.shop]
repo = "acme/shop"
branch = "main"
namespace = "{ns}"
image = "gcr.io/p/shop:{{sha}}"
verify = "none"
rollout_timeout = 1

[[sites.shop.targets]]
name = "web"
containers = ["app"]
init_containers = ["migrate"]
images = {{ migrate = "gcr.io/p/shop-migrate:{{sha}}" }}
"""


@pytest.fixture
def migrating(
    workload_cluster: LocalCluster, workload_namespace: str, github: GitHubStandIn, tmp_path: Path
) -> KindsWorld:
    """Site "shop": Deployment web, its container app and its init container migrate."""
    world = KindsWorld(workload_cluster, workload_namespace, github, tmp_path, "CronJob")
    world.sites.write_text(INIT_SITE.format(ns=workload_namespace))
    template = _pod_template("web", "gcr.io/p/shop:before")
    template["spec"]["initContainers"] = [
        {"name": "migrate", "image": "gcr.io/p/shop-migrate:before", "args": ["up"]}
    ]
    spec = {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": template}
    meta = {"name": "web"}
    world.apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec})
    world.as_shipped_serviceaccount(tmp_path)
    return world


def _web_images(world: KindsWorld) -> tuple[str, str]:
    out = world.kubectl("get", "deployment/web", "-o", "json")
    spec = json.loads(out.stdout)["spec"]["template"]["spec"]
    return spec["containers"][0]["image"], spec["initContainers"][0]["image"]


def test_an_init_container_moves_with_the_app_and_a_crash_looping_one_rolls_both_back(
    migrating: KindsWorld,
) -> None:
    world = migrating
    good = world.head()
    done = world.sync(*WAIT)
    assert done["action"] == "update" and done["applied"], done
    assert done["rollout"] == "available", done
    assert [(t["container"], t["init"]) for t in done["targets"]] == [
        ("app", False),
        ("migrate", True),
    ], done
    assert _web_images(world) == (f"gcr.io/p/shop:{good}", f"gcr.io/p/shop-migrate:{good}")

    bad = world.head(crashloop_sha())  # the new pods stay Pending: Init:CrashLoopBackOff
    back = world.sync(*WAIT, code=1)
    assert back["action"] == "rolled-back" and back["applied"], back
    assert back["failed_sha"] == bad, back
    assert "init container migrate" in back["reason"], back
    assert "CrashLoopBackOff" in back["reason"], back
    assert _web_images(world) == (f"gcr.io/p/shop:{good}", f"gcr.io/p/shop-migrate:{good}")
    notes = json.loads(world.kubectl("get", "deployment/web", "-o", "json").stdout)["metadata"][
        "annotations"
    ]
    assert notes[ann.FAILED_SHA] == bad and notes[ann.SHA] == good, notes
    again = world.sync()
    assert again["action"] == "skip" and again["failed_sha"] == bad, again
    assert _web_images(world) == (f"gcr.io/p/shop:{good}", f"gcr.io/p/shop-migrate:{good}")


def test_a_persons_set_image_of_the_init_container_holds_the_site(migrating: KindsWorld) -> None:
    world = migrating
    good = world.head()
    world.sync(*WAIT)
    world.kubectl("set", "image", "deployment/web", "migrate=gcr.io/p/shop-migrate:hotfix")
    world.head()
    held = world.sync()
    assert held["action"] == "held" and "kubectl" in (held["held_by"] or ""), held
    assert "init container migrate" in held["reason"], held
    assert _web_images(world) == (f"gcr.io/p/shop:{good}", "gcr.io/p/shop-migrate:hotfix")
