"""Promotion with soak (reconciler/core/promotion.py): verdicts from annotations and a clock, the
available-at stamp, forward only, and the promotion graph of sites.toml."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import replace

import pytest

from reconciler.core import annotations as ann
from reconciler.core.config.lines import Lines
from reconciler.core.model import (
    Container,
    DeploymentStatus,
    FieldOwner,
    ObservedDeployment,
    Rollout,
    Site,
)
from reconciler.core.promotion import (
    AVAILABLE_AT,
    Observed,
    Promotion,
    Stage,
    Verdict,
    available_patch,
    chains,
    decide,
    newer,
    observe,
    parse_soak,
    promotions,
    root,
)
from reconciler.core.rollout.state import FIELD_MANAGER, stamp

Z, A, B, C = ("0" * 40, "a" * 40, "b" * 40, "c" * 40)  # oldest first
T0 = 1_800_000_000.0  # when dev's rollout of A became available
MIN = 60
HISTORY = (C, B, A, Z)  # dev's branch, newest first


def _site(name: str, image: str = "gcr.io/stage/{repo}:{sha}") -> Site:
    return Site(name, "acme/blog", None, name, "blog", None, image)


DEV = Site("dev", "acme/blog", "main", "dev", "blog", None, "gcr.io/stage/{repo}:{sha}")
STAGING = _site("staging")
PROD = _site("prod", "eu.gcr.io/prod/{repo}:{branch}-{short_sha}")
TO_STAGING = Promotion("staging", "dev", 30 * MIN)
TO_PROD = Promotion("prod", "staging", 60 * MIN)


def _deployment(
    site: Site,
    sha: str | None,
    *,
    updated: float = T0 - 5 * MIN,
    available: float | None = None,
    rollout: str = "available",
    owner: str = FIELD_MANAGER,
    notes: Mapping[str, str] | None = None,
) -> ObservedDeployment:
    """A site's Deployment as the API server shows it: the annotations the reconciler wrote and the
    controller's status (rollout "available", "progressing" or "failed")."""
    annotations = {ann.BRANCH: "main", ann.UPDATED_AT: stamp(updated), **(notes or {})}
    if sha is not None:
        annotations[ann.SHA] = sha
    if available is not None:
        annotations[AVAILABLE_AT] = stamp(available)
    ready = 0 if rollout == "progressing" else 2
    status = DeploymentStatus(
        observed_generation=3,
        desired=2,
        replicas=2,
        updated=2,
        ready=ready,
        available=ready,
        deadline_exceeded=rollout == "failed",
    )
    image = f"gcr.io/stage/blog:{sha or 'manual'}"
    return ObservedDeployment(
        site.namespace,
        site.deployment,
        (Container("app", image),),
        annotations=annotations,
        generation=3,
        status=status,
        image_owners={"app": FieldOwner(owner, "Update", stamp(updated))},
        resource_version="42",
    )


def _seen(site: Site, d: ObservedDeployment, now: float) -> Observed:
    return observe(site, d, "app", now)


def _verdict(
    p: Promotion,
    follower: Site,
    source: tuple[Site, ObservedDeployment],
    here: ObservedDeployment,
    now: float,
    *,
    history: tuple[str, ...] = HISTORY,
) -> Verdict:
    seen = _seen(*source, now)
    return decide(p, follower, seen, _seen(follower, here, now), now=now, history=history)


# --- the soak, at and around its edge ---------------------------------------------------------


@pytest.mark.parametrize(
    ("after", "stage"),
    [
        (-90, Stage.SOAKING),
        (0, Stage.SOAKING),
        (30 * MIN - 1, Stage.SOAKING),
        (30 * MIN, Stage.READY),
        (30 * MIN + 1, Stage.READY),
        (5 * 86400, Stage.READY),
    ],
)
def test_the_soak_edge_is_ready_exactly_at_the_soak(after: int, stage: Stage) -> None:
    dev = _deployment(DEV, A, available=T0)
    v = _verdict(TO_STAGING, STAGING, (DEV, dev), _deployment(STAGING, Z), T0 + after)
    assert v.stage is stage
    assert v.sha == A
    if stage is Stage.SOAKING:
        assert v.due == T0 + 30 * MIN
        assert v.image is None
        assert v.soaked == max(0, after)  # a clock behind the stamp counts as no soak yet
    else:
        assert v.image == f"gcr.io/stage/blog:{A}"


