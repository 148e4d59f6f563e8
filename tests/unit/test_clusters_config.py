"""[clusters.NAME] and a site's `cluster`: named clusters, no credentials in sites.toml, and
errors that name file:line:site."""

from __future__ import annotations

import pytest

from reconciler.core.config import sites as config
from reconciler.core.errors import ConfigError
from reconciler.core.model import HOME_CLUSTER, ClusterRef

SITES = """\
[sites.blog]
repo = "acme/blog"
image = "r/blog:{sha}"

[sites.shop]
repo = "acme/shop"
image = "r/shop:{sha}"
cluster = "home"
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        config.parse(text, "sites.toml")
    return [str(p) for p in exc.value.problems]


def test_sites_name_their_cluster_and_defaults_give_one() -> None:
    text = (
        '[clusters.prod]\nkubeconfig = "/var/run/clusters/prod/kubeconfig"\ncontext = "gke-prod"\n'
        '[clusters.staging]\ncontext = "kind-staging"\n'
        '[defaults]\ncluster = "prod"\n'
        + SITES
        + '[sites.docs]\nrepo = "acme/docs"\nimage = "r/d:{sha}"\ncluster = "staging"\n'
    )
    cfg = config.parse(text)
    prod = ClusterRef("prod", "/var/run/clusters/prod/kubeconfig", "gke-prod")
    assert cfg.clusters == {"prod": prod, "staging": ClusterRef("staging", None, "kind-staging")}
    blog, shop, docs = cfg.sites
    assert blog.cluster == prod and blog.cluster_name == "prod"
    assert shop.cluster is None and shop.cluster_name == HOME_CLUSTER  # "home" overrides defaults
    assert docs.cluster_name == "staging"


def test_without_clusters_every_site_is_in_the_home_cluster() -> None:
    cfg = config.parse(SITES)
    assert cfg.clusters == {} and {s.cluster for s in cfg.sites} == {None}


def test_an_unknown_cluster_names_file_line_and_site() -> None:
    text = '[clusters.prod]\ncontext = "p"\n' + SITES.replace('"home"', '"prd"')
    (message,) = problems(text)
    assert message.startswith('sites.toml:10: site "shop": unknown cluster "prd"')
    assert '"home", "prod"' in message


def test_an_unknown_cluster_in_defaults_names_the_defaults_line() -> None:
    (first, *_) = problems('[defaults]\ncluster = "prod"\n' + SITES.replace('cluster = "home"', ""))
    assert first.startswith('sites.toml:2: site "blog": unknown cluster "prod"')


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ('token = "eyJhbGciOi"', '"token": credentials never go in sites.toml'),
        ('client-key-data = "LS0t"', '"client-key-data": credentials never go in sites.toml'),
        ('certificate-authority-data = "LS0t"', "credentials never go in sites.toml"),
        ('password = "hunter2"', '"password": credentials never go in sites.toml'),
        ('server = "https://1.2.3.4"', "mount a kubeconfig file"),
        (
            'kubeconfig = "apiVersion: v1\\nkind: Config"',
            '"kubeconfig" holds what looks like a credential',
        ),
        ('context = "-----BEGIN CERTIFICATE-----"', '"context" holds what looks like a credential'),
        ('kubeconfig = "prod.yaml"', '"kubeconfig" must be the absolute path of a mounted file'),
        ("", 'cluster "prod" needs "kubeconfig" (a mounted file) or "context"'),
        ('context = "p"\nnamespace = "x"', 'unknown key "namespace"; allowed: kubeconfig, context'),
        ("context = 3", '"context" must be a non-empty string'),
    ],
)
def test_a_cluster_table_holds_a_file_path_and_a_context_never_credentials(
    table: str, needle: str
) -> None:
    text = f"[clusters.prod]\n{table}\n" + SITES.replace('"home"', '"prod"')
    found = problems(text)
    assert any(needle in p and p.startswith("sites.toml:") for p in found), found
    assert not any("unknown cluster" in p for p in found), found  # named, though broken


def test_home_is_reserved_and_names_are_dns_labels() -> None:
    assert any(
        '"home" is the cluster the reconciler runs in' in p
        for p in problems('[clusters.home]\ncontext = "x"\n' + SITES)
    )
    assert any(
        "cluster names are DNS labels" in p
        for p in problems('[clusters.Prod_1]\ncontext = "x"\n' + SITES)
    )


def test_the_same_deployment_in_two_clusters_is_no_conflict() -> None:
    text = (
        '[clusters.prod]\ncontext = "p"\n'
        '[sites.blog-staging]\nrepo = "acme/blog"\nimage = "r/b:{sha}"\ndeployment = "blog"\n'
        '[sites.blog-prod]\nrepo = "acme/blog"\nimage = "r/b:{sha}"\ndeployment = "blog"\n'
        'cluster = "prod"\n'
    )
    assert [s.cluster_name for s in config.parse(text).sites] == ["home", "prod"]
    same = text.replace('cluster = "prod"\n', "")
    assert any("targets default/blog like site" in p for p in problems(same))


def test_a_helm_release_or_a_git_site_may_live_in_another_cluster() -> None:
    text = '[clusters.prod]\ncontext = "p"\n' + SITES.replace(
        'cluster = "home"\n', 'cluster = "prod"\n[sites.shop.helm]\nrelease = "shop"\n'
    )
    shop = config.parse(text).site("shop")
    assert shop is not None and shop.delivery == "helm" and shop.cluster_name == "prod"
    text = (
        '[clusters.prod]\ncontext = "p"\n'
        '[defaults]\nimage = "gcr.io/p/{repo}:{sha}"\n'
        '[defaults.git]\nrepo = "acme/deploy"\nauthor = "Deploy Bot <deploy@acme.example>"\n'
        '[sites.shop]\nrepo = "acme/shop"\ncontainer = "app"\ncluster = "prod"\n'
        '[sites.shop.git]\nfile = "apps/shop/kustomization.yaml"\nkustomize_image = "shop"\n'
    )
    shop = config.parse(text).site("shop")
    assert shop is not None and shop.delivery == "git" and shop.cluster_name == "prod"
