"""Sites in other clusters (#20): two local clusters in one run (the session's, "home", and a
second one, "prod", each with its controllers and kwok nodes), the CLI and `serve`.

The reconciler reaches "prod" only through the identity k8s/remote ships (a ServiceAccount, Role
"reconciler" in the sites' namespace, the admission policy) and a kubeconfig with a bound token,
as docs/clusters.md tells an operator to set it up. Nothing here sleeps or times anything.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from reconciler.cli.main import main
from testkit.controlplane import (
    REPO_ROOT,
    ControlPlane,
    LocalCluster,
    crashloop_sha,
    find_binaries,
    find_cluster_binaries,
    kubeconfig_for_token,
    serviceaccount_token,
)
from testkit.deployments import create_deployment, get_deployment
from testkit.github import GitHubStandIn, random_sha
from testkit.github_fixtures import TOKEN
from testkit.helm import Helm
from testkit.serve_process import ServeProcess
from testkit.serve_world import QUIET_SCHEDULE, TRIGGER
from testkit.wait import wait_until
from tests.integration.test_status_page import browser, page_url, text_of

pytestmark = pytest.mark.cluster
__all__ = ["browser"]
WAIT = ("--wait", "--wait-timeout", "180")
CHART = REPO_ROOT / "testkit" / "charts" / "web"


@pytest.fixture(scope="module")
def prod() -> Iterator[LocalCluster]:
    """A second local cluster, next to the session's: its own ports, work dir and processes."""
    with LocalCluster(bin_dir=find_binaries(), cluster_bin_dir=find_cluster_binaries()) as c:
        c.kubectl("apply", "-k", str(REPO_ROOT / "k8s" / "remote"))
        c.kubectl("apply", "-f", str(REPO_ROOT / "k8s" / "admission-policy.yaml"))
        yield c


def grant(cluster: LocalCluster, namespace: str) -> None:
    """Role "reconciler" and its RoleBinding in `namespace`: k8s/overlays/extra-namespace."""
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl("apply", "-n", namespace, "-f", str(REPO_ROOT / "k8s" / "rbac" / "role.yaml"))
    cluster.kubectl(
        "create",
        "rolebinding",
        "reconciler",
        "-n",
        namespace,
        "--role=reconciler",
        "--serviceaccount=reconciler:reconciler",
    )


def remote_kubeconfig(cluster: ControlPlane, path: Path) -> Path:
    """What `kubectl create token reconciler -n reconciler` and a kubeconfig around it give."""
    token = serviceaccount_token(cluster, "reconciler", "reconciler")
    return kubeconfig_for_token(cluster, token, path)


class World:
    """Site "blog" in the home cluster and "blog-prod" (the same namespace and Deployment
    names) in "prod"; the CLI as an operator runs it, with the home cluster's kubeconfig."""

    def __init__(
        self, *, home: LocalCluster, ns: str, prod: LocalCluster, github: GitHubStandIn, tmp: Path
    ) -> None:
        self.home, self.ns, self.prod, self.github, self.tmp = home, ns, prod, github, tmp
        self.home_api, self.prod_api = home.api_client(), prod.api_client()
        grant(prod, ns)
        self.prod_kubeconfig = remote_kubeconfig(prod, tmp / "prod.kubeconfig")
        github.add_repo("acme/blog", {"main": random_sha()})
        create_deployment(self.home_api, ns, "blog", "gcr.io/p/blog:before")
        create_deployment(self.prod_api, ns, "blog", "gcr.io/p/blog:before")
        self.sites = tmp / "sites.toml"
        self.clusters: dict[str, Path] = {"prod": self.prod_kubeconfig}
        self.write()
        self.env = {
            "GITHUB_API_URL": github.url,
            "GITHUB_TOKEN": TOKEN,
            "KUBECONFIG": str(home.kubeconfig_path),
            "USER": "alice",
        }

    def write(self, extra: str = "") -> None:
        tables = "".join(
            f'[clusters.{name}]\nkubeconfig = "{path}"\n\n' for name, path in self.clusters.items()
        )
        self.sites.write_text(
            QUIET_SCHEDULE
            + tables
            + f'[defaults]\nnamespace = "{self.ns}"\nimage = "gcr.io/p/blog:{{sha}}"\n'
            'verify = "none"\nbranch = "main"\ncontainer = "app"\nrollout_timeout = 1\n\n'
            + '[sites.blog]\nrepo = "acme/blog"\nbranch = "main"\n\n'
            '[sites.blog-prod]\nrepo = "acme/blog"\nbranch = "main"\ndeployment = "blog"\n'
            'cluster = "prod"\n' + extra
        )

    def head(self, sha: str | None = None) -> str:
        sha = sha or random_sha()
        self.github.set_branch("acme/blog", "main", sha)
        return sha

    def cli(self, *argv: str) -> tuple[int, Any]:
        out, err = io.StringIO(), io.StringIO()
        code = main(
            [*argv, "--config", str(self.sites), "--output", "json"],
            env=self.env,
            stdout=out,
            stderr=err,
        )
        text = out.getvalue()
        return code, (json.loads(text) if text.strip() else err.getvalue())

    def sync(self, *args: str) -> tuple[int, dict[str, dict[str, Any]]]:
        code, results = self.cli("sync", *args)
        assert isinstance(results, list), results
        return code, {r["site"]: r for r in results}

    def image(self, api: Any) -> str:
        d = get_deployment(api, self.ns, "blog")
        return str(d["spec"]["template"]["spec"]["containers"][0]["image"])

    def annotations(self, api: Any) -> dict[str, str]:
        return dict(get_deployment(api, self.ns, "blog")["metadata"].get("annotations") or {})


