"""Environment gates wired into the engine (reconciler/core/gates.py): promotion from a source
site with soak, manual approval of one commit, deploy windows and their override; and their
sites.toml keys. The engine runs on fakes here; tests/integration/test_environments.py runs the
same on the local cluster."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from reconciler.core import annotations as ann
from reconciler.core import gates
from reconciler.core.config import keys as configkeys
from reconciler.core.config import sites as config
from reconciler.core.config.schema import json_schema
from reconciler.core.errors import ConfigError
from reconciler.core.model import (
    Action,
    BranchHead,
    CommitState,
    Container,
    DeploymentStatus,
    FieldOwner,
    ObservedDeployment,
    RepoRef,
    Skip,
    SyncRequest,
)
from reconciler.core.promotion import AVAILABLE_AT
from reconciler.core.rollout.state import FIELD_MANAGER, stamp
from reconciler.core.windows import WINDOW_KEYS, WINDOW_OVERRIDE, WINDOW_OVERRIDE_SHA
from reconciler.sync import commands
from reconciler.sync.engine import Engine
from tests.fakes import FakeCluster, FakeHeads, FakeVerifier

OLD, NEW, NEWER = "0" * 40, "a" * 40, "b" * 40
MIN = 60.0
# Tuesday 2026-12-08 10:00 UTC (11:00 in Berlin): no freeze
TUESDAY = datetime(2026, 12, 8, 10, 0, tzinfo=UTC).timestamp()
# Saturday 2026-12-12 10:00 UTC: inside the Friday 16:00 + 65 h freeze
SATURDAY = datetime(2026, 12, 12, 10, 0, tzinfo=UTC).timestamp()

SITES = """\
[windows.weekend-freeze]
kind = "deny"
rrule = "FREQ=WEEKLY;BYDAY=FR;BYHOUR=16;BYMINUTE=0"
duration = "65h"
timezone = "Europe/Berlin"

[defaults]
image = "reg.example/{repo}:{sha}"

[sites.staging]
repo = "acme/blog"
branch = "main"
namespace = "staging"
deployment = "blog"

