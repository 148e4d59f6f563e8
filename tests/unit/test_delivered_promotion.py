"""Promotion (#20) of and from sites delivered by Helm or by a GitOps repository (#21): the
engine judges a follower of any delivery against what its source of any delivery runs (soak,
forward only, never a failed commit), then its own delivery deploys the commit (a `helm
upgrade`, a config-repository commit) with the image of its own template; approval and windows
gate it as any site's update. On fakes; the deliveries' rules are the real ones
(core.helmplan, core.gitops)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from reconciler.core import annotations as ann
from reconciler.core.config import sites as config
from reconciler.core.gates import APPROVED_BY, APPROVED_SHA
from reconciler.core.gitops import FileChange, RepoFile
from reconciler.core.helmplan import ReleaseView, lead_workload, verdict
from reconciler.core.helmrelease import Container as HelmContainer
from reconciler.core.helmrelease import ReleaseImage, Revision, Workload, deploy_description
from reconciler.core.model import (
    GIT,
    HELM,
    Action,
    ApplyResult,
    Container,
    DeploymentStatus,
    FieldOwner,
    HeadResult,
    ObservedDeployment,
    Site,
    SitePlan,
    Skip,
    SyncRequest,
)
from reconciler.core.rollout.history import Deploy
from reconciler.core.rollout.state import FIELD_MANAGER, stamp
from reconciler.core.writeback import (
    Edit,
    ImageRef,
    WriteOutcome,
    WriteRequest,
    WriteResult,
    set_image,
)
from reconciler.sync.delivery import Deliveries
from reconciler.sync.engine import Engine
from reconciler.sync.gitops import GitDelivery
from tests.fakes import FakeCluster, FakeHeads, FakeVerifier

OLD, NEW, NEWER = "0" * 40, "a" * 40, "b" * 40
MIN = 60.0
NOW = datetime(2026, 12, 8, 10, 0, tzinfo=UTC).timestamp()  # a Tuesday

PIPELINE = """\
[defaults]
image = "stage.example/{repo}:{sha}"
verify = "none"

[sites.staging]
repo = "acme/shop"
namespace = "staging"
deployment = "shop"