@pytest.fixture
def world(
    local_cluster: LocalCluster,
    cluster_namespace: str,
    prod: LocalCluster,
    github: GitHubStandIn,
    tmp_path: Path,
) -> Iterator[World]:
    w = World(home=local_cluster, ns=cluster_namespace, prod=prod, github=github, tmp=tmp_path)
    yield w
    prod.kubectl("delete", "namespace", cluster_namespace, "--wait=false", check=False)
    w.home_api.close()  # type: ignore[no-untyped-call]
    w.prod_api.close()  # type: ignore[no-untyped-call]


def test_sites_in_two_clusters_sync_and_roll_out_each_in_its_own(world: World) -> None:
    sha = world.head()
    code, results = world.sync(*WAIT)
    assert code == 0, json.dumps(results, indent=1)
    for name in ("blog", "blog-prod"):
        assert results[name]["applied"] and results[name]["rollout"] == "available", results
    assert (results["blog"]["cluster"], results["blog-prod"]["cluster"]) == ("home", "prod")
    assert world.image(world.home_api) == world.image(world.prod_api) == f"gcr.io/p/blog:{sha}"

    # hold, history and the notifier's memory go through the site's own cluster
    code, held = world.cli("hold", "blog-prod", "--reason", "launch")
    assert code == 0, held
    assert "reconciler.dev/hold" in " ".join(world.annotations(world.prod_api))
    assert not any("hold" in k for k in world.annotations(world.home_api))
    code, deploys = world.cli("history", "blog-prod")
    assert code == 0 and deploys[0]["sha"] == sha, deploys
    world.head()
    code, results = world.sync()
    assert results["blog"]["applied"] and not results["blog-prod"]["applied"], results
    assert results["blog-prod"]["action"] == "held", results["blog-prod"]


def test_a_failed_rollout_in_the_other_cluster_is_rolled_back_there(world: World) -> None:
    good = world.head()
    world.sync(*WAIT)
    bad = world.head(crashloop_sha())
    code, results = world.sync("--site", "blog-prod", *WAIT)
    assert code == 1 and results["blog-prod"]["rollout"] == "failed", results
    assert world.image(world.prod_api) == f"gcr.io/p/blog:{good}"
    assert world.annotations(world.prod_api).get("reconciler.dev/failed-sha") == bad
    assert world.image(world.home_api) == f"gcr.io/p/blog:{good}"  # untouched


def test_production_in_the_other_cluster_promotes_what_staging_ran_at_home(world: World) -> None:
    """staging (home) -> production (prod): the follower site is planned against its source's
    Deployment in the home cluster and deploys in its own."""
    text = world.sites.read_text()
    world.sites.write_text(
        text.replace(
            '[sites.blog-prod]\nrepo = "acme/blog"\nbranch = "main"\n',
            '[sites.blog-prod]\nrepo = "acme/blog"\npromote_from = "blog"\n',
        )
    )
    before = world.image(world.prod_api)
    sha = world.head()
    code, results = world.sync("--site", "blog", *WAIT)
    assert code == 0 and results["blog"]["rollout"] == "available", results
    _, results = world.sync()  # following blog to available recorded when: it promotes
    promoted = results["blog-prod"]
    assert promoted["applied"] and promoted["sha"] == sha, promoted
    assert promoted["cluster"] == "prod"
    assert world.image(world.prod_api) == f"gcr.io/p/blog:{sha}" != before