def test_soaking_and_ready_say_where_it_stands() -> None:
    dev = _deployment(DEV, A, available=T0)
    staging = _deployment(STAGING, Z)
    soaking = _verdict(TO_STAGING, STAGING, (DEV, dev), staging, T0 + 12 * MIN + 59)
    assert soaking.text == "dev runs aaaaaaa, available 12 of 30 min"
    ready = _verdict(TO_STAGING, STAGING, (DEV, dev), staging, T0 + 31 * MIN)
    assert ready.text == "ready to promote aaaaaaa (dev: available 31 min)"


def test_the_image_is_the_followers_own_template_with_the_sources_branch() -> None:
    staging = _deployment(STAGING, A, available=T0)
    v = _verdict(TO_PROD, PROD, (STAGING, staging), _deployment(PROD, Z), T0 + 2 * 3600)
    assert v.stage is Stage.READY
    assert v.image == "eu.gcr.io/prod/blog:main-aaaaaaa"


def test_soak_zero_promotes_once_availability_is_recorded() -> None:
    quick = replace(TO_STAGING, soak=0)
    dev = _deployment(DEV, A, available=T0)
    assert _verdict(quick, STAGING, (DEV, dev), _deployment(STAGING, Z), T0).stage is Stage.READY


# --- the source's rollout: not yet available, failed, rolled back, held ----------------------


def test_a_progressing_source_is_waited_for_whatever_the_clock() -> None:
    dev = _deployment(DEV, A, rollout="progressing", available=T0 - 3600)  # an old stamp
    v = _verdict(TO_STAGING, STAGING, (DEV, dev), _deployment(STAGING, Z), T0 + 86400)
    assert v.stage is Stage.WAITING
    assert v.text == "dev rolls out aaaaaaa (progressing, 0/2 ready)"


@pytest.mark.parametrize("stamped", [None, T0 - 6 * MIN])  # none, or from the rollout before
def test_an_available_source_without_a_valid_stamp_waits_for_it(stamped: float | None) -> None:
    dev = _deployment(DEV, A, updated=T0 - 5 * MIN, available=stamped)
    v = _verdict(TO_STAGING, STAGING, (DEV, dev), _deployment(STAGING, Z), T0 + 86400)
    assert v.stage is Stage.WAITING
    assert v.text == "dev runs aaaaaaa, available; its soak starts when recorded"


def test_a_failed_staging_rollout_never_promotes() -> None:
    staging = _deployment(STAGING, A, rollout="failed", available=T0)
    for later in (0, 59 * MIN, 60 * MIN, 61 * MIN, 30 * 86400):
        v = _verdict(TO_PROD, PROD, (STAGING, staging), _deployment(PROD, Z), T0 + later)
        assert v.stage is Stage.BLOCKED
        assert v.text == "blocked: aaaaaaa failed on staging"
        assert v.image is None


def test_a_commit_remembered_as_failed_on_the_source_is_blocked() -> None:
    # no previous image to go back to: the source still runs the commit it marked failed
    staging = _deployment(STAGING, A, available=T0, notes={ann.FAILED_SHA: A})
    v = _verdict(TO_PROD, PROD, (STAGING, staging), _deployment(PROD, Z), T0 + 86400)
    assert (v.stage, v.text) == (Stage.BLOCKED, "blocked: aaaaaaa failed on staging")


