"""sites.toml validation: every error names file, line and site."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.core.config import sites as config
from reconciler.core.errors import ConfigError
from reconciler.serve.triggers.schedule import cron_problem
from reconciler.sync import config_file

GOOD = """\
[defaults]
namespace = "web"
image = "gcr.io/p/{repo}:{sha}"

[service]
schedule = "*/15 * * * *"
jitter = 30

[sites.blog]
repo = "acme/blog"
branch = "main"
container = "app"

[sites.shop]
repo = "Acme/Shop"
namespace = "shop"
deployment = "storefront"
image = "eu.gcr.io/p/shop:{branch}-{short_sha}"
verify = "checks"
paused = true
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        config.parse(text, "sites.toml", schedule_problem=cron_problem)
    return [str(p) for p in exc.value.problems]


def test_good_config_applies_defaults() -> None:
    cfg = config.parse(GOOD)
    blog, shop = cfg.sites
    assert (blog.namespace, blog.deployment, blog.container, blog.branch) == (
        "web",
        "blog",
        "app",
        "main",
    )
    assert blog.image == "gcr.io/p/{repo}:{sha}" and blog.verify == "registry"
    assert (shop.namespace, shop.deployment, shop.container, shop.branch) == (
        "shop",
        "storefront",
        None,
        None,
    )
    assert shop.paused and shop.verify == "checks" and shop.line == 14
    assert cfg.service.schedule == "*/15 * * * *" and cfg.service.jitter == 30
    assert cfg.select(["shop"]) == (shop,)
    with pytest.raises(KeyError):
        cfg.select(["nope"])


def test_digest_pinning_and_required_checks() -> None:
    cfg = config.parse(
        '[defaults]\nimage = "x/{repo}:{sha}"\npin_digest = false\n'
        '[sites.a]\nrepo = "o/a"\n'
        '[sites.b]\nrepo = "o/b"\npin_digest = true\nverify = "checks"\n'
        'required_checks = ["build", "test"]\n'
        '[sites.c]\nrepo = "o/c"\ndeployment = "c"\n'
    )
    a, b, _ = cfg.sites
    assert (a.pin_digest, a.required_checks) == (False, ())
    assert (b.pin_digest, b.required_checks) == (True, ("build", "test"))
    assert config.parse('[sites.a]\nrepo = "o/a"\nimage = "x:{sha}"\n').sites[0].pin_digest