def test_a_helm_release_in_the_other_cluster_is_upgraded_and_rolled_back_there(
    world: World, helm: Path, tmp_path: Path
) -> None:
    """A site delivered by a Helm release in "prod": helm runs with prod's kubeconfig (the
    remote identity, with Role reconciler-helm beside Role reconciler as
    k8s/overlays/helm-namespace grants it), the release's Deployment is followed there, a
    crash-looping commit is undone by `helm rollback` there; the home cluster is untouched."""
    ns = world.ns
    world.prod.kubectl("apply", "-n", ns, "-f", str(REPO_ROOT / "k8s" / "rbac-helm" / "role.yaml"))
    world.prod.kubectl(
        "create",
        "rolebinding",
        "reconciler-helm",
        "-n",
        ns,
        "--role=reconciler-helm",
        "--serviceaccount=reconciler:reconciler",
    )
    person = Helm(helm, home=tmp_path / "person", kubeconfig=world.prod.kubeconfig_path)
    person.ok("install", "web", CHART, "-n", ns, "--set", "image.tag=v1")
    world.env["RECONCILER_HELM"] = str(helm)
    world.write(
        '\n[sites.web-prod]\nrepo = "acme/blog"\ncluster = "prod"\n'
        'image = "registry.example/web:{sha}"\n'
        '[sites.web-prod.helm]\nrelease = "web"\nvalues = { tag = "image.tag" }\n'
    )

    def revisions() -> list[tuple[int, str]]:
        rows = json.loads(person.ok("history", "web", "-n", ns, "-o", "json"))
        return [(r["revision"], r["description"]) for r in rows]

    good = world.head()
    code, results = world.sync("--site", "web-prod", *WAIT)
    done = results["web-prod"]
    assert code == 0 and done["applied"] and done["rollout"] == "available", done
    assert done["cluster"] == "prod"
    assert revisions()[-1] == (2, f"reconciler: main@{good[:7]}")
    assert world.image(world.prod_api) == "gcr.io/p/blog:before"  # another Deployment there
    web = get_deployment(world.prod_api, ns, "web")["spec"]["template"]["spec"]["containers"]
    assert next(c["image"] for c in web if c["name"] == "app") == f"registry.example/web:{good}"
    with pytest.raises(kubernetes.client.ApiException):  # nothing of it in the home cluster
        get_deployment(world.home_api, ns, "web")
    code, deploys = world.cli("history", "web-prod")
    assert code == 0 and deploys[0]["sha"].startswith(good[:7]), deploys

    bad = world.head(crashloop_sha())
    code, results = world.sync("--site", "web-prod", *WAIT)
    back = results["web-prod"]
    assert code == 1 and back["action"] == "rolled-back" and back["failed_sha"] == bad, back
    assert revisions()[-1][1].startswith(f"reconciler: rollback of main@{bad} to revision 2: ")


def test_an_unreachable_cluster_fails_only_its_sites_naming_it(
    world: World, cluster_namespace: str, tmp_path: Path
) -> None:
    """A third cluster ("edge", an API server alone) works, then stops between two syncs."""
    with ControlPlane(bin_dir=find_binaries()) as edge:
        kubeconfig = _edge_with_blog(edge, cluster_namespace, tmp_path)
        world.clusters["edge"] = kubeconfig
        world.write(
            '\n[sites.blog-edge]\nrepo = "acme/blog"\ndeployment = "blog"\ncluster = "edge"\n'
        )
        first = world.head()
        code, results = world.sync()
        assert code == 0 and all(r["applied"] for r in results.values()), results
    second = world.head()  # "edge" is gone
    code, results = world.sync()
    assert code == 1, results
    edge_result = results["blog-edge"]
    assert edge_result["action"] == "error" and edge_result["error_kind"] == "kube_unreachable"
    assert edge_result["reason"].startswith('cluster "edge": '), edge_result
    assert edge_result["cluster"] == "edge"
    for name in ("blog", "blog-prod"):
        assert results[name]["applied"] and results[name]["sha"] == second, results
    assert first != second


