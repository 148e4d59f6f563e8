"""[sites.NAME.git] and [defaults.git]: validated at load, every problem naming file:line:site."""

from __future__ import annotations

import pytest

from reconciler.core.config import sites as config
from reconciler.core.errors import ConfigError
from reconciler.core.model import GitSpec

BASE = """\
[defaults]
image = "gcr.io/p/{repo}:{sha}"

[defaults.git]
repo = "acme/deploy"
author = "Deploy Bot <deploy@acme.example>"

[sites.shop]
repo = "acme/shop"
container = "app"

[sites.shop.git]
"""


def parse(git: str, base: str = BASE) -> GitSpec:
    site = config.parse(base + git).sites[0]
    assert site.git is not None
    return site.git


def problems(git: str, base: str = BASE) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        config.parse(base + git, "sites.toml")
    return [str(p) for p in exc.value.problems]


def test_a_kustomize_site_inherits_repo_and_author_from_defaults() -> None:
    spec = parse('file = "apps/shop/kustomization.yaml"\nkustomize_image = "shop"\n')
    assert spec == GitSpec(
        repo="acme/deploy",
        file="apps/shop/kustomization.yaml",
        write="kustomize",
        branch="main",
        mode="commit",
        kustomize_image="shop",
        author=("Deploy Bot", "deploy@acme.example"),
        committer=("Deploy Bot", "deploy@acme.example"),
    )


def test_values_and_manifest_targets_and_pr_mode() -> None:
    values = parse(
        'repo = "acme/charts"\nbranch = "prod"\nfile = "shop/values.yaml"\nmode = "pr"\n'
        'values_tag = "image.tag"\nvalues_repository = "image.repository"\n'
        'committer = "CI <ci@acme.example>"\n'
    )
    assert (values.repo, values.branch, values.mode, values.write) == (
        "acme/charts",
        "prod",
        "pr",
        "values",
    )
    assert (values.values_tag, values.values_repository, values.values_digest) == (
        "image.tag",
        "image.repository",
        None,
    )
    assert values.committer == ("CI", "ci@acme.example")
    manifest = parse('file = "shop.yaml"\nmanifest = "Deployment/shop"\n')
    assert (manifest.manifest_kind, manifest.manifest_name, manifest.container) == (
        "Deployment",
        "shop",
        "app",  # the site's container
    )


def test_sites_without_a_git_table_are_delivered_to_the_cluster() -> None:
    cfg = config.parse(BASE.replace("\n[sites.shop.git]\n", "\n"))
    assert cfg.sites[0].git is None


@pytest.mark.parametrize(
    ("git", "expected"),
    [
        ('kustomize_image = "shop"\n', 'sites.toml:12: site "shop": missing required key "file"'),
        ('file = "a.yaml"\n', "say how the image is written"),
        (
            'file = "a.yaml"\nkustomize_image = "shop"\nmanifest = "Deployment/x"\n',
            "give one of kustomize_image, values_tag, manifest",
        ),
        ('file = "/etc/a.yaml"\nkustomize_image = "s"\n', "is not a path inside the repository"),
        ('file = "a.yaml"\nkustomize_image = "s"\nmode = "push"\n', '"mode" must be one of'),
        ('file = "a.yaml"\nvalues_tag = "image..tag"\n', "\"values_tag\" 'image..tag' is not"),
        ('file = "a.yaml"\nkustomize_image = "s"\nauthor = "bot"\n', "\"author\" 'bot' is not"),
        ('file = "a.yaml"\nkustomize_image = "s"\nbranch = "a..b"\n', "not a valid git branch"),
        ('file = "a.yaml"\nkustomize_image = "s"\nfiel = "x"\n', 'did you mean "file"'),
        ('file = "a.yaml"\nvalues_tag = "t"\ndigest = true\n', '"digest" goes with kustomize'),
    ],
)
def test_bad_git_tables_name_the_line_and_the_site(git: str, expected: str) -> None:
    found = problems(git)
    assert any(expected in p for p in found), found
    assert all('site "shop"' in p and p.startswith("sites.toml:") for p in found), found


def test_a_manifest_needs_a_container() -> None:
    base = BASE.replace('container = "app"\n', "")
    found = problems('file = "a.yaml"\nmanifest = "Deployment/shop"\n', base)
    assert any('name the container: container = "NAME"' in p for p in found), found


def test_bad_defaults_are_reported_once_at_their_line() -> None:
    base = BASE.replace('repo = "acme/deploy"', 'repo = "not a repo"').replace(
        "[sites.shop]",
        '[sites.blog]\nrepo = "acme/blog"\n[sites.blog.git]\nfile = "b.yaml"\n'
        'kustomize_image = "b"\n\n[sites.shop]',
    )
    found = problems('file = "a.yaml"\nkustomize_image = "shop"\n', base)
    repo_problems = [p for p in found if '"repo"' in p]
    assert len(repo_problems) == 1 and repo_problems[0].startswith("sites.toml:5:"), found
