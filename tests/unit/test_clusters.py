"""Sites in other clusters with in-memory ports: each cluster observed and patched on its own,
one that fails fails its sites only (naming it), ports built lazily and rebuilt or dropped."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from reconciler.core.config import sites as config
from reconciler.core.errors import ErrorKind, KubernetesError
from reconciler.core.model import Action, ClusterRef, Container, ObservedDeployment, SyncRequest
from reconciler.sync.clusters import Clusters
from reconciler.sync.engine import Engine
from tests.fakes import FakeCluster, FakeHeads, FakeVerifier

SITES = """\
[clusters.prod]
kubeconfig = "/var/run/clusters/prod/kubeconfig"

[clusters.edge]
context = "edge"

[defaults]
namespace = "web"
image = "gcr.io/p/blog:{sha}"
verify = "none"

[sites.blog]
repo = "acme/blog"

[sites.blog-prod]
repo = "acme/blog"
deployment = "blog"
cluster = "prod"

[sites.blog-edge]
repo = "acme/blog"
deployment = "blog"
cluster = "edge"
"""
SHA = "1" * 40


def cluster() -> FakeCluster:
    c = FakeCluster()
    c.add(
        ObservedDeployment(
            "web", "blog", (Container("app", "gcr.io/p/blog:old"),), resource_version="1"
        )
    )
    return c


class Closing(FakeCluster):
    closed: int = 0

    def close(self) -> None:
        self.closed += 1


class Connector:
    def __init__(self, **ports: FakeCluster | Exception) -> None:
        self.ports = ports
        self.calls: list[str] = []

    def __call__(self, ref: ClusterRef) -> FakeCluster:
        self.calls.append(ref.name)
        port = self.ports[ref.name]
        if isinstance(port, Exception):
            raise port
        return port


def engine(
    connect: Connector, home: FakeCluster, stamp: Callable[[ClusterRef], object] | None = None
) -> Engine:
    heads = FakeHeads()
    heads.set("acme/blog", None, SHA)
    clusters = Clusters(home, connect, stamp or (lambda _ref: None))
    return Engine(heads=heads, cluster=home, verifier=FakeVerifier(), clusters=clusters)


def test_each_site_is_patched_in_its_own_cluster() -> None:
    home, prod, edge = cluster(), cluster(), cluster()
    e = engine(Connector(prod=prod, edge=edge), home)
    report = e.run(config.parse(SITES), SyncRequest())
    assert [r.plan.action for r in report.results] == [Action.UPDATE] * 3
    for c in (home, prod, edge):
        assert [change.image for change, _ in c.applied] == [f"gcr.io/p/blog:{SHA}"]
        assert c.settled == 1  # each cluster's Events written before the run ends
    assert [r.as_dict()["cluster"] for r in report.results] == ["home", "prod", "edge"]


def test_a_cluster_that_cannot_be_built_or_reached_fails_only_its_sites() -> None:
    home, prod = cluster(), cluster()
    unusable = KubernetesError("no usable Kubernetes credentials", kind=ErrorKind.KUBE_CONFIG)
    e = engine(Connector(prod=prod, edge=unusable), home)
    prod.broken_namespaces["web"] = "cannot list deployments in namespace web: unreachable"
    report = e.run(config.parse(SITES), SyncRequest())
    blog, blog_prod, blog_edge = report.results
    assert blog.applied and blog.plan.action is Action.UPDATE
    assert blog_prod.plan.action is Action.ERROR
    assert blog_prod.plan.reason.startswith('cluster "prod": cannot list deployments')
    assert blog_edge.plan.action is Action.ERROR
    assert blog_edge.plan.error_kind is ErrorKind.KUBE_CONFIG
    assert blog_edge.plan.reason == 'cluster "edge": no usable Kubernetes credentials'
    assert home.applied and not prod.applied


def test_ports_are_built_once_rebuilt_when_credentials_change_and_dropped_on_reload() -> None:
    home, prod, edge = cluster(), cluster(), cluster()
    connect = Connector(prod=prod, edge=edge)
    stamps = {"prod": 1, "edge": 1}
    e = engine(connect, home, stamp=lambda ref: stamps[ref.name])
    cfg = config.parse(SITES)
    e.plan(cfg)
    e.plan(cfg)
    assert sorted(connect.calls) == ["edge", "prod"]  # lazily, once each
    stamps["prod"] = 2  # its kubeconfig file was replaced (a rotated token)
    e.plan(cfg)
    assert sorted(connect.calls) == ["edge", "prod", "prod"]
    no_edge = config.parse(SITES[: SITES.index("[sites.blog-edge]")])
    e.plan(no_edge)  # the reload dropped the site in "edge": its port goes
    e.plan(cfg)
    assert sorted(connect.calls) == ["edge", "edge", "prod", "prod"]


def test_a_write_error_in_a_named_cluster_names_it() -> None:
    home, prod = cluster(), cluster()
    prod.fail["blog"] = "the API server rejected the change"
    e = engine(Connector(prod=prod, edge=cluster()), home)
    report = e.run(config.parse(SITES), SyncRequest())
    failed = report.results[1].plan
    assert failed.action is Action.ERROR and failed.error_kind is ErrorKind.INVALID
    assert failed.reason.startswith('cluster "prod": ')


def test_following_reads_each_site_in_its_own_cluster() -> None:
    home, prod = cluster(), cluster()
    prod.add(
        replace(
            prod.deployments[("web", "blog")],
            containers=(Container("app", "gcr.io/p/blog:prod-only"),),
        )
    )
    e = engine(Connector(prod=prod, edge=cluster()), home)
    cfg = config.parse(SITES)
    home_result, prod_result = e.follow_all(cfg.select(["blog", "blog-prod"]), act=False)
    assert home_result.plan.current_image == "gcr.io/p/blog:old"
    assert prod_result.plan.current_image == "gcr.io/p/blog:prod-only"


def test_the_text_table_names_the_cluster_of_a_site_outside_home() -> None:
    from reconciler.cli.output import report_text

    home, prod, edge = cluster(), cluster(), cluster()
    report = engine(Connector(prod=prod, edge=edge), home).run(
        config.parse(SITES), SyncRequest(plan_only=True)
    )
    rows = report_text(report).splitlines()[1:4]
    assert [row.split()[3] for row in rows] == ["web/blog", "prod:web/blog", "edge:web/blog"]


def test_a_port_replaced_or_dropped_is_closed() -> None:
    home, first, second = cluster(), Closing(), Closing()
    built = iter([first, second])
    stamps = {"prod": 1}

    def connect(ref: ClusterRef) -> FakeCluster:
        return next(built)

    clusters = Clusters(home, connect, lambda ref: stamps.get(ref.name))
    prod = ClusterRef("prod", "/k")
    clusters.get(prod)
    stamps["prod"] = 2  # a rotated token
    clusters.get(prod)
    assert (first.closed, second.closed) == (1, 0)
    clusters.keep([])  # the reload dropped it
    assert second.closed == 1