def test_after_a_rollback_the_source_runs_the_commit_before_and_the_failed_one_never_goes() -> None:
    # staging took B, it failed, the watcher rolled back to A: sha A, failed-sha B, updated now
    back = T0 + 10 * MIN
    staging = _deployment(STAGING, A, updated=back, available=T0, notes={ann.FAILED_SHA: B})
    prod_on_a = _deployment(PROD, A)
    v = _verdict(TO_PROD, PROD, (STAGING, staging), prod_on_a, back + 86400)
    assert (v.stage, v.text) == (Stage.CURRENT, "runs aaaaaaa like staging")
    # a follower still on Z gets A only after A soaks again since the rollback
    prod_on_z = _deployment(PROD, Z)
    v = _verdict(TO_PROD, PROD, (STAGING, staging), prod_on_z, back + 86400)
    assert v.stage is Stage.WAITING  # the stamp is older than the rollback
    restamped = _deployment(
        STAGING, A, updated=back, available=back + MIN, notes={ann.FAILED_SHA: B}
    )
    v = _verdict(TO_PROD, PROD, (STAGING, restamped), prod_on_z, back + 30 * MIN)
    assert (v.stage, v.sha) == (Stage.SOAKING, A)


def test_a_commit_that_failed_here_is_blocked_and_the_source_keeps_it() -> None:
    staging = _deployment(STAGING, A, available=T0)
    prod = _deployment(PROD, Z, notes={ann.FAILED_SHA: A})
    v = _verdict(TO_PROD, PROD, (STAGING, staging), prod, T0 + 86400)
    assert (v.stage, v.text) == (Stage.BLOCKED, "blocked: aaaaaaa failed here (staging keeps it)")


def test_a_source_held_by_a_hold_command_promotes_nothing() -> None:
    staging = _deployment(
        STAGING,
        A,
        available=T0,
        notes={ann.HOLD: "investigating", ann.HOLD_BY: "alice", ann.HOLD_AT: stamp(T0)},
    )
    v = _verdict(TO_PROD, PROD, (STAGING, staging), _deployment(PROD, Z), T0 + 86400)
    assert v.stage is Stage.BLOCKED
    assert v.text.startswith("blocked: staging is held (held by alice at ")
    assert "investigating" in v.text


def test_a_source_whose_image_a_person_changed_promotes_nothing() -> None:
    staging = _deployment(STAGING, A, available=T0, owner="kubectl-set")
    v = _verdict(TO_PROD, PROD, (STAGING, staging), _deployment(PROD, Z), T0 + 86400)
    assert v.stage is Stage.BLOCKED
    assert "image set to gcr.io/stage/blog:" in v.text and "by kubectl-set" in v.text


def test_a_source_with_no_recorded_commit_has_nothing_to_promote() -> None:
    v = _verdict(TO_PROD, PROD, (STAGING, _deployment(STAGING, None)), _deployment(PROD, Z), T0)
    assert (v.stage, v.text) == (
        Stage.CURRENT,
        "nothing to promote: staging runs no recorded commit",
    )


# --- forward only -----------------------------------------------------------------------------


def test_an_older_commit_is_never_promoted() -> None:
    staging = _deployment(STAGING, A, available=T0)
    prod = _deployment(PROD, B)
    v = _verdict(TO_PROD, PROD, (STAGING, staging), prod, T0 + 86400)
    assert v.stage is Stage.BLOCKED
    assert v.text == "blocked: staging runs aaaaaaa, older than bbbbbbb here (forward only)"


def test_order_from_the_roots_history_then_from_deploy_times() -> None:
    src, here = Observed(sha=B, updated_at=T0), Observed(sha=A, updated_at=T0 + 1)
    assert newer(B, src, here, HISTORY) is True  # both in the history: it decides
    assert newer(A, replace(src, sha=A), replace(here, sha=B), HISTORY) is False
    assert newer(B, src, replace(here, sha="f" * 40), HISTORY) is True  # here: beyond the window
    assert newer("e" * 40, src, here, HISTORY) is False  # here in the window, candidate not
    assert newer(B, src, here, ()) is False  # no history: the source deployed it earlier
    assert newer(B, replace(src, updated_at=T0 + 2), here, ()) is True
    assert newer(B, replace(src, updated_at=None), here, ()) is None
    assert newer(B, src, Observed(), ()) is True  # nothing recorded here: the first promotion


