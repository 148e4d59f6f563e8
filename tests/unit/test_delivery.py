"""The delivery seam (#21): [sites.NAME.helm] in sites.toml, the engine routing each site to its
delivery (the Deployment patch stays the default), and the verdicts of a Helm-delivered site."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import pytest

from reconciler.core.config import sites as config
from reconciler.core.errors import ConfigError, ErrorKind, ReconcilerError
from reconciler.core.helmplan import ReleaseView, verdict
from reconciler.core.helmrelease import Container as HelmContainer
from reconciler.core.helmrelease import ReleaseImage, Revision, Workload
from reconciler.core.model import (
    HELM,
    KUBERNETES,
    Action,
    ApplyResult,
    BranchHead,
    ClusterRef,
    Container,
    DeploymentStatus,
    HeadResult,
    HelmSpec,
    ObservedDeployment,
    Rollout,
    Site,
    SitePlan,
    Skip,
    SyncRequest,
    WorkloadVerdict,
)
from reconciler.core.rollout.history import Deploy
from reconciler.sync.delivery import Deliveries
from reconciler.sync.engine import Engine
from tests.fakes import FakeCluster, FakeHeads, FakeVerifier

SITES = """\
[defaults]
namespace = "web"
image = "registry.example/{repo}:{sha}"
verify = "none"

[sites.blog]
repo = "acme/blog"

[sites.shop]
repo = "acme/shop"