[sites.prod]
repo = "acme/blog"
namespace = "prod"
deployment = "blog"
image = "prod.example/{repo}:{sha}"
promote_from = "staging"
soak = "30m"
approval = "manual"
windows = ["weekend-freeze"]
"""


def _deployment(
    ns: str, image: str, sha: str | None, *, updated: float, available: float | None = None
) -> ObservedDeployment:
    notes = {ann.BRANCH: "main", ann.UPDATED_AT: stamp(updated)}
    if sha:
        notes[ann.SHA] = sha
    if available is not None:
        notes[AVAILABLE_AT] = stamp(available)
    status = DeploymentStatus(
        observed_generation=2, desired=1, replicas=1, updated=1, ready=1, available=1
    )
    return ObservedDeployment(
        ns,
        "blog",
        (Container("app", image),),
        annotations=notes,
        generation=2,
        status=status,
        resource_version="7",
        image_owners={"app": FieldOwner(FIELD_MANAGER)},
    )


class World:
    def __init__(self, now: float) -> None:
        self.now = now
        self.cfg = config.parse(SITES)
        self.heads = FakeHeads()
        self.heads.set("acme/blog", "main", NEW)
        self.cluster = FakeCluster(now=now)
        self.cluster.add(
            _deployment("staging", f"reg.example/blog:{NEW}", NEW, updated=now - 20 * MIN)
        )
        self.cluster.add(
            _deployment("prod", f"prod.example/blog:{OLD}", OLD, updated=now - 60 * MIN)
        )
        self.engine = Engine(
            heads=self.heads, cluster=self.cluster, verifier=FakeVerifier(), clock=self.clock
        )

    def clock(self) -> float:
        return self.now

    def prod(self, request: SyncRequest | None = None) -> tuple[Action, Skip | None, str]:
        report = self.engine.run(self.cfg, request or SyncRequest(sites=frozenset({"prod"})))
        (r,) = report.results
        return r.action, r.plan.skip, r.plan.reason

    def annotations(self, ns: str) -> dict[str, str]:
        return dict(self.cluster.deployments[(ns, "blog")].annotations)


def test_the_keys_load_with_their_defaults() -> None:
    cfg = config.parse(SITES)
    staging, prod = cfg.sites
    assert (staging.promote_from, staging.approval, staging.windows) == (None, "auto", ())
    assert prod.promote_from == "staging" and prod.soak == 1800 and prod.approval == "manual"
    assert prod.branch is None and prod.windows == ("weekend-freeze",)
    assert [w.name for w in cfg.windows_of(prod)] == ["weekend-freeze"]


def test_one_key_model_for_the_validator_and_the_schema() -> None:
    assert tuple(configkeys.WINDOW) == WINDOW_KEYS
    schema = json_schema()
    site = schema["properties"]["sites"]["additionalProperties"]["properties"]
    assert {"promote_from", "soak", "approval", "windows"} <= set(site)
    assert site["approval"]["enum"] == ["auto", "manual"]
    window = schema["properties"]["windows"]["additionalProperties"]
    assert set(window["properties"]) == set(WINDOW_KEYS)


@pytest.mark.parametrize(
    ("change", "line", "words"),
    [
        (('promote_from = "staging"', 'promote_from = "stagin"'), 21, 'unknown site "stagin"'),
        (('branch = "main"', 'promote_from = "prod"'), 12, "promotion cycle"),
        (('windows = ["weekend-freeze"]', 'windows = ["launch"]'), 24, "unknown window(s) launch"),
        (("BYDAY=FR", "BYDAY=XX"), 3, '"rrule"'),
        (('"Europe/Berlin"', '"Europe/Nowhere"'), 5, "timezone"),
        (('approval = "manual"', 'approval = "maybe"'), 23, '"approval" must be one of'),
        (('soak = "30m"', 'soak = "half an hour"'), 22, "not a duration"),
    ],
)
def test_load_errors_name_file_line_and_site(
    change: tuple[str, str], line: int, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        config.parse(SITES.replace(*change), "sites.toml")
    found = [p for p in caught.value.problems if words in p.message]
    assert found, caught.value
    assert found[0].line == line and found[0].path == "sites.toml"
    if line >= 10:  # a site's key: the site is named
        assert found[0].site in ("staging", "prod")


def test_a_broken_window_is_named_and_the_sites_naming_it_are_not_told_it_is_unknown() -> None:
    text = SITES.replace('duration = "65h"', 'duration = "65hours"').replace(
        'windows = ["weekend-freeze"]', 'windows = ["weekend-freeze", "weekend-frieze"]'
    )
    with pytest.raises(ConfigError) as caught:
        config.parse(text, "sites.toml")
    said = [str(p) for p in caught.value.problems]
    assert said == [
        'sites.toml:4: window "weekend-freeze": "duration" \'65hours\' is not a duration: '
        'write it like "65h", "30m" or "1h30m"',
        'sites.toml:24: site "prod": unknown window(s) weekend-frieze (did you mean '
        '"weekend-freeze"?); known: weekend-freeze',
    ], said


def test_a_soaking_commit_is_reported_and_not_deployed() -> None:
    w = World(TUESDAY)
    w.cluster.add(
        replace(
            w.cluster.deployments[("staging", "blog")],
            annotations={**w.annotations("staging"), AVAILABLE_AT: stamp(TUESDAY - 12 * MIN)},
        )
    )
    action, skip, reason = w.prod()
    assert (action, skip) == (Action.SKIP, Skip.PROMOTION)
    assert reason == "staging runs aaaaaaa, available 12 of 30 min"
    assert not w.cluster.applied


def test_once_soaked_it_waits_for_approval_of_that_commit_then_deploys() -> None:
    w = World(TUESDAY)
    w.engine.run(w.cfg, SyncRequest(sites=frozenset({"staging"})))  # stamps available-at
    assert w.annotations("staging")[AVAILABLE_AT] == stamp(TUESDAY)
    w.now += 31 * MIN
    assert w.prod() == (
        Action.SKIP,
        Skip.APPROVAL,
        "waiting for approval of aaaaaaa (`reconciler approve prod`)",
    )
    done = commands.approve(w.engine, w.cfg, w.cfg.sites[1], by="ada (cli)")
    assert "aaaaaaa approved by ada (cli)" in done.message
    notes = w.annotations("prod")
    assert notes[gates.APPROVED_SHA] == NEW and notes[gates.APPROVED_BY] == "ada (cli)"
    assert w.cluster.patches[-1].events[0].reason == "Approved"
    action, _, reason = w.prod()
    assert action is Action.UPDATE and "approved by ada (cli)" in reason
    (change, _), *_ = w.cluster.applied
    assert change.image == f"prod.example/blog:{NEW}" and change.sha == NEW


def test_an_approval_names_its_commit() -> None:
    w = World(TUESDAY)
    w.cluster.add(
        replace(
            w.cluster.deployments[("prod", "blog")],
            annotations={**w.annotations("prod"), gates.APPROVED_SHA: NEWER},
        )
    )
    w.engine.run(w.cfg, SyncRequest(sites=frozenset({"staging"})))
    w.now += 31 * MIN
    assert w.prod()[1] is Skip.APPROVAL  # NEWER was approved, NEW waits
    with pytest.raises(commands.CommandError, match="not the commit it waits for"):
        commands.approve(w.engine, w.cfg, w.cfg.sites[1], by="ada", sha="bbbb")
    with pytest.raises(commands.CommandError, match='approval = "auto"'):
        commands.approve(w.engine, w.cfg, w.cfg.sites[0], by="ada")


def test_a_commit_that_failed_on_the_source_is_never_promoted() -> None:
    w = World(TUESDAY)
    staging = w.cluster.deployments[("staging", "blog")]
    w.cluster.add(replace(staging, annotations={**staging.annotations, ann.FAILED_SHA: NEW}))
    w.now += 2 * 60 * MIN
    assert w.prod() == (Action.SKIP, Skip.PROMOTION, "blocked: aaaaaaa failed on staging")


def test_a_freeze_defers_the_deploy_and_an_override_lets_it_out_on_record() -> None:
    w = World(SATURDAY)
    w.cluster.add(
        replace(
            w.cluster.deployments[("prod", "blog")],
            annotations={**w.annotations("prod"), gates.APPROVED_SHA: NEW},
        )
    )
    w.engine.run(w.cfg, SyncRequest(sites=frozenset({"staging"})))
    w.now += 31 * MIN
    action, skip, reason = w.prod()
    assert (action, skip) == (Action.SKIP, Skip.WINDOW)
    assert reason == "frozen until Mon 09:00 Europe/Berlin by window weekend-freeze"
    assert not w.cluster.applied
    urgent = SyncRequest(sites=frozenset({"prod"}), override_window="security fix", by="ada (cli)")
    action, _, reason = w.prod(urgent)
    assert action is Action.UPDATE
    assert "through window weekend-freeze: override by ada (cli): security fix" in reason
    notes = w.annotations("prod")
    assert notes[WINDOW_OVERRIDE] == "security fix" and notes[WINDOW_OVERRIDE_SHA] == NEW
    assert w.cluster.patches[-1].events[0].reason == "WindowOverride"


def test_rollbacks_run_inside_a_freeze() -> None:
    w = World(SATURDAY)
    failed = DeploymentStatus(
        observed_generation=2, desired=1, replicas=1, updated=1, deadline_exceeded=True
    )
    prod = w.cluster.deployments[("prod", "blog")]
    notes = {**prod.annotations, ann.PREVIOUS_IMAGE: "prod.example/blog:" + "9" * 40}
    w.cluster.add(replace(prod, status=failed, annotations=notes))
    action, _, _ = w.prod()
    assert action is Action.ROLLED_BACK


def test_a_freeze_across_the_autumn_dst_switch_ends_monday_0900_local() -> None:
    """Europe/Berlin leaves summer time on Sunday 2026-10-25: the freeze from Friday 16:00 CEST
    lasts 66 h of elapsed time and ends Monday 09:00 CET (08:00 UTC), not 07:00 UTC."""
    friday = datetime(2026, 10, 23, 14, 0, tzinfo=UTC).timestamp()  # 16:00 CEST
    w = World(friday - 60 * MIN)
    w.cluster.add(
        replace(
            w.cluster.deployments[("prod", "blog")],
            annotations={**w.annotations("prod"), gates.APPROVED_SHA: NEW},
        )
    )
    w.engine.run(w.cfg, SyncRequest(sites=frozenset({"staging"})))
    w.now = datetime(2026, 10, 26, 7, 30, tzinfo=UTC).timestamp()  # Monday 08:30 CET
    assert w.prod() == (
        Action.SKIP,
        Skip.WINDOW,
        "frozen until Mon 09:00 Europe/Berlin by window weekend-freeze",
    )
    w.now = datetime(2026, 10, 26, 8, 0, tzinfo=UTC).timestamp()  # Monday 09:00 CET
    assert w.prod()[0] is Action.UPDATE


def test_a_commit_that_failed_on_the_follower_is_remembered_there_while_the_source_keeps_it() -> (
    None
):
    w = World(TUESDAY)
    prod = w.cluster.deployments[("prod", "blog")]
    w.cluster.add(replace(prod, annotations={**prod.annotations, ann.FAILED_SHA: NEW}))
    w.engine.run(w.cfg, SyncRequest(sites=frozenset({"staging"})))
    w.now += 2 * 60 * MIN
    action, skip, reason = w.prod()
    assert (action, skip) == (Action.SKIP, Skip.FAILED_COMMIT)  # the page: rolled-back
    assert reason == "blocked: aaaaaaa failed here (staging keeps it)"
    assert not w.cluster.applied


def test_a_follower_never_takes_an_older_commit() -> None:
    w = World(TUESDAY)
    history = (CommitState(NEWER), CommitState(NEW))  # the branch: NEWER, then NEW
    w.heads.heads[RepoRef("acme/blog", "main")] = BranchHead("acme/blog", "main", NEWER, history)
    prod = w.cluster.deployments[("prod", "blog")]
    w.cluster.add(
        replace(
            prod,
            containers=(Container("app", f"prod.example/blog:{NEWER}"),),
            annotations={**prod.annotations, ann.SHA: NEWER},
        )
    )
    w.cluster.add(
        replace(
            w.cluster.deployments[("staging", "blog")],
            annotations={**w.annotations("staging"), AVAILABLE_AT: stamp(TUESDAY - 60 * MIN)},
        )
    )
    action, skip, reason = w.prod()
    assert (action, skip) == (Action.SKIP, Skip.PROMOTION)
    assert reason == "blocked: staging runs aaaaaaa, older than bbbbbbb here (forward only)"


def test_defaults_windows_apply_unless_a_site_lists_its_own() -> None:
    text = SITES.replace(
        '[defaults]\nimage = "reg.example/{repo}:{sha}"\n',
        '[defaults]\nimage = "reg.example/{repo}:{sha}"\nwindows = ["weekend-freeze"]\n',
    )
    own = text.replace('approval = "manual"\nwindows = ["weekend-freeze"]', "windows = []")
    staging, prod = config.parse(own).sites
    assert staging.windows == ("weekend-freeze",) and prod.windows == ()
    with pytest.raises(ConfigError, match="unknown window"):
        config.parse(text.replace('windows = ["weekend-freeze"]\n', 'windows = ["nope"]\n', 1))


def test_a_sync_rolls_back_a_rollout_whose_new_pods_are_stuck() -> None:
    """The sync's own plan (not only the follower) sees stuck pods past rollout_timeout: the
    engine looks them up under each site's release key (a site of one part included)."""
    w = World(TUESDAY)
    staging = w.cluster.deployments[("staging", "blog")]
    notes = {
        **staging.annotations,
        ann.PREVIOUS_IMAGE: "reg.example/blog:" + OLD,
        ann.UPDATED_AT: stamp(TUESDAY - 20 * MIN),
    }
    progressing = DeploymentStatus(
        observed_generation=2, desired=1, replicas=2, updated=1, ready=1, available=1
    )
    w.cluster.add(replace(staging, annotations=notes, status=progressing))
    w.cluster.troubles[f"staging/reg.example/blog:{NEW}"] = ("pod x: CrashLoopBackOff",)
    report = w.engine.run(w.cfg, SyncRequest(sites=frozenset({"staging"})))
    (r,) = report.results
    assert r.action is Action.ROLLED_BACK and r.applied, r.plan.reason
    assert "CrashLoopBackOff" in r.plan.reason