def test_without_history_an_unknown_order_blocks() -> None:
    staging = _deployment(STAGING, A, available=T0)
    prod = replace(
        _deployment(PROD, B),
        annotations={ann.SHA: B},  # no updated-at
    )
    v = _verdict(TO_PROD, PROD, (STAGING, staging), prod, T0 + 86400, history=())
    assert v.stage is Stage.BLOCKED
    assert "cannot tell whether it is newer than bbbbbbb" in v.text


# --- a chain and a restart --------------------------------------------------------------------


def _applied(d: ObservedDeployment, notes: Mapping[str, str | None]) -> ObservedDeployment:
    merged = {**d.annotations, **notes}
    return replace(d, annotations={k: v for k, v in merged.items() if v is not None})


def _deployed(site: Site, sha: str, at: float) -> ObservedDeployment:
    """What a site's Deployment looks like right after the reconciler set it to ``sha``."""
    return _deployment(site, sha, updated=at, rollout="progressing")


def _available(d: ObservedDeployment, at: float) -> ObservedDeployment:
    """The controller reports the rollout done; an observer stamps it (`available_patch`)."""
    assert d.status is not None
    done = replace(d, status=replace(d.status, ready=2, available=2))
    patch = available_patch(done, at)
    assert patch is not None
    stamped = _applied(done, patch.annotations)
    assert available_patch(stamped, at + 5) is None  # stamped once
    return stamped


def test_a_chain_dev_staging_prod_where_each_stage_soaks() -> None:
    dev = _deployment(DEV, A, available=T0)
    staging, prod = _deployment(STAGING, Z), _deployment(PROD, Z)

    def both(now: float) -> tuple[Verdict, Verdict]:
        return (
            _verdict(TO_STAGING, STAGING, (DEV, dev), staging, now),
            _verdict(TO_PROD, PROD, (STAGING, staging), prod, now),
        )

    s, p = both(T0 + 10 * MIN)
    assert (s.stage, p.stage) == (Stage.SOAKING, Stage.CURRENT)
    s, p = both(T0 + 30 * MIN)
    assert (s.stage, s.image, p.stage) == (Stage.READY, f"gcr.io/stage/blog:{A}", Stage.CURRENT)

    staging = _deployed(STAGING, A, T0 + 31 * MIN)  # the engine deploys it
    assert both(T0 + 32 * MIN)[1].stage is Stage.WAITING  # staging rolls out A: prod waits
    staging = _available(staging, T0 + 34 * MIN)
    s, p = both(T0 + 34 * MIN)
    assert (s.stage, p.stage, p.text) == (
        Stage.CURRENT,
        Stage.SOAKING,
        "staging runs aaaaaaa, available 0 of 60 min",
    )
    assert p.due == T0 + 94 * MIN
    assert both(T0 + 94 * MIN - 1)[1].stage is Stage.SOAKING
    s, p = both(T0 + 94 * MIN)
    assert (p.stage, p.image) == (Stage.READY, "eu.gcr.io/prod/blog:main-aaaaaaa")

    prod = _available(_deployed(PROD, A, T0 + 95 * MIN), T0 + 97 * MIN)
    assert [v.stage for v in both(T0 + 98 * MIN)] == [Stage.CURRENT, Stage.CURRENT]

    # dev moves on to B: staging soaks it while prod keeps A
    dev = _deployment(DEV, B, updated=T0 + 100 * MIN, available=T0 + 102 * MIN)
    s, p = both(T0 + 110 * MIN)
    assert (s.stage, s.text, p.stage) == (
        Stage.SOAKING,
        "dev runs bbbbbbb, available 8 of 30 min",
        Stage.CURRENT,
    )


def _restart(d: ObservedDeployment) -> ObservedDeployment:
    """The Deployment as a new process reads it: only what the API server keeps."""
    return replace(d, annotations=json.loads(json.dumps(dict(d.annotations))))