[sites.prod]
repo = "acme/shop"
namespace = "prod"
deployment = "shop"
image = "prod.example/{repo}:{sha}"
promote_from = "staging"
soak = "30m"
"""
HELM_TABLE = '\n[sites.prod.helm]\nrelease = "shop"\n'
GIT_TABLE = (
    '\n[sites.prod.git]\nrepo = "acme/deploy"\nfile = "prod/kustomization.yaml"\n'
    'kustomize_image = "shop"\n'
)
KUSTOMIZATION = "images:\n  - name: shop\n    newName: prod.example/shop\n    newTag: {tag}\n"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def workload(
    ns: str, image: str, notes: Mapping[str, str] | None = None, *, failed: bool = False
) -> ObservedDeployment:
    status = DeploymentStatus(
        observed_generation=2, desired=1, replicas=1, updated=1, ready=1, available=1,
        deadline_exceeded=failed, message="ReplicaSet shop-1 has timed out progressing.",
    )  # fmt: skip
    return ObservedDeployment(
        ns,
        "shop",
        (Container("app", image),),
        annotations=dict(notes or {}),
        generation=2,
        status=status,
        resource_version="7",
        image_owners={"app": FieldOwner(FIELD_MANAGER)},
    )


def deployed(sha: str, *, updated: float, available: float | None = None) -> dict[str, str]:
    """The reconciler's records of a deploy of `sha` (a patch's, a git site's commit's)."""
    notes = {ann.SHA: sha, ann.BRANCH: "main", ann.UPDATED_AT: stamp(updated)}
    if available is not None:
        notes[ann.AVAILABLE_AT] = stamp(available)
    return notes


@dataclass
class FakeHelm:
    """A SiteDelivery of Helm releases in memory: one release per site, its Deployment in the
    FakeCluster; verdicts and records by the real rules (core.helmplan)."""

    cluster: FakeCluster
    clock: float
    revisions: dict[str, list[Revision]] = field(default_factory=dict)
    images: dict[str, dict[int, ReleaseImage]] = field(default_factory=dict)
    applied: list[SitePlan] = field(default_factory=list)

    def install(self, site: str, ns: str, description: str, tag: str, at: float) -> None:
        number = len(self.revisions.setdefault(site, [])) + 1
        self.revisions[site].append(Revision(number, "deployed", description, updated=_iso(at)))
        self.images.setdefault(site, {})[number] = ReleaseImage(tag=tag)

    def observe(self, sites: Sequence[Site]) -> Mapping[str, object]:
        return {s.name: self.view(s) for s in sites}

    def view(self, site: Site) -> ReleaseView:
        assert site.helm is not None
        history = self.revisions[site.name]
        past = tuple(replace(r, status="superseded") for r in history[:-1])
        images = self.images[site.name]
        ns = site.helm.namespace
        d = self.cluster.read(ns, "shop")
        w = Workload(
            "Deployment", ns, "shop", (HelmContainer("app", d.containers[0].image if d else ""),)
        )
        return ReleaseView(
            (*past, history[-1]),
            history[-1],
            images[history[-1].number],
            (w,),
            {str(w): d},
            images,
        )

    def verdict(self, site: Site, head: HeadResult | None, seen: object, now: float) -> SitePlan:
        assert isinstance(seen, ReleaseView)
        return verdict(site, head, seen, now)

    def workload(self, plan: SitePlan, seen: object) -> ObservedDeployment | None:
        assert isinstance(seen, ReleaseView)
        return lead_workload(plan, seen)

    def apply(self, plan: SitePlan, *, dry_run: bool, trigger: str) -> ApplyResult:
        self.applied.append(plan)
        if not dry_run and plan.action is Action.UPDATE:
            assert plan.target_image and plan.sha and plan.branch
            described = deploy_description(plan.branch, plan.sha, plan.running_sha)
            image = ImageRef.parse(plan.target_image)
            self.revisions[plan.site.name][-1] = replace(
                self.revisions[plan.site.name][-1], status="superseded"
            )
            assert plan.site.helm is not None and image.tag
            self.install(plan.site.name, plan.site.helm.namespace, described, image.tag, self.clock)
        return ApplyResult(ok=True)

    def hold(self, site: Site, *, by: str, reason: str, now: float) -> str:
        return "held"

    def resume(self, site: Site, *, by: str, now: float) -> str:
        return "resumed"

    def rollback(
        self, site: Site, *, by: str, to: str | None, image: str | None, now: float
    ) -> tuple[str, str | None]:
        return "rolled back", image

    def history(self, site: Site) -> list[Deploy]:
        return []


@dataclass
class FakeRepo:
    """A configuration repository in memory (the ConfigRepo port)."""

    files: dict[str, str] = field(default_factory=dict)
    writes: list[WriteRequest] = field(default_factory=list)

    def read(self, repo: str, ref: str, path: str) -> RepoFile:
        return RepoFile(self.files[path], "blob", ref)

    def last_change(self, repo: str, branch: str, path: str) -> FileChange | None:
        return None

    def write(self, req: WriteRequest) -> WriteResult:
        self.writes.append(req)
        edit: Edit = set_image(self.files[req.path], req.target, req.image)
        self.files[req.path] = edit.text
        return WriteResult(WriteOutcome.COMMITTED, edit, commit="c" * 40)


class World:
    """staging (its Deployment patched) runs NEW, available since `available` minutes ago;
    prod, delivered by `table`, runs OLD."""

    def __init__(
        self, table: str, *, available: float = 12, extra: str = "", before: str = ""
    ) -> None:
        self.now = NOW
        self.cfg = config.parse(before + PIPELINE + extra + table)
        self.heads = FakeHeads()
        self.heads.set("acme/shop", None, NEW)
        self.cluster = FakeCluster(now=NOW)
        notes = deployed(NEW, updated=NOW - (available + 5) * MIN, available=NOW - available * MIN)
        self.cluster.add(workload("staging", f"stage.example/shop:{NEW}", notes))
        self.helm = FakeHelm(self.cluster, NOW)
        self.repo = FakeRepo({"prod/kustomization.yaml": KUSTOMIZATION.format(tag=OLD)})
        git = GitDelivery(self.repo, self.cluster, clock=self.clock)
        if "helm" in table:
            self.cluster.add(workload("prod", f"prod.example/shop:{OLD}"))
            self.helm.install("prod", "prod", "Install complete", OLD, NOW - 90 * MIN)
        else:
            prod = deployed(OLD, updated=NOW - 90 * MIN, available=NOW - 89 * MIN)
            prod[ann.GIT_IMAGE] = f"prod.example/shop:{OLD}"
            self.cluster.add(workload("prod", f"prod.example/shop:{OLD}", prod))
        self.engine = Engine(
            heads=self.heads,
            cluster=self.cluster,
            verifier=FakeVerifier(),
            clock=self.clock,
            deliveries=Deliveries({HELM: self.helm, GIT: git}),
        )

    def clock(self) -> float:
        return self.now

    def prod(self, **kw: object) -> SitePlan:
        request = SyncRequest(sites=frozenset({"prod"}), **kw)  # type: ignore[arg-type]
        (r,) = self.engine.run(self.cfg, request).results
        return r.plan

    def staging(self, **notes: str) -> None:
        d = self.cluster.deployments[("staging", "shop")]
        self.cluster.add(replace(d, annotations={**d.annotations, **notes}))


def test_a_helm_follower_waits_for_the_soak_then_upgrades_to_its_own_image() -> None:
    w = World(HELM_TABLE)
    p = w.prod()
    assert (p.action, p.skip) == (Action.SKIP, Skip.PROMOTION), p.reason
    assert p.reason == "staging runs aaaaaaa, available 12 of 30 min"
    assert w.helm.applied == []  # never the branch head, never before the soak

    w.now = w.helm.clock = NOW + 18 * MIN  # available 30 min: the edge counts
    p = w.prod()
    assert p.action is Action.UPDATE, p.reason
    (upgrade,) = w.helm.applied
    assert upgrade.target_image == f"prod.example/shop:{NEW}"  # its own template
    assert (upgrade.sha, upgrade.branch) == (NEW, "main")
    assert p.gated == "from staging" and "main@aaaaaaa" in p.reason
    assert w.helm.revisions["prod"][-1].description == "reconciler: main@aaaaaaa (was 0000000)"

    again = w.prod()
    assert again.action is Action.IN_SYNC and "runs aaaaaaa like staging" in again.reason


def test_a_git_follower_waits_for_the_soak_then_commits_its_own_image() -> None:
    w = World(GIT_TABLE)
    p = w.prod()
    assert (p.action, p.skip) == (Action.SKIP, Skip.PROMOTION), p.reason
    assert w.repo.writes == []

    w.now = NOW + 20 * MIN
    p = w.prod()
    assert p.action is Action.UPDATE, p.reason
    (commit,) = w.repo.writes
    assert str(commit.image) == f"prod.example/shop:{NEW}" and commit.new_sha == NEW
    assert f"newTag: {NEW}" in w.repo.files["prod/kustomization.yaml"]
    notes = w.cluster.deployments[("prod", "shop")].annotations
    assert notes[ann.SHA] == NEW  # the commit recorded; the GitOps tool has not applied it

    later = w.prod()  # committed, not applied: nothing committed twice
    assert later.action is not Action.UPDATE and len(w.repo.writes) == 1


def test_a_commit_that_failed_on_the_source_is_never_promoted_by_any_delivery() -> None:
    for table in (HELM_TABLE, GIT_TABLE):
        w = World(table, available=60)
        d = w.cluster.deployments[("staging", "shop")]
        w.cluster.add(workload("staging", d.containers[0].image, d.annotations, failed=True))
        p = w.prod(plan_only=True)
        assert (p.action, p.reason) == (Action.SKIP, "blocked: aaaaaaa failed on staging")
        assert w.helm.applied == [] and w.repo.writes == []


def test_a_helm_follower_never_goes_back_to_an_older_commit() -> None:
    w = World(HELM_TABLE, available=60)
    w.helm.install("prod", "prod", "reconciler: main@bbbbbbb (was 0000000)", NEWER, NOW - MIN)
    p = w.prod(plan_only=True)
    assert p.action is Action.SKIP and "forward only" in p.reason, p.reason


def test_a_helm_source_feeds_a_patched_follower() -> None:
    text = PIPELINE.replace('promote_from = "staging"', 'promote_from = "canary"') + (
        '\n[sites.canary]\nrepo = "acme/shop"\nnamespace = "canary"\nbranch = "main"\n'
        '[sites.canary.helm]\nrelease = "shop"\n'
    )
    w = World("")
    w.cfg = config.parse(text)
    w.heads.set("acme/shop", "main", NEW)
    w.cluster.add(
        workload("prod", f"prod.example/shop:{OLD}", deployed(OLD, updated=NOW - 90 * MIN))
    )
    w.cluster.add(workload("canary", f"stage.example/shop:{NEW}"))
    w.helm.install("canary", "canary", "reconciler: main@aaaaaaa", NEW, NOW - 40 * MIN)
    p = w.prod(plan_only=True)
    assert p.reason == "canary runs aaaaaaa, available; its soak starts when recorded"

    w.engine.run(w.cfg, SyncRequest(sites=frozenset({"canary"})))  # in sync: stamps available-at
    assert ann.AVAILABLE_AT in w.cluster.deployments[("canary", "shop")].annotations
    w.now = NOW + 31 * MIN
    p = w.prod()
    assert p.action is Action.UPDATE and p.target_image == f"prod.example/shop:{NEW}", p.reason


def test_approval_and_windows_gate_a_delivered_follower_like_any_site() -> None:
    w = World(HELM_TABLE, available=60, extra='approval = "manual"\n')
    p = w.prod()
    assert (p.action, p.skip) == (Action.SKIP, Skip.APPROVAL), p.reason
    assert "aaaaaaa" in p.reason
    d = w.cluster.deployments[("prod", "shop")]
    w.cluster.add(replace(d, annotations={APPROVED_SHA: NEW, APPROVED_BY: "ana"}))
    p = w.prod()
    assert p.action is Action.UPDATE and p.approved_by == "ana", p.reason

    frozen = (
        '[windows.freeze]\nkind = "deny"\nrrule = "FREQ=DAILY;BYHOUR=0;BYMINUTE=0"\n'
        'duration = "24h"\ntimezone = "UTC"\n\n'
    )
    w = World(GIT_TABLE, available=60, extra='windows = ["freeze"]\n', before=frozen)
    p = w.prod()
    assert (p.action, p.skip) == (Action.SKIP, Skip.WINDOW) and w.repo.writes == []


def test_a_git_follower_that_runs_no_recorded_commit_waits_for_the_soak() -> None:
    w = World(GIT_TABLE)
    w.cluster.add(workload("prod", f"prod.example/shop:{OLD}"))  # no records of ours
    p = w.prod(plan_only=True)
    assert (p.action, p.skip) == (Action.SKIP, Skip.PROMOTION), p.reason
    assert p.reason == "staging runs aaaaaaa, available 12 of 30 min"


def test_a_git_source_soaks_only_once_its_gitops_tool_applied_the_commit() -> None:
    text = PIPELINE.replace(
        "[sites.prod]",
        '[sites.staging.git]\nrepo = "acme/deploy"\n'
        'file = "staging/kustomization.yaml"\nkustomize_image = "shop"\n\n[sites.prod]',
    )
    w = World("")
    w.cfg = config.parse(text)
    w.repo.files["staging/kustomization.yaml"] = KUSTOMIZATION.format(tag=NEW)
    committed = deployed(NEW, updated=NOW - 40 * MIN)
    committed[ann.GIT_IMAGE] = f"stage.example/shop:{NEW}"
    w.cluster.add(workload("staging", f"stage.example/shop:{OLD}", committed))  # not applied
    w.cluster.add(
        workload("prod", f"prod.example/shop:{OLD}", deployed(OLD, updated=NOW - 90 * MIN))
    )
    w.engine.run(w.cfg, SyncRequest(sites=frozenset({"staging"})))
    assert ann.AVAILABLE_AT not in w.cluster.deployments[("staging", "shop")].annotations
    p = w.prod(plan_only=True)
    assert p.action is Action.SKIP and "its soak starts when recorded" in p.reason, p.reason

    d = w.cluster.deployments[("staging", "shop")]  # the GitOps tool applies the commit
    w.cluster.add(replace(d, containers=(Container("app", f"stage.example/shop:{NEW}"),)))
    w.engine.run(w.cfg, SyncRequest(sites=frozenset({"staging"})))
    assert ann.AVAILABLE_AT in w.cluster.deployments[("staging", "shop")].annotations
    w.now = NOW + 30 * MIN
    p = w.prod()
    assert p.action is Action.UPDATE and p.target_image == f"prod.example/shop:{NEW}", p.reason