[sites.shop.helm]
release = "shop-prod"
values = { repository = "image.repository", tag = "image.tag" }
"""
A, B, BAD = "a" * 40, "b" * 40, "badc0de" + "c" * 33


def test_a_helm_table_makes_a_helm_site_with_defaults() -> None:
    cfg = config.parse(SITES + '\n[sites.docs]\nrepo = "acme/docs"\nhelm = {}\n')
    blog, shop, docs = cfg.sites
    assert (blog.delivery, blog.helm) == (KUBERNETES, None)
    assert shop.delivery == HELM
    assert shop.helm == HelmSpec("shop-prod", "web", "image.tag", "image.repository", None)
    assert docs.helm == HelmSpec("docs", "web", "image.tag")  # release = the site's name


@pytest.mark.parametrize(
    ("table", "said"),
    [
        ('helm = { chart = "x" }', 'unknown key "chart"'),
        ('helm = { values = { tag = "image..tag" } }', "is not a dotted values key"),
        ('helm = { values = { repository = "image.repository" } }', 'tag = "image.tag"'),
        ('helm = { release = "Web_1" }', "not a valid Helm release name"),
        ('helm = "web"', '"helm" must be a table'),
    ],
)
def test_a_bad_helm_table_is_named_with_its_line(table: str, said: str) -> None:
    text = f'[sites.docs]\nrepo = "acme/docs"\nimage = "r/d:{{sha}}"\n{table}\n'
    with pytest.raises(ConfigError) as err:
        config.parse(text, "sites.toml")
    (problem,) = err.value.problems
    assert said in problem.message and problem.line == 4 and problem.site == "docs"


@dataclass
class FakeDelivery:
    """A SiteDelivery that records what the engine asked of it."""

    running: dict[str, str] = field(default_factory=dict)  # site -> image
    applied: list[tuple[str, Action, bool]] = field(default_factory=list)
    broken: set[str] = field(default_factory=set)

    def observe(self, sites: Sequence[Site]) -> Mapping[str, object]:
        return {
            s.name: ReconcilerError("cannot read it", kind=ErrorKind.HELM)
            if s.name in self.broken
            else self.running[s.name]
            for s in sites
        }

    def verdict(self, site: Site, head: HeadResult | None, seen: object, now: float) -> SitePlan:
        assert isinstance(head, BranchHead) and isinstance(seen, str)
        target = f"registry.example/{site.repo_name}:{head.sha}"
        action = Action.IN_SYNC if seen == target else Action.UPDATE
        return SitePlan(
            site, action, branch=head.branch, sha=head.sha, target_image=target, current_image=seen
        )

    def workload(self, plan: SitePlan, seen: object) -> ObservedDeployment | None:
        return None  # no records: no lead time

    def apply(self, plan: SitePlan, *, dry_run: bool, trigger: str) -> ApplyResult:
        self.applied.append((plan.site.name, plan.action, dry_run))
        if not dry_run and plan.target_image:
            self.running[plan.site.name] = plan.target_image
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


def engine_world() -> tuple[config.Config, Engine, FakeCluster, FakeDelivery]:
    cfg = config.parse(SITES)
    heads = FakeHeads()
    heads.set("acme/blog", None, A)
    heads.set("acme/shop", None, B)
    cluster = FakeCluster()
    cluster.add(ObservedDeployment("web", "blog", (Container("app", "registry.example/blog:x"),)))
    delivery = FakeDelivery(running={"shop": "registry.example/shop:old"})
    engine = Engine(
        heads=heads,
        cluster=cluster,
        verifier=FakeVerifier(),
        deliveries=Deliveries({HELM: delivery}),
    )
    return cfg, engine, cluster, delivery


def test_each_site_goes_to_its_delivery_and_the_deployment_patch_stays_the_default() -> None:
    cfg, engine, cluster, delivery = engine_world()
    report = engine.run(cfg, SyncRequest(dry_run=True))
    assert [(r.plan.site.name, r.action, r.applied) for r in report.results] == [
        ("blog", Action.UPDATE, True),
        ("shop", Action.UPDATE, True),
    ]
    assert delivery.applied == [("shop", Action.UPDATE, True)]  # a dry run, passed on
    assert [(c.deployment, dry) for c, dry in cluster.applied] == [("blog", True)]

    engine.run(cfg, SyncRequest())
    again = engine.run(cfg, SyncRequest())
    assert [r.action for r in again.results] == [Action.IN_SYNC, Action.IN_SYNC]
    assert delivery.running["shop"] == f"registry.example/shop:{B}"


def test_one_delivery_failing_fails_only_its_site() -> None:
    cfg, engine, _, delivery = engine_world()
    delivery.broken.add("shop")
    report = engine.run(cfg, SyncRequest())
    blog, shop = report.results
    assert blog.applied and blog.action is Action.UPDATE
    assert shop.action is Action.ERROR and shop.plan.error_kind is ErrorKind.HELM
    assert "cannot read it" in shop.plan.reason

    missing = Engine(heads=engine.heads, cluster=engine.cluster, verifier=engine.verifier)
    blog, shop = missing.run(cfg, SyncRequest(plan_only=True)).results
    assert blog.action is Action.IN_SYNC
    assert shop.action is Action.ERROR and 'delivery "helm" is not available' in shop.plan.reason


def test_a_site_in_a_named_cluster_goes_to_that_clusters_delivery_and_fails_alone() -> None:
    """Each (delivery, cluster) has its own SiteDelivery (helm with that cluster's kubeconfig);
    a cluster it cannot reach fails its sites only, naming it."""
    text = '[clusters.prod]\ncontext = "p"\n[clusters.edge]\ncontext = "e"\n' + SITES
    text += '\n[sites.shop-prod]\nrepo = "acme/shop"\ncluster = "prod"\nhelm = {}\n'
    text += '\n[sites.shop-edge]\nrepo = "acme/shop"\ncluster = "edge"\nhelm = {}\n'
    cfg = config.parse(text)
    _, engine, _, home = engine_world()
    prod = FakeDelivery(running={"shop-prod": "registry.example/shop:old"})
    asked: list[str] = []

    def remote(name: str, ref: ClusterRef) -> FakeDelivery:
        asked.append(f"{name}@{ref.name}")
        if ref.name == "edge":
            raise ReconcilerError('cluster "edge": connection refused', kind=ErrorKind.KUBERNETES)
        return prod

    engine.deliveries = Deliveries({HELM: home}, remote)
    report = engine.run(cfg, SyncRequest())
    by = {r.plan.site.name: r for r in report.results}
    assert by["shop"].applied and by["shop-prod"].applied and by["blog"].applied
    assert [a[0] for a in home.applied] == ["shop"] and [a[0] for a in prod.applied] == [
        "shop-prod"
    ]
    edge = by["shop-edge"]
    assert edge.action is Action.ERROR and edge.plan.reason == 'cluster "edge": connection refused'
    assert set(asked) == {"helm@prod", "helm@edge"}

    alone = Deliveries({HELM: home})  # a process that reaches no other cluster says so
    with pytest.raises(ReconcilerError, match='not available for cluster "prod"'):
        alone.of(cfg.by_name["shop-prod"])


# ---- the verdicts of a Helm-delivered site ---------------------------------------------------

SITE = Site(
    "web",
    "acme/web",
    "main",
    "apps",
    "web",
    None,
    "registry.example/web:{sha}",
    verify="none",
    delivery=HELM,
    helm=HelmSpec("web", "apps"),
)
WEB = Workload("Deployment", "apps", "web", (HelmContainer("app", "registry.example/web:v1"),))


def rev(n: int, description: str, status: str = "superseded") -> Revision:
    return Revision(n, status, description, updated=f"2026-12-07T05:0{n}:00Z")


def deployment(*, failed: bool = False, notes: Mapping[str, str] | None = None) -> object:
    status = DeploymentStatus(
        observed_generation=2, desired=2, replicas=2, updated=2, ready=2, available=2,
        deadline_exceeded=failed, message="ReplicaSet web-1 has timed out progressing.",
    )  # fmt: skip
    return ObservedDeployment(
        "apps",
        "web",
        (Container("app", "x"),),
        annotations=dict(notes or {}),
        generation=2,
        status=status,
    )


def view(history: tuple[Revision, ...], tag: str, **kw: object) -> ReleaseView:
    deployed = replace(history[-1], status="deployed")
    history = (*history[:-1], deployed)
    images = kw.pop("images", {deployed.number: ReleaseImage(tag=tag)})
    d = kw.pop("d", deployment())
    return ReleaseView(
        history,
        deployed,
        ReleaseImage(tag=tag),
        (WEB,),
        {"Deployment/web": d},  # type: ignore[dict-item]
        images,  # type: ignore[arg-type]
    )


def head(sha: str) -> BranchHead:
    return BranchHead("acme/web", "main", sha)


def test_an_update_names_the_value_change_and_the_workloads_it_rolls() -> None:
    p = verdict(SITE, head(B), view((rev(1, "Install complete"),), "v1"), 0)
    assert p.action is Action.UPDATE and p.target_image == f"registry.example/web:{B}"
    assert p.current_image == "registry.example/web:v1" and p.rollout is Rollout.AVAILABLE
    assert f"image.tag v1 → {B}" in p.reason and "rolls Deployment/web" in p.reason
    ours = (rev(1, "Install complete"), rev(2, "reconciler: main@bbbbbbb"))
    same = verdict(SITE, head(B), view(ours, B), 0)
    assert same.action is Action.IN_SYNC and same.running_sha == B


def test_a_failed_rollout_of_its_deploy_goes_back_and_the_commit_is_never_retried() -> None:
    history: tuple[Revision, ...] = (rev(1, "Install complete"), rev(2, "reconciler: main@aaaaaaa"))
    history += (rev(3, "reconciler: main@badc0de (was aaaaaaa)"),)
    p = verdict(SITE, head(BAD), view(history, BAD, d=deployment(failed=True)), 0)
    assert p.action is Action.ROLLED_BACK and p.back_to == "2" and p.failed_sha == BAD
    assert "timed out progressing" in p.reason and p.running_sha == "aaaaaaa"

    history += (rev(4, f"reconciler: rollback of main@{BAD} to revision 2: timed out"),)
    after = verdict(SITE, head(BAD), view(history, A), 0)
    assert after.action is Action.SKIP and after.skip is Skip.FAILED_COMMIT
    assert verdict(SITE, head(B), view(history, A), 0).action is Action.UPDATE
    other = "badc0de" + "d" * 33  # shares the short SHA: another commit, deployed
    assert verdict(SITE, head(other), view(history, A), 0).action is Action.UPDATE


def test_a_persons_helm_rollback_holds_the_site_until_resume() -> None:
    history: tuple[Revision, ...] = (rev(1, "Install complete"), rev(2, "reconciler: main@aaaaaaa"))
    history += (rev(3, "Rollback to 1"),)
    images = {2: ReleaseImage(tag=A), 3: ReleaseImage(tag="v1")}
    p = verdict(SITE, head(B), view(history, "v1", images=images), 0)
    assert p.action is Action.HELD and p.held_by == "helm revision 3 (Rollback to 1)"
    assert p.held_at == "2026-12-07T05:03:00Z" and "reconciler resume web" in p.reason

    same_second = deployment(notes={"reconciler.dev/resumed-at": "2026-12-07T05:03:00Z"})
    late = replace(history[2], updated="2026-12-07T05:03:00.734215032Z")  # helm's nanoseconds
    p = verdict(SITE, head(B), view((*history[:2], late), "v1", images=images, d=same_second), 0)
    assert p.action is Action.UPDATE  # resumed in the same second as the change
    resumed = deployment(notes={"reconciler.dev/resumed-at": "2026-12-07T05:10:00Z"})
    p = verdict(SITE, head(B), view(history, "v1", images=images, d=resumed), 0)
    assert p.action is Action.UPDATE
    held = deployment(notes={"reconciler.dev/hold": "freeze", "reconciler.dev/hold-by": "bob"})
    p = verdict(SITE, head(B), view(history, "v1", images=images, d=held), 0)
    assert p.action is Action.HELD and p.held_by == "bob" and "freeze" in p.reason


def test_a_statefulset_of_the_release_is_followed_by_the_rules_of_its_kind() -> None:
    db = Workload("StatefulSet", "apps", "db", (HelmContainer("db", "registry.example/web:v1"),))
    history: tuple[Revision, ...] = (rev(1, "Install complete"), rev(2, "reconciler: main@aaaaaaa"))
    history += (rev(3, "reconciler: main@badc0de (was aaaaaaa)"),)

    def with_db(verdict: WorkloadVerdict) -> ReleaseView:
        base = view(history, BAD)
        observed = ObservedDeployment("apps", "db", (), kind="StatefulSet", verdict=verdict)
        return replace(
            base,
            workloads=(WEB, db),
            deployments={**base.deployments, "StatefulSet/db": observed},
        )

    rolling = with_db(WorkloadVerdict(Rollout.PROGRESSING, "1/3 updated"))
    p = verdict(SITE, head(BAD), rolling, 0)
    assert p.action is Action.IN_SYNC and p.rollout is Rollout.PROGRESSING
    assert "StatefulSet/db 1/3 updated" in p.progress
    stuck = with_db(WorkloadVerdict(Rollout.FAILED, "0/3 ready", "pod db-2: CrashLoopBackOff"))
    p = verdict(SITE, head(BAD), stuck, 0)
    assert p.action is Action.ROLLED_BACK and p.back_to == "2"
    assert "StatefulSet/db: pod db-2: CrashLoopBackOff" in p.reason
