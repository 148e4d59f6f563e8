"""Lead time of sites not delivered by a patch (core.leadtime with core.gitops and core.helmplan):
a git site's stages run pushed → checks → committed → applied (its GitOps tool) → available, a
Helm site's → upgraded → available, recorded on the workload each follows, in the same words."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from reconciler.core import annotations as ann
from reconciler.core import leadtime
from reconciler.core.helmplan import ReleaseView, lead_workload, verdict
from reconciler.core.helmrelease import ReleaseImage, Revision
from reconciler.core.model import (
    GIT,
    Action,
    BranchHead,
    Container,
    DeploymentStatus,
    GitSpec,
    Lead,
    ObservedDeployment,
    Rollout,
    SitePlan,
    Skip,
    Stages,
)
from reconciler.core.rollout.state import parse_time, stamp
from tests.unit.test_delivery import SITE as HELM_SITE
from tests.unit.test_delivery import WEB
from tests.unit.test_leadtime import HEAD, RUNNING, SITE, T0

GIT_SITE = replace(
    SITE, delivery=GIT, git=GitSpec("acme/deploy", "apps/blog/kustomization.yaml", "kustomize")
)
PR_SITE = replace(GIT_SITE, git=replace(GIT_SITE.git, mode="pr"))  # type: ignore[type-var]
NEW, OLD_IMAGE = f"gcr.io/p/blog:{HEAD}", f"gcr.io/p/blog:{RUNNING}"
RECORD = leadtime.dumps(Stages(HEAD, pushed=T0, checks=T0 + 250, seen=T0 + 250))
COMMITTED = {  # what the commit to the configuration repository left on the Deployment
    ann.SHA: HEAD,
    ann.UPDATED_AT: stamp(T0 + 281),
    ann.GIT_IMAGE: NEW,
    ann.STAGES: RECORD,
}


def git_verdict(action: Action, current: str, **kw: object) -> SitePlan:
    base = SitePlan(
        GIT_SITE,
        action,
        sha=HEAD,
        head_sha=HEAD,
        branch="main",
        current_image=current,
        resource_version="9",
        running_sha=HEAD,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def lead_of(
    p: SitePlan,
    notes: Mapping[str, str] | None,
    head: BranchHead | None,
    *,
    pushed: float | None,
    now: float,
    at: ObservedDeployment | None = None,
) -> Lead:
    """leadtime.delivered with the records on `at`, by default the site's Deployment as read."""
    if at is None:
        at = ObservedDeployment(
            "web", "blog", (Container("app", NEW),), annotations=dict(notes or {}),
            resource_version="9",
        )  # fmt: skip
    return leadtime.delivered(p, at, head, pushed=pushed, now=now)


def branch() -> BranchHead:
    return BranchHead("acme/blog", "main", HEAD)


def test_a_git_commit_waits_for_its_gitops_tool_then_is_recorded_applied_once() -> None:
    waiting = git_verdict(
        Action.SKIP, OLD_IMAGE, skip=Skip.AWAITING_APPLY, rollout=Rollout.PROGRESSING
    )
    lead = lead_of(waiting, COMMITTED, branch(), pushed=None, now=T0 + 290)
    assert (lead.waiting, lead.since, lead.write, lead.verb) == (
        "applied",
        T0 + 281,
        None,
        "committed",
    )
    assert leadtime.waiting_text(lead, T0 + 290) == (
        "aaaaaaa waiting for the GitOps tool to apply it since 14:06, 9 s"
    )
    # the follower, without the branch head, sees the same; the old image's rollout is not its
    followed = replace(waiting, action=Action.ERROR, skip=None, rollout=Rollout.AVAILABLE)
    alone = lead_of(followed, COMMITTED, None, pushed=None, now=T0 + 290)
    assert alone.waiting == "applied"
    assert leadtime.follow_notes(replace(followed, lead=alone), T0 + 290) is None

    # the tool applied it: first seen now, recorded with the resourceVersion read
    rolling = git_verdict(Action.IN_SYNC, NEW, rollout=Rollout.PROGRESSING)
    seen = lead_of(rolling, COMMITTED, branch(), pushed=None, now=T0 + 300)
    assert seen.deployed is not None and seen.deployed.applied == T0 + 300
    assert (seen.waiting, seen.since) == ("available", T0 + 300)
    assert seen.write is not None and seen.write.resource_version == "9"
    assert seen.write.annotations == {ann.APPLIED_AT: stamp(T0 + 300)}
    applied = {**COMMITTED, ann.APPLIED_AT: stamp(T0 + 300)}
    again = lead_of(rolling, applied, branch(), pushed=None, now=T0 + 320)
    assert again.write is None and again.deployed == seen.deployed  # steady: nothing to write

    # available: the follower records it; the line names the commit and the apply
    done = git_verdict(Action.IN_SYNC, NEW, rollout=Rollout.AVAILABLE)
    live = lead_of(done, applied, None, pushed=None, now=T0 + 330)
    notes = leadtime.follow_notes(replace(done, lead=live), T0 + 330)
    assert notes == {ann.AVAILABLE_AT: stamp(T0 + 330)}
    final = lead_of(
        done, {**applied, ann.AVAILABLE_AT: stamp(T0 + 330)}, branch(), pushed=None, now=T0 + 400
    )
    assert final.deployed == Stages(
        HEAD, T0, T0 + 250, None, T0 + 281, T0 + 330, T0 + 250, applied=T0 + 300
    )
    assert leadtime.line(final.deployed, final.verb) == (
        "pushed 14:02 → checks green +4m10s → committed +4m41s → applied +5m00s → available +5m30s"
    )
    assert leadtime.durations(final.deployed) == {
        "checks": 250,
        "patched": 281,
        "applied": 300,
        "available": 330,
    }
    shown = leadtime.as_dict(final, T0 + 400)
    assert shown is not None and shown["deployed"]["applied"] == stamp(T0 + 300)  # type: ignore[index]