def test_dataclasses_are_frozen() -> None:
    cfg = config.parse(GOOD)
    with pytest.raises(AttributeError):
        cfg.sites[0].repo = "x/y"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[sites.blog]\nrepo = "a/b"\nimage = "x/y:{sha}"\nbrnach = "main"\n',
            'sites.toml:4: site "blog": unknown key "brnach" (did you mean "branch"?)',
        ),
        (
            '[sites.blog]\nrepo = 5\nimage = "x/y:{sha}"\n',
            'sites.toml:2: site "blog": "repo" must be a string, not int',
        ),
        (
            '[sites.blog]\nrepo = "acme"\nimage = "x/y:{sha}"\n',
            'sites.toml:2: site "blog": "repo" must look like "owner/name", not \'acme\'',
        ),
        (
            '[sites.blog]\nimage = "x/y:{sha}"\n',
            'sites.toml:1: site "blog": missing required key "repo"',
        ),
        (
            '[sites.blog]\nrepo = "a/b"\nimage = "x/y:{commit}"\n',
            'sites.toml:3: site "blog": image template has unknown placeholder {commit}',
        ),
        (
            '[sites.blog]\nrepo = "a/b"\nimage = "x/y:latest"\n',
            'sites.toml:3: site "blog": image template must contain {sha} or {short_sha}',
        ),
        (
            '[sites.blog]\nrepo = "a/b"\n',
            'sites.toml:1: site "blog": no "image" template',
        ),
        (
            '[sites.blog]\nrepo = "a/b"\nimage = "x/y:{sha}"\nnamespace = "Web"\n',
            "sites.toml:4: site \"blog\": namespace 'Web' is not a valid Kubernetes name",
        ),
        (
            '[sites.Blog_1]\nrepo = "a/b"\nimage = "x/y:{sha}"\n',
            "sites.toml:1: site \"Blog_1\": deployment 'Blog_1' is not a valid Kubernetes name",
        ),
        (
            '[sites.blog]\nrepo = "a/b"\nimage = "x/y:{sha}"\nbranch = "a..b"\n',
            "sites.toml:4: site \"blog\": 'a..b' is not a valid git branch name",
        ),
        (
            '[sites.blog]\nrepo = "a/b"\nimage = "x/y:{sha}"\npaused = "yes"\n',
            'sites.toml:4: site "blog": "paused" must be true or false',
        ),
        (
            '[sites.blog]\nrepo = "a/b"\nimage = "x/y:{sha}"\nverify = "maybe"\n',
            'sites.toml:4: site "blog": "verify" must be one of',
        ),
        (
            '[service]\nschedule = "every hour"\n[sites.blog]\nrepo = "a/b"\nimage = "x:{sha}"\n',
            "sites.toml:2: \"schedule\" 'every hour' (timezone 'UTC') is not valid",
        ),
        (
            '[defaults]\nimage = "x:{sha}"\nnamespce = "a"\n[sites.blog]\nrepo = "a/b"\n',
            'sites.toml:3: unknown key "namespce" (did you mean "namespace"?)',
        ),
        (
            '[sites.blog]\nrepo = "a/b"\nimage = "x/y:{sha}"\npin_digest = "no"\n',
            'sites.toml:4: site "blog": "pin_digest" must be true or false',
        ),
        (
            '[defaults]\npin_digest = 0\n[sites.blog]\nrepo = "a/b"\nimage = "x/y:{sha}"\n',
            'sites.toml:2: site "blog": "pin_digest" must be true or false',
        ),
        (
            '[sites.blog]\nrepo = "a/b"\nimage = "x/y:{sha}"\nverify = "checks"\n'
            'required_checks = "ci"\n',
            'sites.toml:5: site "blog": "required_checks" must be a list of check names',
        ),
        (
            '[sites.blog]\nrepo = "a/b"\nimage = "x/y:{sha}"\nrequired_checks = ["ci"]\n',
            'sites.toml:4: site "blog": "required_checks" needs verify = "checks"',
        ),
        ('[sites.blog\nrepo = "a/b"\n', "sites.toml:1: invalid TOML"),
        ("", 'sites.toml: no sites: add a table such as [sites.blog] with repo = "owner/name"'),
        ('sites = "blog"\n', 'sites.toml:1: "sites" must be a table'),
    ],
)
def test_each_error_names_file_line_and_site(text: str, expected: str) -> None:
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found


def test_two_sites_on_one_container_are_refused() -> None:
    text = """\
[defaults]
image = "x/{repo}:{sha}"

[sites.blog]
repo = "a/blog"
container = "app"

[sites.blog-preview]
repo = "a/blog"
branch = "preview"
deployment = "blog"
container = "app"

[sites.blog-worker]
repo = "a/worker"
deployment = "blog"
container = "worker"
"""
    found = problems(text)
    assert found == [
        'sites.toml:8: site "blog-preview": targets default/blog like site "blog" (line 4): '
        'the same container "app"'
    ]


def test_a_site_without_container_conflicts_with_any_other_on_that_deployment() -> None:
    text = '[sites.a]\nrepo = "o/a"\nimage = "x:{sha}"\ndeployment = "d"\n'
    text += '[sites.b]\nrepo = "o/b"\nimage = "x:{sha}"\ndeployment = "d"\ncontainer = "c"\n'
    assert "the same Deployment" in problems(text)[0]


def test_all_problems_are_reported_at_once() -> None:
    text = '[sites.a]\nrepo = "bad"\nimage = "x:{sha}"\n[sites.b]\nrepo = "o/b"\nimage = "{x}"\n'
    assert len(problems(text)) >= 2


def test_load_names_the_real_path(tmp_path: Path) -> None:
    path = tmp_path / "my-sites.toml"
    path.write_text('[sites.blog]\nrepo = "a/b"\nimage = "x:{sha}"\ntypo = 1\n')
    with pytest.raises(ConfigError) as exc:
        config_file.load(path)
    assert str(exc.value).startswith(f'{path}:4: site "blog": unknown key')
    with pytest.raises(ConfigError, match="file not found"):
        config_file.load(tmp_path / "missing.toml")


def test_the_example_at_the_repo_root_is_valid() -> None:
    root = Path(__file__).resolve().parents[2] / "sites.toml"
    cfg = config_file.load(root)
    assert cfg.sites
