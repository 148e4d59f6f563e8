"""The pure verdicts of a git-delivered site: planner verdict + its configuration repository."""

from __future__ import annotations

from dataclasses import replace

from reconciler.core import annotations as ann
from reconciler.core import gitops
from reconciler.core.errors import ErrorKind
from reconciler.core.model import (
    Action,
    BranchHead,
    Container,
    DeploymentStatus,
    FieldOwner,
    GitSpec,
    ObservedDeployment,
    Rollout,
    Site,
    SitePlan,
    Skip,
)
from reconciler.core.plan import planner
from reconciler.core.rollout.state import parse_time

SHA, OLD, BAD = "a" * 40, "b" * 40, "c" * 40
SPEC = GitSpec(
    repo="acme/deploy",
    file="shop/kustomization.yaml",
    write="kustomize",
    kustomize_image="gcr.io/p/shop",
)
SITE = Site(
    name="shop",
    repo="acme/shop",
    branch="main",
    namespace="web",
    deployment="shop",
    container="app",
    image="gcr.io/p/shop:{sha}",
    verify="none",
    git=SPEC,
)
NOW = parse_time("2026-12-07T06:00:00Z") or 0.0


def kustomization(tag: str) -> str:
    return (
        "# shop in production\nresources: [deployment.yaml]\nimages:\n"
        f"  - name: gcr.io/p/shop\n    newTag: {tag}  # bumped by the reconciler\n"
    )


def workload(image_sha: str, notes: dict[str, str], *, failed: bool = False) -> ObservedDeployment:
    status = DeploymentStatus(
        observed_generation=2,
        desired=1,
        replicas=1,
        updated=1,
        ready=0 if failed else 1,
        available=0 if failed else 1,
        deadline_exceeded=failed,
        message="ReplicaSet has timed out progressing." if failed else "",
    )
    return ObservedDeployment(
        namespace="web",
        name="shop",
        containers=(Container("app", f"gcr.io/p/shop:{image_sha}"),),
        annotations=notes,
        resource_version="7",
        generation=2,
        status=status,
        # the GitOps tool's field manager sets every image: never a person's change by itself
        image_owners={
            "app": FieldOwner("kubectl-client-side-apply", "Update", "2026-12-07T05:00:00Z")
        },
    )


def verdict(d: ObservedDeployment, text: str | None, head: str = SHA, **view: object) -> SitePlan:
    heads = {SITE.ref: BranchHead("acme/shop", "main", head)}
    p = planner.plan_site(SITE, heads, {"web": {"shop": d}}, now=NOW)
    return gitops.adjust(p, d, gitops.RepoView(text, **view), now=NOW)  # type: ignore[arg-type]


def recorded(sha: str, **more: str) -> dict[str, str]:
    return {
        ann.SHA: sha,
        ann.GIT_IMAGE: f"gcr.io/p/shop:{sha}",
        ann.UPDATED_AT: "2026-12-07T05:00:00Z",
        **more,
    }


def test_behind_is_an_update_and_the_gitops_manager_is_not_a_hold() -> None:
    p = verdict(workload(OLD, recorded(OLD)), kustomization(OLD))
    assert p.action is Action.UPDATE and p.target_image == f"gcr.io/p/shop:{SHA}"


def test_committed_but_not_applied_waits_for_the_gitops_tool() -> None:
    d = workload(OLD, recorded(SHA, **{ann.GIT_COMMIT: "d" * 40}))
    p = verdict(d, kustomization(SHA))
    assert p.action is Action.SKIP and p.skip is Skip.AWAITING_APPLY
    assert "waiting for the GitOps tool to apply it" in p.reason and "ddddddd" in p.reason


def test_applied_and_recorded_is_in_sync() -> None:
    p = verdict(workload(SHA, recorded(SHA)), kustomization(SHA))
    assert p.action is Action.IN_SYNC