def test_a_forbidden_or_unusable_identity_fails_only_its_sites(
    world: World, prod: LocalCluster, tmp_path: Path
) -> None:
    # the shipped identity in a namespace it was not granted: RBAC refuses, the reason says where
    prod.kubectl("create", "namespace", f"{world.ns}-x")
    create_deployment(world.prod_api, f"{world.ns}-x", "blog", "gcr.io/p/blog:before")
    world.clusters["broken"] = tmp_path / "no-such.kubeconfig"
    # a token the API server does not accept (expired, revoked): 401
    world.clusters["stale"] = kubeconfig_for_token(prod, "not-a-token", tmp_path / "stale.kc")
    world.write(
        f'\n[sites.shop-prod]\nrepo = "acme/blog"\nnamespace = "{world.ns}-x"\n'
        'deployment = "blog"\ncluster = "prod"\n'
        '\n[sites.blog-broken]\nrepo = "acme/blog"\ndeployment = "blog"\ncluster = "broken"\n'
        '\n[sites.blog-stale]\nrepo = "acme/blog"\ndeployment = "blog"\ncluster = "stale"\n'
    )
    sha = world.head()
    code, results = world.sync()
    assert code == 1
    refused = results["shop-prod"]
    assert refused["error_kind"] == "forbidden", refused
    assert refused["reason"].startswith('cluster "prod": ') and "RBAC" in refused["reason"]
    broken = results["blog-broken"]
    assert broken["error_kind"] == "kube_config", broken
    assert broken["reason"].startswith('cluster "broken": ') and "no-such.kubeconfig" in str(
        broken["reason"]
    )
    stale = results["blog-stale"]
    assert stale["error_kind"] == "kube_auth", stale
    assert stale["reason"].startswith('cluster "stale": ') and "401" in stale["reason"]
    for name in ("blog", "blog-prod"):
        assert results[name]["applied"] and results[name]["sha"] == sha, results
    prod.kubectl("delete", "namespace", f"{world.ns}-x", "--wait=false", check=False)


def test_the_admission_policy_holds_in_the_other_cluster(world: World) -> None:
    """The remote identity may change images, not the rest of the pod (k8s/admission-policy)."""
    token = serviceaccount_token(world.prod, "reconciler", "reconciler")
    with kubernetes.client.ApiClient(_token_config(world.prod, token)) as api:
        apps = kubernetes.client.AppsV1Api(api)
        with pytest.raises(kubernetes.client.ApiException) as refused:
            apps.patch_namespaced_deployment("blog", world.ns, {"spec": {"replicas": 5}})
    assert refused.value.status == 403 and "may not change" in str(refused.value.body)


def _token_config(cluster: ControlPlane, token: str) -> Any:
    cfg = kubernetes.client.Configuration()
    cfg.host = cluster.host
    cfg.ssl_ca_cert = str(cluster.ca_path)
    cfg.api_key = {"authorization": f"Bearer {token}"}
    return cfg


@pytest.mark.browser
def test_serve_with_two_clusters_reloads_follows_and_shows_the_cluster(
    world: World, browser: Any
) -> None:
    text = world.sites.read_text()
    home_only = text[: text.index("[sites.blog-prod]")]
    world.sites.write_text(home_only)
    env = {
        **world.env,
        "RECONCILER_TRIGGER_TOKEN": TRIGGER,
        "POD_NAMESPACE": world.ns,
        "POD_NAME": "reconciler-test-0",
    }
    with ServeProcess(world.sites, env, world.tmp / "serve.log").start() as served:
        served.wait_for(lambda: served.request("GET", "/status")[1]["last_sync"], what="startup")
        # the reload adds the cluster and its site
        world.write()
        sha = world.head()
        status, body = served.request("POST", "/sync", TRIGGER)
        assert status in {200, 202}, body

        def both_run(want: str) -> bool:
            return world.image(world.home_api) == world.image(world.prod_api) == want

        wait_until(lambda: both_run(f"gcr.io/p/blog:{sha}"), "both clusters run the head", 60)
        wait_until(lambda: _synced(served, sha), "the status shows the sync", 30)
        _, status_body = served.request("GET", "/status")
        by_site = {s["site"]: s for s in status_body["sites"]}
        assert (by_site["blog"]["cluster"], by_site["blog-prod"]["cluster"]) == ("home", "prod")
        _, page = served.request("GET", "/")
        assert '<span class="cluster" title="cluster">prod</span>' in page
        browser.get(page_url(served))  # what a person sees: each row's cluster
        assert text_of(browser, 'tr[data-site="blog-prod"] .cluster') == "prod"
        assert text_of(browser, 'tr[data-site="blog"] .cluster') == "home"
        browser.save_screenshot(str(world.tmp / "clusters.png"))
        shutil.copy(world.tmp / "clusters.png", "/tmp/reconciler-clusters.png")
        _, metrics = served.request("GET", "/metrics")
        assert 'cluster="prod"' in metrics and 'site="blog-prod"' in metrics
        # prod's Deployments are watched there too: its cache listed the namespace and heard
        # the sync's patch, so a steady sync reads prod from memory
        wait_until(
            lambda: (
                (_watch_count(served, "lists") or 0) >= 1
                and (_watch_count(served, "events") or 0) >= 1
            ),
            "prod's watch-fed cache to list the namespace and hear the patch",
            60,
        )

        # the follower rolls back a failed rollout in the other cluster, through it
        bad = world.head(crashloop_sha())
        served.request("POST", "/sync/blog-prod", TRIGGER)
        wait_until(
            lambda: world.annotations(world.prod_api).get("reconciler.dev/failed-sha") == bad,
            "the follower rolls blog-prod back",
            120,
        )
        assert world.image(world.prod_api) == f"gcr.io/p/blog:{sha}"
        # the Lease stays in the home cluster
        coord = kubernetes.client.CoordinationV1Api
        assert coord(world.home_api).read_namespaced_lease("reconciler", world.ns)
        with pytest.raises(kubernetes.client.ApiException):
            coord(world.prod_api).read_namespaced_lease("reconciler", world.ns)

        # a reload that drops the cluster: its site is gone, the home one still syncs
        world.sites.write_text(home_only)
        last = world.head()
        served.request("POST", "/sync", TRIGGER)
        wait_until(lambda: world.image(world.home_api) == f"gcr.io/p/blog:{last}", "home", 60)
        wait_until(lambda: "blog-prod" not in _sites(served), "blog-prod leaves the status", 30)
        assert world.image(world.prod_api) == f"gcr.io/p/blog:{sha}"
        wait_until(  # the next sync drops the cluster's port, and its cache stops
            lambda: _watch_count(served, "lists") is None, "prod's cache to stop", 60
        )


