"""GitOps delivery end to end on the local cluster: the reconciler commits the image to a
configuration repository on the GitHub stand-in, a GitOps tool played by the test applies the
committed kustomization to the Deployment, and the reconciler follows the rollout it starts; a
crash-looping commit is rolled back by committing the previous image (the Deployment's image is
never patched by the reconciler), and a person's commit to the file holds the site.
Nothing sleeps: each step waits on what the API server or the stand-in says."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from reconciler.core import annotations as ann
from reconciler.core import leadtime
from reconciler.core.rollout.state import parse_time
from testkit.controlplane import LocalCluster, crashloop_sha
from testkit.deployments import create_deployment
from testkit.github import GitHubStandIn, random_sha
from testkit.github_fixtures import TOKEN
from testkit.gitops_player import FIELD_MANAGER, GitOpsPlayer
from testkit.rollout_world import RolloutWorld
from testkit.serve_process import ServeProcess
from testkit.serve_world import TRIGGER
from testkit.wait import wait_until

CONFIG = "acme/deploy"
PATH = "apps/blog/kustomization.yaml"
KUSTOMIZATION = """\
# blog, production: the reconciler writes newTag below; Argo CD applies it.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../base     # the Deployment and its Service
images:
  - name: gcr.io/p/blog
    newTag: before   # set by the reconciler