def test_a_restart_mid_soak_gives_the_same_verdict_from_the_same_annotations() -> None:
    staging = _available(_deployed(STAGING, A, T0), T0 + 2 * MIN)
    prod = _deployment(PROD, Z)
    for now in (T0 + 20 * MIN, T0 + 62 * MIN - 1, T0 + 62 * MIN):
        before = _verdict(TO_PROD, PROD, (STAGING, staging), prod, now)
        after = _verdict(TO_PROD, PROD, (STAGING, _restart(staging)), _restart(prod), now)
        assert after == before
    # the restarted observer does not stamp again: the soak does not start over
    assert available_patch(_restart(staging), T0 + 40 * MIN) is None
    mid = _verdict(TO_PROD, PROD, (STAGING, _restart(staging)), prod, T0 + 40 * MIN)
    assert mid.text == "staging runs aaaaaaa, available 38 of 60 min"


def test_available_patch_stamps_only_an_available_recorded_rollout() -> None:
    assert available_patch(_deployment(STAGING, A, rollout="progressing"), T0) is None
    assert available_patch(_deployment(STAGING, A, rollout="failed"), T0) is None
    assert available_patch(_deployment(STAGING, None), T0) is None
    stale = _deployment(STAGING, A, updated=T0, available=T0 - 1)
    patch = available_patch(stale, T0 + 7)
    assert patch is not None
    assert dict(patch.annotations) == {AVAILABLE_AT: stamp(T0 + 7)}
    assert patch.resource_version == "42"
    assert (patch.image, patch.container, patch.events) == (None, None, ())


def test_observe_reads_every_input_from_the_deployment() -> None:
    d = _deployment(STAGING, A, updated=T0, available=T0 + 60, notes={ann.FAILED_SHA: B})
    seen = _seen(STAGING, d, T0 + 120)
    assert seen == Observed(
        sha=A,
        branch="main",
        updated_at=T0,
        available_at=T0 + 60,
        rollout=Rollout.AVAILABLE,
        progress="2/2 ready",
        failed_sha=B,
        hold=None,
    )


# --- sites.toml: the promotion graph ----------------------------------------------------------


def _graph(text: str) -> tuple[dict[str, Promotion], list[tuple[str, str, tuple[str, ...]]]]:
    found, problems = promotions(tomllib.loads(text)["sites"])
    return found, [(p.site, p.message, p.where) for p in problems]


PIPELINE = """
[sites.dev]
repo = "acme/blog"
branch = "main"
[sites.staging]
repo = "acme/blog"
promote_from = "dev"
soak = "30m"
[sites.prod]
repo = "acme/blog"
promote_from = "staging"
soak = "1h30m"
"""


def test_a_pipeline_parses_into_followers_and_chains() -> None:
    found, problems = _graph(PIPELINE)
    assert problems == []
    assert found == {
        "staging": Promotion("staging", "dev", 1800),
        "prod": Promotion("prod", "staging", 5400),
    }
    assert chains(found, ["dev", "staging", "prod"]) == (("dev", "staging", "prod"),)
    assert root(found, "prod") == "dev"
    assert root(found, "dev") == "dev"


def test_chains_list_a_source_before_its_followers_in_config_order() -> None:
    found = {
        "prod-us": Promotion("prod-us", "staging", 0),
        "staging": Promotion("staging", "dev", 0),
        "prod-eu": Promotion("prod-eu", "staging", 0),
        "docs-prod": Promotion("docs-prod", "docs", 0),
    }
    names = ["docs", "prod-us", "dev", "staging", "prod-eu", "docs-prod", "alone"]
    assert chains(found, names) == (
        ("docs", "docs-prod"),
        ("dev", "staging", "prod-us", "prod-eu"),
    )


def test_a_cycle_is_reported_at_each_of_its_sites() -> None:
    text = PIPELINE.replace('branch = "main"', 'promote_from = "prod"')
    found, problems = _graph(text)
    cycle = "promotion cycle: dev → staging → prod → dev"
    assert problems == [
        ("dev", cycle, ("sites", "dev", "promote_from")),
        ("staging", cycle, ("sites", "staging", "promote_from")),
        ("prod", cycle, ("sites", "prod", "promote_from")),
    ]
    assert chains(found, ["dev", "staging", "prod"]) == ()
    with pytest.raises(ValueError, match="promotion cycle"):
        root(found, "prod")