def test_serve_never_answers_from_memory_for_a_cluster_that_is_gone(
    world: World, cluster_namespace: str, tmp_path: Path
) -> None:
    """serve watches "edge" (an API server alone) like any named cluster; once it stops, a sync
    with nothing to deploy fails edge's site naming the cluster (its cache's last word is not
    taken for the truth), and the home cluster's site is in sync."""
    with ControlPlane(bin_dir=find_binaries()) as edge:
        kubeconfig = _edge_with_blog(edge, cluster_namespace, tmp_path)
        world.clusters = {"edge": kubeconfig}
        world.write()
        world.sites.write_text(
            world.sites.read_text().replace('cluster = "prod"', 'cluster = "edge"')
        )
        env = {**world.env, "RECONCILER_TRIGGER_TOKEN": TRIGGER, "POD_NAMESPACE": world.ns}
        with ServeProcess(world.sites, env, world.tmp / "serve.log").start() as served:
            first = world.head()
            served.request("POST", "/sync", TRIGGER)
            wait_until(
                lambda: _sites(served).get("blog-prod", {}).get("running_sha") == first,
                "edge's site to run the head",
                60,
            )
            wait_until(
                lambda: (_watch_count(served, "lists", "edge") or 0) >= 1,
                "edge's cache to list the namespace",
                60,
            )
            edge.stop()  # the head stays: from memory, edge's site would look in sync
            status, body = served.request("POST", "/sync", TRIGGER)
            assert status == 502 and not body["ok"], body  # a site failed
            by_site = {r["site"]: r for r in body["results"]}
            gone = by_site["blog-prod"]
            assert gone["action"] == "error" and gone["reason"].startswith('cluster "edge": '), gone
            assert by_site["blog"]["action"] == "in-sync", by_site


def _edge_with_blog(edge: ControlPlane, namespace: str, tmp: Path) -> Path:
    """Deployment "blog" in `namespace` of a third cluster; a kubeconfig for it that outlives
    the cluster's work dir."""
    with edge.api_client() as api:
        kubernetes.client.CoreV1Api(api).create_namespace(
            kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=namespace))
        )
        create_deployment(api, namespace, "blog", "gcr.io/p/blog:before")
    kubeconfig = tmp / "edge.kubeconfig"
    kubeconfig.write_bytes(edge.kubeconfig_path.read_bytes())
    return kubeconfig


def _watch_count(served: ServeProcess, count: str, cluster: str = "prod") -> float | None:
    """reconciler_cluster_watch_cache_total{cluster=...,count=...} (None: no such series)."""
    _, metrics = served.request("GET", "/metrics")
    series = f'reconciler_cluster_watch_cache_total{{cluster="{cluster}",count="{count}"}} '
    line = next((m for m in metrics.splitlines() if m.startswith(series)), None)
    return float(line.split()[-1]) if line else None


def _sites(served: ServeProcess) -> dict[str, Any]:
    return {s["site"]: s for s in served.request("GET", "/status")[1]["sites"]}


def _synced(served: ServeProcess, sha: str) -> bool:
    sites = _sites(served)
    return all(sites.get(n, {}).get("running_sha") == sha for n in ("blog", "blog-prod"))
