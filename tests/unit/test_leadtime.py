"""Lead time, stage by stage (core.leadtime): what is recorded on the workload, when, and what
the page and `plan` say of a head that is not live yet."""

from __future__ import annotations

import json
from dataclasses import replace

from reconciler.core import annotations as ann
from reconciler.core import leadtime
from reconciler.core.model import (
    Action,
    BranchHead,
    CommitState,
    Lead,
    Rollout,
    Site,
    SitePlan,
    Skip,
    Stages,
)
from reconciler.core.rollout.state import parse_time, stamp
from reconciler.core.triggers import webhooks

HEAD = "a" * 40
OLD = "b" * 40
RUNNING = "c" * 40
SITE = Site(
    name="blog",
    repo="acme/blog",
    branch="main",
    namespace="web",
    deployment="blog",
    container="app",
    image="gcr.io/p/{repo}:{sha}",
)
T0 = parse_time("2026-12-07T14:02:00Z") or 0.0  # the push
COMMITTED = "2026-12-07T14:01:00Z"  # the commit's committedDate (before the push)


def head(checks: str | None = None) -> BranchHead:
    history = (CommitState(HEAD, checks, COMMITTED), CommitState(OLD, "SUCCESS", COMMITTED))
    return BranchHead("acme/blog", "main", HEAD, history, COMMITTED)