def test_applied_and_available_found_together_are_one_write() -> None:
    done = git_verdict(Action.IN_SYNC, NEW, rollout=Rollout.AVAILABLE)
    lead = lead_of(done, COMMITTED, None, pushed=None, now=T0 + 330)
    at = ObservedDeployment("web", "blog", (Container("app", NEW),), resource_version="12")
    write = leadtime.follow_patch(replace(done, lead=lead), at, T0 + 330)
    assert write is not None and write.resource_version == "12"
    assert write.annotations == {
        ann.APPLIED_AT: stamp(T0 + 330),
        ann.AVAILABLE_AT: stamp(T0 + 330),
    }
    after = leadtime.followed_up(lead, write, T0 + 330)
    assert after is not None and after.write is None and after.waiting is None
    assert after.deployed is not None and after.deployed.available == T0 + 330


def test_held_rolled_back_or_a_persons_image_is_not_waiting_for_the_tool() -> None:
    hotfix = "gcr.io/p/blog:hotfix"
    held = git_verdict(Action.HELD, hotfix, held_at=stamp(T0 + 500))
    lead = lead_of(held, COMMITTED, branch(), pushed=None, now=T0 + 600)
    assert lead.waiting is None and lead.write is None
    back = git_verdict(Action.ROLLED_BACK, NEW, rollout=Rollout.FAILED)
    lead = lead_of(back, COMMITTED, branch(), pushed=None, now=T0 + 600)
    assert lead.waiting is None and lead.write is None
    # stamped before the last commit: as if absent (an earlier rollout's)
    stale = {**COMMITTED, ann.APPLIED_AT: stamp(T0 + 100)}
    deployed, _ = leadtime.read(stale)
    assert deployed is not None and deployed.applied is None


def test_a_pull_request_waits_for_its_merge_and_keeps_the_heads_record() -> None:
    record = leadtime.dumps(Stages(HEAD, pushed=T0, image=T0 + 200, seen=T0 + 100))
    notes = {
        ann.SHA: RUNNING,
        ann.UPDATED_AT: stamp(T0 - 900),
        ann.HEAD_STAGES: record,
    }
    p = replace(
        git_verdict(Action.SKIP, OLD_IMAGE, skip=Skip.AWAITING_APPLY, running_sha=RUNNING),
        site=PR_SITE,
    )
    lead = lead_of(p, notes, branch(), pushed=None, now=T0 + 300)
    assert (lead.waiting, lead.since, lead.write) == ("merge", T0 + 200, None)
    assert "waiting for its pull request to be merged since 14:05" in leadtime.waiting_text(
        lead, T0 + 300
    )
    # the update that opens it carries the head's record
    opening = replace(p, action=Action.UPDATE, skip=None, lead=lead)
    assert leadtime.head_notes(opening) == {ann.HEAD_STAGES: record}
    ready = lead_of(replace(opening, lead=None), notes, branch(), pushed=None, now=T0 + 300)
    assert ready.waiting == "sync"  # the sync that opens it: waiting for the merge once opened
    opened = leadtime.proposed(ready)
    assert opened is not None and (opened.waiting, opened.since) == ("merge", T0 + 200)
    # the merge recorded (a crash lost the update's record): the head's record still tells
    merged = {
        ann.SHA: HEAD,
        ann.UPDATED_AT: stamp(T0 + 900),
        ann.GIT_IMAGE: NEW,
        ann.HEAD_STAGES: record,
    }
    deployed, _ = leadtime.read(merged)
    assert deployed == Stages(HEAD, T0, None, T0 + 200, T0 + 900, None, T0 + 100)