def test_a_value_in_the_file_the_workload_does_not_record_is_recorded() -> None:
    merged = recorded(OLD, **{ann.GIT_PROPOSED: f"{SHA} gcr.io/p/shop:{SHA}"})
    p = verdict(workload(SHA, merged), kustomization(SHA))  # the pull request was merged
    assert p.action is Action.UPDATE and "holds aaaaaaa; record it" in p.reason
    adopted = verdict(workload(SHA, {}), kustomization(SHA))  # never written by the reconciler
    assert adopted.action is Action.UPDATE and "record it" in adopted.reason


def test_a_persons_commit_holds_the_site_naming_who_and_when() -> None:
    last = gitops.FileChange("e" * 40, "Alice", "alice@acme.example", "2026-12-07T05:30:00Z", "pin")
    p = verdict(workload(OLD, recorded(OLD)), kustomization("v1.2.3"), last=last)
    assert p.action is Action.HELD and p.held_by == "Alice"
    assert p.held_at == "2026-12-07T05:30:00Z" and "changed by Alice" in p.reason
    assert p.write is not None and p.write.annotations == {ann.HELD_HEAD: SHA}
    assert p.write.image is None


def test_a_hold_lifts_when_the_branch_moves_on_or_after_a_resume() -> None:
    last = gitops.FileChange("e" * 40, "Alice", "", "2026-12-07T05:30:00Z", "pin")
    moved = workload(OLD, recorded(OLD, **{ann.HELD_HEAD: OLD}))
    p = verdict(moved, kustomization("v1.2.3"), last=last)
    assert p.action is Action.UPDATE and p.clear == ann.HOLD_KEYS
    resumed = workload(OLD, recorded(OLD, **{ann.RESUMED_AT: "2026-12-07T05:31:00Z"}))
    assert verdict(resumed, kustomization("v1.2.3"), last=last).action is Action.UPDATE


def test_a_failed_rollout_is_committed_back_and_held_never_patched() -> None:
    notes = recorded(BAD, **{ann.PREVIOUS_IMAGE: f"gcr.io/p/shop:{OLD}", ann.PREVIOUS_SHA: OLD})
    p = verdict(workload(BAD, notes, failed=True), kustomization(BAD), head=BAD)
    assert p.action is Action.ROLLED_BACK and p.rollout is Rollout.FAILED
    assert p.target_image == f"gcr.io/p/shop:{OLD}" and p.failed_sha == BAD
    assert p.write is not None and p.write.image is None and p.write.container is None
    assert p.write.annotations[ann.FAILED_SHA] == BAD
    assert p.write.annotations[ann.GIT_IMAGE] == f"gcr.io/p/shop:{OLD}"
    assert p.write.annotations[ann.HOLD_BY] == "reconciler"


def test_a_failed_rollout_of_an_image_not_committed_by_the_reconciler_is_left_alone() -> None:
    p = verdict(workload(BAD, recorded(OLD), failed=True), kustomization(OLD), head=OLD)
    assert p.action is not Action.ROLLED_BACK


def test_an_unreadable_repository_or_file_fails_only_that_site() -> None:
    d = workload(OLD, recorded(OLD))
    p = verdict(d, None, error="acme/deploy: no branch 'main'", kind=ErrorKind.WRITEBACK_NOT_FOUND)
    assert p.action is Action.ERROR and p.error_kind is ErrorKind.WRITEBACK_NOT_FOUND
    broken = verdict(d, "images: [\n")
    assert broken.action is Action.ERROR and "does not parse as YAML" in broken.reason
    missing = verdict(d, "images: []\n")
    assert missing.action is Action.ERROR and "no `images:` entry named" in missing.reason


def test_pr_mode_waits_for_the_merge_of_its_proposal() -> None:
    site = replace(SITE, git=replace(SPEC, mode="pr"))
    d = workload(OLD, recorded(OLD, **{ann.GIT_PROPOSED: f"{SHA} gcr.io/p/shop:{SHA}"}))
    heads = {site.ref: BranchHead("acme/shop", "main", SHA)}
    p = planner.plan_site(site, heads, {"web": {"shop": d}}, now=NOW)
    p = gitops.adjust(p, d, gitops.RepoView(kustomization(OLD)), now=NOW)
    assert p.skip is Skip.AWAITING_APPLY and "waits for a merge" in p.reason