def verdict(action: Action = Action.UPDATE, skip: Skip | None = None, **kw: object) -> SitePlan:
    base = SitePlan(
        SITE,
        action,
        sha=HEAD,
        head_sha=HEAD,
        branch="main",
        skip=skip,
        resource_version="7",
        running_sha=RUNNING,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


RUNS = {ann.SHA: RUNNING, ann.UPDATED_AT: "2026-12-07T10:00:00Z"}


def test_a_head_waiting_for_checks_is_recorded_once_and_says_since_when() -> None:
    site = replace(SITE, verify="checks")
    p = verdict(Action.SKIP, Skip.CHECKS_PENDING, site=site)
    now = T0 + 360
    lead = leadtime.lead_of(p, RUNS, head("PENDING"), pushed=None, now=now)
    assert lead.waiting == "checks"
    assert lead.since == parse_time(COMMITTED)  # no push webhook: the committed date
    assert lead.head == Stages(HEAD, pushed=parse_time(COMMITTED), seen=now)
    assert lead.write is not None and lead.write.resource_version == "7"
    recorded = lead.write.annotations[ann.HEAD_STAGES]
    assert json.loads(recorded or "") == {
        "sha": HEAD,
        "pushed": COMMITTED,
        "seen": stamp(now),
    }
    # the next syncs find it recorded: nothing to write while nothing changes (steady: 0 writes)
    again = leadtime.lead_of(
        p, {**RUNS, ann.HEAD_STAGES: recorded or ""}, head("PENDING"), pushed=None, now=now + 600
    )
    assert again.write is None and again.head == lead.head and again.since == lead.since
    text = leadtime.waiting_text(again, now + 600)
    assert text == "head aaaaaaa waiting for checks since 14:01, 17 min"


def test_a_push_webhook_time_wins_over_the_committed_date() -> None:
    p = verdict(Action.SKIP, Skip.IMAGE_MISSING)
    lead = leadtime.lead_of(p, RUNS, head(), pushed=T0, now=T0 + 60)
    assert lead.head is not None and lead.head.pushed == T0
    assert (lead.waiting, lead.since) == ("image", T0)


def test_checks_green_then_image_missing_waits_for_the_image_since_checks() -> None:
    p = verdict(Action.SKIP, Skip.IMAGE_MISSING)
    first = leadtime.lead_of(p, RUNS, head("SUCCESS"), pushed=T0, now=T0 + 250)
    assert first.head is not None and first.head.checks == T0 + 250
    assert (first.waiting, first.since) == ("image", T0 + 250)
    assert first.write is not None
    notes = {**RUNS, **{k: v or "" for k, v in first.write.annotations.items()}}
    # the image appears 30 s later: the update records every stage in the patch that deploys it
    ready = leadtime.lead_of(verdict(), notes, head("SUCCESS"), pushed=None, now=T0 + 280)
    assert ready.head == Stages(HEAD, T0, T0 + 250, T0 + 280, seen=T0 + 250)
    assert (ready.waiting, ready.since, ready.write) == ("sync", T0 + 280, None)
    update = leadtime.update_notes(replace(verdict(), lead=ready))
    assert update[ann.HEAD_STAGES] is None
    assert leadtime.loads(update[ann.STAGES]) == replace(ready.head, pushed=T0)
    after = leadtime.after_patch(ready, HEAD, T0 + 281)
    assert after.deployed is not None and after.deployed.patched == T0 + 281
    assert (after.waiting, after.since) == ("available", T0 + 281)


def test_the_deployed_commit_reads_back_from_the_annotations_with_its_rollout() -> None:
    record = leadtime.dumps(Stages(HEAD, pushed=T0, checks=T0 + 250, image=T0 + 280))
    notes = {
        ann.SHA: HEAD,
        ann.STAGES: record,
        ann.UPDATED_AT: stamp(T0 + 281),
        ann.AVAILABLE_AT: stamp(T0 + 303),
    }
    p = verdict(Action.IN_SYNC, rollout=Rollout.AVAILABLE)
    lead = leadtime.lead_of(p, notes, head("SUCCESS"), pushed=None, now=T0 + 400)
    assert lead == Lead(Stages(HEAD, T0, T0 + 250, T0 + 280, T0 + 281, T0 + 303))
    assert lead.deployed is not None
    assert leadtime.line(lead.deployed) == (
        "pushed 14:02 → checks green +4m10s → image +4m40s → patched +4m41s → available +5m03s"
    )
    assert leadtime.durations(lead.deployed) == {
        "checks": 250,
        "image": 280,
        "patched": 281,
        "available": 303,
    }
    assert leadtime.waiting_text(lead, T0 + 400) == ""
    # still rolling out: it waits for its rollout since it was patched
    rolling = {k: v for k, v in notes.items() if k != ann.AVAILABLE_AT}
    p = verdict(Action.IN_SYNC, rollout=Rollout.PROGRESSING)
    lead = leadtime.lead_of(p, rolling, head(), pushed=None, now=T0 + 290)
    assert (lead.waiting, lead.since) == ("available", T0 + 281)
    assert (
        leadtime.waiting_text(lead, T0 + 290) == "aaaaaaa waiting for its rollout since 14:06, 9 s"
    )
    assert leadtime.available(lead, T0 + 303) == Lead(
        Stages(HEAD, T0, T0 + 250, T0 + 280, T0 + 281, T0 + 303)
    )


def test_stale_records_are_ignored() -> None:
    # a stages record of another commit (a rollback went back past it), an available-at from an
    # earlier rollout, unreadable JSON: each is as if absent, never an error
    notes = {
        ann.SHA: RUNNING,
        ann.STAGES: leadtime.dumps(Stages(HEAD, pushed=T0)),
        ann.UPDATED_AT: stamp(T0 + 100),
        ann.AVAILABLE_AT: stamp(T0 + 50),
        ann.HEAD_STAGES: "{not json",
    }
    deployed, recorded = leadtime.read(notes)
    assert deployed == Stages(RUNNING, patched=T0 + 100)
    assert recorded is None
    assert leadtime.loads('["x"]') is None and leadtime.loads('{"sha": 1}') is None


def test_a_new_head_replaces_the_record_of_the_one_before() -> None:
    older = leadtime.dumps(Stages(OLD, pushed=T0 - 900, seen=T0 - 900))
    p = verdict(Action.SKIP, Skip.IMAGE_MISSING)
    lead = leadtime.lead_of(p, {**RUNS, ann.HEAD_STAGES: older}, head(), pushed=T0, now=T0 + 5)
    assert lead.head == Stages(HEAD, pushed=T0, seen=T0 + 5)
    assert lead.write is not None


def test_a_fallback_deploys_an_older_commit_while_the_head_waits() -> None:
    p = verdict(sha=OLD, head_sha=HEAD)  # the head's image is missing: the older one goes out
    lead = leadtime.lead_of(p, RUNS, head(), pushed=T0, now=T0 + 100)
    assert (lead.waiting, lead.since) == ("image", T0)
    assert lead.target == Stages(OLD, pushed=parse_time(COMMITTED), image=T0 + 100, seen=T0 + 100)
    assert lead.write is not None  # recorded; the update's patch carries it (engine: not twice)
    notes = leadtime.update_notes(replace(p, lead=lead))
    assert leadtime.loads(notes[ann.STAGES]) == lead.target
    assert leadtime.loads(notes[ann.HEAD_STAGES]) == lead.head
    after = leadtime.after_patch(lead, OLD, T0 + 101)
    assert after.deployed is not None and after.deployed.sha == OLD
    assert after.waiting == "image" and after.head == lead.head


def test_held_paused_failed_and_errors() -> None:
    held = verdict(Action.HELD, held_at=stamp(T0 + 30), write=None)
    lead = leadtime.lead_of(held, RUNS, head(), pushed=T0, now=T0 + 90)
    assert (lead.waiting, lead.since) == ("hold", T0 + 30)
    assert "waiting for a hold to be lifted since 14:02" in leadtime.waiting_text(lead, T0 + 90)
    paused = verdict(Action.SKIP, Skip.PAUSED)
    lead = leadtime.lead_of(paused, RUNS, head(), pushed=T0, now=T0 + 90)
    assert (lead.waiting, lead.write) == ("paused", None)
    assert leadtime.waiting_text(lead, T0 + 90) == "head aaaaaaa waiting for the site to be resumed"
    failed = verdict(Action.SKIP, Skip.FAILED_COMMIT)
    lead = leadtime.lead_of(failed, RUNS, head(), pushed=T0, now=T0 + 90)
    assert (lead.waiting, lead.write) == (None, None)
    error = verdict(Action.ERROR, reason="boom")
    assert leadtime.lead_of(error, RUNS, head(), pushed=T0, now=T0 + 90).waiting is None


def test_a_plan_that_does_not_apply_says_the_head_waits_for_a_sync() -> None:
    lead = leadtime.lead_of(verdict(), RUNS, head(), pushed=T0, now=T0 + 60)
    assert (lead.waiting, lead.since, lead.write) == ("sync", T0 + 60, None)
    as_json = leadtime.as_dict(lead, T0 + 120)
    assert as_json is not None
    assert as_json["waiting"] == "sync" and as_json["since"] == stamp(T0 + 60)
    assert as_json["text"] == "head aaaaaaa waiting for a sync since 14:03, 1 min"
    head_json = as_json["head"]
    assert isinstance(head_json, dict) and head_json["seconds"] == {"image": 60}


def test_formats() -> None:
    assert [leadtime.offset(s) for s in (0, 41, 250, 3840, 90000)] == [
        "+0s",
        "+41s",
        "+4m10s",
        "+1h04m",
        "+1d01h",
    ]
    assert [leadtime.age(s) for s in (40, 360, 7500, 90000)] == [
        "40 s",
        "6 min",
        "2 h 5 min",
        "1 d 1 h",
    ]
    assert leadtime.line(Stages(HEAD, seen=T0, image=T0 + 5)) == "seen 14:02 → image +5s"
    assert leadtime.line(Stages(HEAD)) == ""


def test_push_time_of_a_push_delivery() -> None:
    payload = {
        "ref": "refs/heads/main",
        "after": HEAD,
        "repository": {"full_name": "acme/blog", "pushed_at": int(T0)},
    }
    assert webhooks.push_time("push", payload) == ("acme/blog", HEAD, T0)
    as_text = {**payload, "repository": {"full_name": "acme/blog", "pushed_at": COMMITTED}}
    assert webhooks.push_time("push", as_text) == ("acme/blog", HEAD, parse_time(COMMITTED))
    for event, bad in (
        ("push", {**payload, "after": "0" * 40}),
        ("push", {**payload, "repository": {"full_name": "acme/blog", "pushed_at": None}}),
        ("push", {**payload, "repository": {"full_name": "acme/blog", "pushed_at": "x"}}),
        ("push", {**payload, "repository": {"full_name": "acme/blog", "pushed_at": True}}),
        ("push", {**payload, "repository": "acme/blog"}),
        ("status", payload),
        ("push", []),
    ):
        assert webhooks.push_time(event, bad) is None


def test_the_engine_records_the_stages_across_syncs_a_deploy_and_its_rollout() -> None:
    from reconciler.core.config import sites as config
    from reconciler.core.model import (
        Container,
        DeploymentStatus,
        ObservedDeployment,
        RepoRef,
        SyncRequest,
    )
    from reconciler.sync.engine import Engine
    from tests.fakes import FakeCluster, FakeHeads, FakeVerifier

    cfg = config.parse(
        '[sites.blog]\nrepo = "acme/blog"\nbranch = "main"\nnamespace = "web"\n'
        'image = "gcr.io/p/{repo}:{sha}"\npin_digest = false\n'
    )
    heads, cluster = FakeHeads(), FakeCluster()
    only = (CommitState(HEAD, "SUCCESS", COMMITTED),)  # no older commit to fall back to
    heads.heads[RepoRef("acme/blog", "main")] = replace(head(), history=only)
    old = ObservedDeployment(
        "web", "blog", (Container("app", "gcr.io/p/blog:old"),), resource_version="1"
    )
    cluster.add(old)
    image = f"gcr.io/p/blog:{HEAD}"
    verifier = FakeVerifier(missing={image})
    clock = [T0 + 60.0]
    engine = Engine(heads=heads, cluster=cluster, verifier=verifier, clock=lambda: clock[0])
    engine.conflict_pause = lambda attempt: 0.0
    engine.pushed = lambda repo, sha: T0 if (repo, sha) == ("acme/blog", HEAD) else None

    # the image is missing: the head's stages so far are written on the Deployment, once
    report = engine.run(cfg, SyncRequest())
    (lead,) = (r.plan.lead for r in report.results)
    assert lead is not None and (lead.waiting, lead.since) == ("image", T0 + 60)
    assert [p.annotations for p in cluster.patches] == [
        {ann.HEAD_STAGES: leadtime.dumps(Stages(HEAD, T0, T0 + 60, seen=T0 + 60))}
    ]
    clock[0] += 60
    engine.run(cfg, SyncRequest())
    assert len(cluster.patches) == 1  # nothing new: nothing written
    assert engine.run(cfg, SyncRequest(plan_only=True)).results[0].plan.lead == replace(
        lead, write=None
    )

    # the image appears: the patch that deploys the head carries every stage
    verifier.missing.clear()
    clock[0] = T0 + 280
    (result,) = engine.run(cfg, SyncRequest()).results
    assert result.applied
    notes = cluster.deployments["web", "blog"].annotations
    assert ann.HEAD_STAGES not in notes
    assert leadtime.loads(notes[ann.STAGES]) == Stages(HEAD, T0, T0 + 60, T0 + 280, seen=T0 + 60)
    assert result.plan.lead is not None
    assert (result.plan.lead.waiting, result.plan.lead.since) == ("available", T0 + 280)

    # its rollout becomes available: following it records when
    d = cluster.deployments["web", "blog"]
    done = DeploymentStatus(observed_generation=d.generation, replicas=1, updated=1, available=1)
    cluster.add(
        replace(d, status=done, annotations={**d.annotations, ann.UPDATED_AT: stamp(T0 + 281)})
    )
    clock[0] = T0 + 303
    cluster.patch_conflicts = 1  # the controller's status update lands first: read, try again
    followed = engine.follow(cfg.sites[0])
    deployed = followed.plan.lead.deployed if followed.plan.lead else None
    assert deployed == Stages(HEAD, T0, T0 + 60, T0 + 280, T0 + 281, T0 + 303, seen=T0 + 60)
    assert cluster.deployments["web", "blog"].annotations[ann.AVAILABLE_AT] == stamp(T0 + 303)


def test_a_head_waiting_for_approval_or_a_window_passed_its_checks_and_image() -> None:
    for skip, words in ((Skip.APPROVAL, "approval"), (Skip.WINDOW, "a deploy window")):
        p = verdict(Action.SKIP, skip)
        lead = leadtime.lead_of(p, RUNS, head(), pushed=T0, now=T0 + 300)
        assert lead.head == Stages(HEAD, pushed=T0, image=T0 + 300, seen=T0 + 300)
        assert (lead.waiting, lead.since) == (str(skip), T0 + 300)
        assert lead.write is not None  # recorded: when it is let through, the image time stays
        assert f"waiting for {words} since 14:07" in leadtime.waiting_text(lead, T0 + 900)


def test_a_follower_site_counts_from_the_push_to_its_source_and_waits_for_its_promotion() -> None:
    prod = replace(SITE, name="blog-prod", promote_from="blog", soak=1800)
    source = {  # staging runs HEAD, pushed at T0, available at T0 + 303
        ann.SHA: HEAD,
        ann.STAGES: leadtime.dumps(Stages(HEAD, pushed=T0, image=T0 + 280, seen=T0 + 60)),
        ann.UPDATED_AT: stamp(T0 + 281),
        ann.AVAILABLE_AT: stamp(T0 + 303),
    }
    soaking = verdict(Action.SKIP, Skip.PROMOTION, site=prod, sha=RUNNING, head_sha=RUNNING)
    lead = leadtime.promoted(soaking, RUNS, source, now=T0 + 900)
    assert lead.head is not None and (lead.head.sha, lead.head.pushed) == (HEAD, T0)
    assert (lead.waiting, lead.since) == ("promotion", T0 + 303)
    assert leadtime.waiting_text(lead, T0 + 900) == (
        "head aaaaaaa waiting for its promotion since 14:07, 9 min"
    )
    # once ready, the update that promotes it records the push to staging as its push
    ready = verdict(site=prod)
    lead = leadtime.promoted(ready, RUNS, source, now=T0 + 2200)
    notes = leadtime.update_notes(replace(ready, lead=lead))
    assert leadtime.loads(notes[ann.STAGES]) == Stages(
        HEAD, pushed=T0, image=T0 + 2200, seen=T0 + 2200
    )
    # a source that runs no recorded commit: nothing to say about a head
    lead = leadtime.promoted(soaking, RUNS, {}, now=T0 + 900)
    assert lead.head is None and lead.waiting is None