def test_a_site_promoting_from_itself_is_a_cycle() -> None:
    _, problems = _graph('[sites.a]\nrepo = "acme/blog"\npromote_from = "a"\n')
    assert problems == [("a", "promotion cycle: a → a", ("sites", "a", "promote_from"))]


def test_a_tail_into_a_cycle_reports_the_cycle_once() -> None:
    text = PIPELINE.replace('branch = "main"', 'promote_from = "staging"')
    text += '[sites.edge]\nrepo = "acme/blog"\npromote_from = "prod"\n'
    _, problems = _graph(text)
    assert [(site, message) for site, message, _ in problems] == [
        ("dev", "promotion cycle: dev → staging → dev"),
        ("staging", "promotion cycle: dev → staging → dev"),
    ]


def test_an_unknown_source_names_the_site_and_the_known_ones() -> None:
    _, problems = _graph(PIPELINE.replace('promote_from = "dev"', 'promote_from = "devv"'))
    assert problems == [
        (
            "staging",
            '"promote_from" names unknown site "devv" (sites: dev, prod)',
            ("sites", "staging", "promote_from"),
        )
    ]


def test_branch_and_promote_from_together_are_refused() -> None:
    text = PIPELINE.replace('soak = "30m"', 'soak = "30m"\nbranch = "main"')
    _, problems = _graph(text)
    assert problems == [
        (
            "staging",
            'a site has "branch" or "promote_from", not both: it follows a branch or a site',
            ("sites", "staging", "branch"),
        )
    ]


@pytest.mark.parametrize(
    ("soak", "says"),
    [
        ('"30 minutes"', "is not a duration"),
        ('"0m"', "must be longer than zero"),
        ('"90s"', "is not a duration"),
        ("30", 'must be a string like "30m"'),
        ('""', "is not a duration"),
    ],
)
def test_a_malformed_soak_names_the_site(soak: str, says: str) -> None:
    found, problems = _graph(PIPELINE.replace('soak = "30m"', f"soak = {soak}"))
    assert [(site, where) for site, _, where in problems] == [
        ("staging", ("sites", "staging", "soak"))
    ]
    assert says in problems[0][1]
    assert problems[0][1].startswith('"soak"')
    assert found["staging"].soak == 0  # the loader refuses the file; nothing half-parsed is used


def test_soak_without_promote_from_and_a_bad_promote_from() -> None:
    text = '[sites.a]\nrepo = "acme/blog"\nsoak = "5m"\n[sites.b]\nrepo = "acme/blog"\n'
    text += "promote_from = 3\n"
    _, problems = _graph(text)
    assert problems == [
        (
            "a",
            '"soak" needs "promote_from": it is how long the source runs a commit first',
            ("sites", "a", "soak"),
        ),
        ("b", '"promote_from" must name a site', ("sites", "b", "promote_from")),
    ]


def test_a_follower_of_another_repository_is_refused() -> None:
    _, problems = _graph(
        PIPELINE.replace(
            'repo = "acme/blog"\npromote_from = "staging"',
            'repo = "acme/shop"\npromote_from = "staging"',
        )
    )
    assert problems == [
        (
            "prod",
            '"repo" must be staging\'s ("acme/blog"): it promotes staging\'s commits',
            ("sites", "prod", "repo"),
        )
    ]


def test_parse_soak_uses_the_duration_grammar_of_windows() -> None:
    assert [parse_soak(v) for v in ("30m", "1h30m", "2h", "1d")] == [1800, 5400, 7200, 86400]


def test_every_problem_points_at_the_line_of_its_key() -> None:
    """The loader names file:line from `where` with the one TOML line scanner."""
    text = PIPELINE.replace('branch = "main"', 'promote_from = "prod"')
    text = text.replace('soak = "1h30m"', 'soak = "soon"')
    _, problems = promotions(tomllib.loads(text)["sites"])
    lines = Lines(text)
    assert [(p.site, lines.of(*p.where), p.message.split(":")[0]) for p in problems] == [
        ("prod", 12, '"soak"'),
        ("dev", 4, "promotion cycle"),
        ("staging", 7, "promotion cycle"),
        ("prod", 11, "promotion cycle"),
    ]