"""
GIT = f'\n[sites.blog.git]\nrepo = "{CONFIG}"\nfile = "{PATH}"\nkustomize_image = "gcr.io/p/blog"\n'
PEOPLE = 'author = "Deploy Bot <deploy@acme.example>"\n'


def tag_in_repo(github: GitHubStandIn, branch: str = "main") -> str:
    text = github.file_at(CONFIG, branch, PATH) or ""
    return text.split("newTag: ", 1)[1].split()[0]


@pytest.fixture
def world(
    local_cluster: LocalCluster,
    cluster_api_client: Any,
    cluster_namespace: str,
    github: GitHubStandIn,
    tmp_path: Path,
) -> RolloutWorld:
    github.add_repo(CONFIG)
    github.commit_files(
        CONFIG, "main", {PATH: KUSTOMIZATION}, "Add blog", author=("Platform", "p@acme.example")
    )
    return RolloutWorld(
        cluster_api_client,
        cluster_namespace,
        github,
        tmp_path,
        kubeconfig=local_cluster.kubeconfig_path,
        kubectl=local_cluster.kubectl,
        site_extra="rollout_timeout = 1\n" + GIT + PEOPLE,
    )


@pytest.fixture
def player(world: RolloutWorld, local_cluster: LocalCluster) -> GitOpsPlayer:
    return GitOpsPlayer(world.github, local_cluster.kubectl, CONFIG, PATH, world.ns, "blog", "app")


def settled(world: RolloutWorld, action: str, rollout: str | None = None) -> dict[str, Any]:
    """Sync until the verdict is `action` (and the rollout `rollout`); the last result."""
    last: dict[str, Any] = {}

    def reached() -> bool:
        last.clear()
        _, results = world.cli("sync")
        last.update(results[0] if isinstance(results, list) else {"error": results})
        return last.get("action") == action and (rollout is None or last["rollout"] == rollout)

    wait_until(reached, f"the site to be {action} ({rollout}): last {last}", timeout=120)
    return last


def test_commit_rollout_followed_failure_and_revert_commit(
    world: RolloutWorld, player: GitOpsPlayer
) -> None:
    github = world.github
    good = world.head()
    done = world.sync()
    assert done["action"] == "update" and done["applied"], done
    assert world.image() == "gcr.io/p/blog:before"  # the reconciler never patched the image
    assert tag_in_repo(github) == good
    deploy = github.log(CONFIG, "main", limit=1)[0]
    assert deploy.message.startswith(f"Deploy blog: (none) → {good[:7]}\n")
    assert f"acme/blog: (nothing deployed) → {good}" in deploy.message
    assert github.git_commit(CONFIG, deploy.sha).author.email == "deploy@acme.example"
    text = github.file_at(CONFIG, "main", PATH) or ""
    assert text == KUSTOMIZATION.replace("newTag: before", f"newTag: {good}")  # comments kept

    waiting = world.sync()
    assert waiting["action"] == "skip" and "waiting for the GitOps tool" in waiting["reason"]
    assert github.log(CONFIG, "main", limit=1)[0].sha == deploy.sha  # nothing committed twice
    # lead time: the commit is its "patched"; it waits for the GitOps tool since then
    recorded = leadtime.loads(world.get()["metadata"]["annotations"][ann.STAGES])
    assert recorded is not None and recorded.sha == good and recorded.pushed is not None
    lead = waiting["lead"]
    assert lead["waiting"] == "applied" and lead["deployed"]["sha"] == good, lead
    assert f"{good[:7]} waiting for the GitOps tool to apply it since " in lead["text"]
    assert lead["since"] == lead["deployed"]["patched"]

    assert player.sync() == f"gcr.io/p/blog:{good}"
    live = settled(world, "in-sync", "available")

    # the record of "applied" is a guarded write: one that met the controller's status update
    # (409) is left to the next sync, which finds the same thing to record
    def recorded_applied() -> bool:
        if ann.APPLIED_AT in world.get()["metadata"]["annotations"]:
            return True
        world.sync()
        return False

    wait_until(recorded_applied, "a sync to record the commit applied", timeout=120)
    notes = world.get()["metadata"]["annotations"]
    assert notes[ann.SHA] == good and notes[ann.GIT_COMMIT] == deploy.sha
    # a sync saw the Deployment run the committed image: recorded applied, once
    applied, committed = parse_time(notes[ann.APPLIED_AT]), parse_time(notes[ann.UPDATED_AT])
    assert applied is not None and committed is not None and committed <= applied
    line = world.sync()["lead"]["deployed"]["line"]
    assert " → committed +" in line and " → applied +" in line, (line, live["lead"])
    assert world.get()["metadata"]["annotations"][ann.APPLIED_AT] == notes[ann.APPLIED_AT]
    code, history = world.cli("history", "blog")
    assert code == 0 and history[0]["sha"] == good, history
    assert history[0]["by"] == f"{FIELD_MANAGER} applying the reconciler's commit {deploy.sha[:7]}"

    bad = world.head(crashloop_sha())
    again = world.sync()
    assert again["action"] == "update" and tag_in_repo(github) == bad
    message = github.log(CONFIG, "main", limit=1)[0].message
    assert f"Deploy blog: {good[:7]} → {bad[:7]}" in message
    assert f"Compare: {github.url}/acme/blog/compare/{good}...{bad}" in message
    assert f"- {bad[:7]} Update main to {bad[:7]}" in message  # the commit subjects

    player.sync()  # the GitOps tool applies the crash-looping image
    back = settled(world, "rolled-back")
    assert back["applied"] and back["failed_sha"] == bad, back
    assert tag_in_repo(github) == good  # committed back ...
    assert world.image() == f"gcr.io/p/blog:{bad}"  # ... and the cluster left to the GitOps tool
    revert = github.log(CONFIG, "main", limit=1)[0]
    assert revert.message.startswith(f"Roll back blog: {bad[:7]} → {good[:7]}\n"), revert.message
    assert "CrashLoopBackOff" in revert.message
    assert set(world.events()) >= {"ImageCommitted", "RolloutFailed", "RolledBack"}

    player.sync()
    held = settled(world, "held")
    assert held["held_by"] == "reconciler" and "reverted in the config repository" in held["reason"]
    owner = [m for m in world.get()["metadata"]["managedFields"] if m["manager"] == FIELD_MANAGER]
    assert owner, "the image is the GitOps tool's"
    code, said = world.cli("resume", "blog")
    assert code == 0, said
    fixed = world.head()
    assert world.sync()["action"] == "update" and tag_in_repo(github) == fixed
    player.sync()
    settled(world, "in-sync", "available")
    log = [c.message.splitlines()[0] for c in github.log(CONFIG, "main", limit=5)]
    assert log == [
        f"Deploy blog: {good[:7]} → {fixed[:7]}",
        f"Roll back blog: {bad[:7]} → {good[:7]}",
        f"Deploy blog: {good[:7]} → {bad[:7]}",
        f"Deploy blog: (none) → {good[:7]}",
        "Add blog",
    ]


def test_a_persons_commit_to_the_file_holds_the_site_until_the_branch_moves(
    world: RolloutWorld, player: GitOpsPlayer
) -> None:
    github = world.github
    world.head()
    world.sync()
    player.sync()
    settled(world, "in-sync", "available")
    text = (github.file_at(CONFIG, "main", PATH) or "").replace(
        f"newTag: {tag_in_repo(github)}", "newTag: hotfix"
    )
    github.commit_files(
        CONFIG, "main", {PATH: text}, "Pin blog to hotfix", author=("Alice", "alice@acme.example")
    )
    player.sync()
    for _ in range(2):
        held = world.sync()
        assert held["action"] == "held" and held["held_by"] == "Alice", (held["reason"], held)
        assert "changed by Alice" in held["reason"]
    assert tag_in_repo(github) == "hotfix" and world.image() == "gcr.io/p/blog:hotfix"
    moved = world.head()
    resumed = world.sync()
    assert resumed["action"] == "update" and tag_in_repo(github) == moved
    assert ann.HELD_HEAD not in world.get()["metadata"]["annotations"]


def test_serve_commits_follows_and_reverts(
    world: RolloutWorld, player: GitOpsPlayer, tmp_path: Path
) -> None:
    good = world.head()
    env = {
        "GITHUB_API_URL": world.github.url,
        "GITHUB_TOKEN": TOKEN,
        "KUBECONFIG": world.env["KUBECONFIG"],
        "RECONCILER_TRIGGER_TOKEN": TRIGGER,
        "POD_NAMESPACE": world.ns,
        "POD_NAME": "reconciler-0",
    }
    proc = ServeProcess(world.sites, env, tmp_path / "serve.log").start()
    try:
        wait_until(lambda: tag_in_repo(world.github) == good, "serve's startup commit", timeout=60)
        player.sync()

        def lead() -> dict[str, Any]:
            return dict(proc.request("GET", "/status")[1]["sites"][0]["lead"] or {})

        # the follower records the apply and the rollout available: /status, the page, metrics
        live = proc.wait_for(
            lambda: (x := lead()) and (x["deployed"] or {}).get("available") and x,
            120,
            "the rollout recorded available",
        )
        assert live["deployed"]["sha"] == good and live["waiting"] is None, live
        line = live["deployed"]["line"]
        assert " → committed +" in line and " → applied +" in line and " → available +" in line
        assert line in proc.request("GET", "/sites/blog")[1]
        metrics = proc.request("GET", "/metrics")[1]
        for stage in ("patched", "applied", "available"):
            assert f'reconciler_lead_time_seconds_count{{stage="{stage}"}} 1.0' in metrics
        bad = world.head(crashloop_sha())
        status, _ = proc.request("POST", "/sync/blog", token=TRIGGER)
        assert status in (200, 202)
        wait_until(lambda: tag_in_repo(world.github) == bad, "the bad commit", timeout=60)
        player.sync()
        # serve's follower sees the crash loop and commits the good image back
        wait_until(lambda: tag_in_repo(world.github) == good, "the revert commit", timeout=120)
        assert world.image() == f"gcr.io/p/blog:{bad}"

        def recorded() -> bool:  # the record follows the commit
            notes = world.get()["metadata"]["annotations"]
            return bool(notes.get(ann.FAILED_SHA) == bad and notes.get(ann.HOLD_BY) == "reconciler")

        wait_until(recorded, "the failed commit and the hold on the Deployment", timeout=30)
    finally:
        proc.stop()


def test_pr_mode_keeps_one_pull_request_per_site_and_records_the_merge(
    world: RolloutWorld, player: GitOpsPlayer
) -> None:
    github = world.github
    world.write_sites("rollout_timeout = 1\n" + GIT + 'mode = "pr"\n')
    world.head()
    opened = world.sync()
    assert opened["action"] == "skip" and "waits for a merge" in opened["reason"], opened
    assert opened["lead"]["waiting"] == "merge", opened["lead"]
    assert tag_in_repo(github) == "before"  # nothing on the branch itself
    newer = world.head()
    updated = world.sync()
    assert updated["action"] == "skip" and "pr_updated" in updated["reason"], updated
    (pull,) = github.pulls(CONFIG)  # updated, never a second one
    assert (pull.head, pull.base, pull.state) == ("reconciler/blog", "main", "open")
    assert tag_in_repo(github, "reconciler/blog") == newer
    unchanged = world.sync()
    assert unchanged["action"] == "skip"  # unchanged: nothing pushed again
    assert len(github.pulls(CONFIG)) == 1
    assert unchanged["lead"]["waiting"] == "merge", unchanged["lead"]  # lead time: its stage
    proposed = leadtime.loads(world.get()["metadata"]["annotations"].get(ann.HEAD_STAGES))
    assert proposed is not None and proposed.sha == newer  # recorded with the pull request

    merged = github.file_at(CONFIG, "reconciler/blog", PATH) or ""
    github.commit_files(CONFIG, "main", {PATH: merged}, "Merge pull request #1", ("Bob", "b@x"))
    recorded = world.sync()
    assert recorded["action"] == "update" and recorded["applied"], recorded
    (pull,) = github.pulls(CONFIG)
    assert pull.state == "closed"  # superseded: the branch holds it
    notes = world.get()["metadata"]["annotations"]
    assert notes[ann.SHA] == newer and ann.HEAD_STAGES not in notes
    deployed = leadtime.loads(notes[ann.STAGES])  # the merge recorded: the head's stages kept
    assert deployed is not None and deployed.sha == newer and deployed.seen == proposed.seen
    player.sync()
    settled(world, "in-sync", "available")


def ours(world: RolloutWorld) -> dict[str, str]:
    notes = world.get()["metadata"].get("annotations") or {}
    return {k: v for k, v in notes.items() if k.startswith(ann.PREFIX)}


def break_file(github: GitHubStandIn) -> None:
    github.commit_files(CONFIG, "main", {PATH: "images: [\n  - name: x\n"}, "Oops")


def pin_file(github: GitHubStandIn) -> None:
    """The entry pinned by a digest, which kustomize deploys instead of any newTag."""
    pinned = KUSTOMIZATION + "    digest: sha256:" + "ab" * 32 + "\n"
    github.commit_files(CONFIG, "main", {PATH: pinned}, "Pin blog")


@pytest.mark.parametrize(
    ("extra", "act", "expected"),
    [
        ("", lambda gh: gh.deny_push(CONFIG, TOKEN), "cannot push to acme/deploy (403"),
        ("", lambda gh: gh.protect_branch(CONFIG, "main"), 'use mode "pr"'),
        ("", break_file, "does not parse as YAML"),
        ('file = "apps/nope.yaml"\n', None, "no apps/nope.yaml on branch 'main'"),
        ('kustomize_image = "gcr.io/p/nope"\n', None, "no `images:` entry named"),
        ("", pin_file, "has a digest, which kustomize deploys instead of newTag"),
    ],
    ids=["403", "protected", "yaml", "no-file", "no-entry", "digest"],
)
def test_bad_input_fails_only_that_site_and_writes_nothing(
    world: RolloutWorld, extra: str, act: Any, expected: str
) -> None:
    github = world.github
    git = GIT
    for line in extra.splitlines():
        key = line.split(" =")[0]
        git = "\n".join(k for k in git.split("\n") if not k.startswith(f"{key} ")) + "\n"
    create_deployment(world.api, world.ns, "other", "gcr.io/p/other:before")
    github.add_repo("acme/other", {"main": random_sha()})
    other = (
        f'\n[sites.other]\nrepo = "acme/other"\nnamespace = "{world.ns}"\ncontainer = "app"\n'
        'image = "gcr.io/p/other:{sha}"\nverify = "none"\n'
    )
    world.write_sites(git + extra + other)
    if act is not None:
        act(github)
    before = github.log(CONFIG, "main", limit=1)[0].sha
    notes = ours(world)
    world.head()
    code, results = world.cli("sync")
    assert code == 1, results
    blog, rest = results
    assert blog["action"] == "error" and expected in blog["reason"], blog
    assert rest["action"] == "update" and rest["applied"], rest
    assert github.log(CONFIG, "main", limit=1)[0].sha == before  # nothing committed
    assert ours(world) == notes  # no reconciler.dev/ annotation written
    assert world.image() == "gcr.io/p/blog:before"


def test_two_syncs_at_once_make_one_commit(world: RolloutWorld) -> None:
    """Two reconcilers deploying the same commit at the same moment (no Lease between CLI runs):
    however they interleave, one commit (a PUT that lost re-reads the file, which holds the
    image then; a later read finds it there)."""
    github = world.github
    good = world.head()
    before = len(github.log(CONFIG, "main"))
    results: list[Any] = []
    go = threading.Barrier(2)

    def run() -> None:
        go.wait()
        results.append(world.cli("sync"))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [code for code, _ in results] == [0, 0], results
    assert len(github.log(CONFIG, "main")) == before + 1 and tag_in_repo(github) == good
    assert world.get()["metadata"]["annotations"][ann.SHA] == good


def test_dry_run_writes_nothing_and_the_rollback_command_commits_and_holds(
    world: RolloutWorld, player: GitOpsPlayer
) -> None:
    github = world.github
    one = world.head()
    before = github.log(CONFIG, "main", limit=1)[0].sha
    code, results = world.cli("sync", "--dry-run")
    assert code == 0 and results[0]["applied"], results
    assert github.log(CONFIG, "main", limit=1)[0].sha == before and tag_in_repo(github) == "before"
    assert ann.SHA not in (world.get()["metadata"].get("annotations") or {})
    world.sync()
    player.sync()
    settled(world, "in-sync", "available")
    two = world.head()
    world.sync()
    player.sync()
    settled(world, "in-sync", "available")
    code, said = world.cli("rollback", "blog")
    assert code == 0, said
    assert tag_in_repo(github) == one  # committed back, not patched
    assert world.image() == f"gcr.io/p/blog:{two}"
    revert = github.log(CONFIG, "main", limit=1)[0].message
    assert revert.startswith(f"Roll back blog: {two[:7]} → {one[:7]}\n"), revert
    player.sync()
    held = settled(world, "held")
    assert held["held_by"].startswith("alice") and f"rolled back to {one[:7]}" in held["reason"]