def test_after_a_commit_the_git_site_waits_for_its_tool() -> None:
    lead = lead_of(git_verdict(Action.UPDATE, OLD_IMAGE), {}, branch(), pushed=T0, now=T0)
    after = leadtime.after_patch(lead, HEAD, T0 + 5, delivery=GIT)
    assert (after.waiting, after.since, after.verb) == ("applied", T0 + 5, "committed")


# ---- Helm: the upgrade from Helm's record, the rest on the release's Deployment ---------------


def release(description: str, updated: str, notes: dict[str, str], tag: str = HEAD) -> ReleaseView:
    status = DeploymentStatus(
        observed_generation=2, desired=2, replicas=2, updated=2, ready=2, available=2
    )
    d = ObservedDeployment(
        "apps", "web", (Container("app", "x"),), annotations=notes, resource_version="31",
        generation=2, status=status,
    )  # fmt: skip
    deployed = Revision(2, "deployed", description, updated=updated)
    history = (Revision(1, "superseded", "Install complete", updated="2026-12-07T05:00:00Z"),)
    return ReleaseView(
        (*history, deployed), deployed, ReleaseImage(tag=tag), (WEB,), {"Deployment/web": d}
    )


def test_a_helm_site_reads_its_upgrade_from_the_release_and_the_rest_from_its_deployment() -> None:
    # helm history prints local time with its offset: 15:06:41+01:00 is 14:06:41Z
    record = leadtime.dumps(Stages(HEAD, pushed=T0, seen=T0))
    view = release(
        "reconciler: main@aaaaaaa (was ccccccc)",
        "2026-12-07T15:06:41.123456789+01:00",
        {ann.STAGES: record, ann.AVAILABLE_AT: stamp(T0 + 303), ann.SHA: "stale"},
    )
    p = verdict(HELM_SITE, BranchHead("acme/web", "main", HEAD), view, T0 + 400)
    assert p.action is Action.IN_SYNC and p.running_sha == HEAD
    at = lead_workload(p, view)
    assert at is not None and (at.name, at.resource_version) == ("web", "31")
    assert at.annotations[ann.SHA] == HEAD
    assert parse_time(at.annotations[ann.UPDATED_AT]) == T0 + 281
    lead = lead_of(p, at.annotations, None, pushed=None, now=T0 + 400, at=at)
    assert lead.deployed == Stages(HEAD, pushed=T0, patched=T0 + 281, available=T0 + 303, seen=T0)
    assert leadtime.line(lead.deployed, lead.verb) == (
        "pushed 14:02 → upgraded +4m41s → available +5m03s"
    )
    # a person's revision: no commit of the reconciler's runs
    person = release("Rollback to 1", "2026-12-07T14:30:00Z", {ann.STAGES: record})
    mine = lead_workload(verdict(HELM_SITE, None, person, T0), person)
    assert mine is not None and ann.SHA not in mine.annotations


def test_a_helm_heads_record_goes_on_the_releases_deployment() -> None:
    view = release("reconciler: main@ccccccc", "2026-12-07T13:00:00Z", {}, tag=RUNNING)
    p = verdict(HELM_SITE, BranchHead("acme/web", "main", HEAD), view, T0)
    held = replace(p, action=Action.HELD, held_at=stamp(T0))  # the head is not deployed
    at = lead_workload(held, view)
    lead = lead_of(held, at.annotations if at else None, branch(), pushed=T0, now=T0, at=at)
    assert lead.write is not None and lead.write.resource_version == "31"  # not the revision
    assert (lead.write.namespace, lead.write.deployment) == ("apps", "web")
    assert set(lead.write.annotations) == {ann.HEAD_STAGES}
    # a short commit (a description's, an image without {sha}) matches its full record
    short = {
        ann.SHA: HEAD[:7],
        ann.UPDATED_AT: stamp(T0),
        ann.STAGES: leadtime.dumps(Stages(HEAD, T0)),
    }
    deployed, _ = leadtime.read(short)
    assert deployed is not None and deployed.pushed == T0
