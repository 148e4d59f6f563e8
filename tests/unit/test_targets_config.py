"""[[sites.NAME.targets]]: several workloads per site, of every kind; the single form
(deployment/container) means one Deployment target; every error names file:line:site."""

from __future__ import annotations

import pytest

from reconciler.core.config import sites as config
from reconciler.core.errors import ConfigError
from reconciler.core.model import CRONJOB, DEPLOYMENT, STATEFULSET, Site, Target

SHOP = """\
[defaults]
namespace = "shop"

[sites.shop]
repo = "acme/shop"
image = "gcr.io/p/shop:{sha}"

[[sites.shop.targets]]
name = "web"
containers = ["app"]
init_containers = ["migrate"]

[[sites.shop.targets]]
name = "worker"
containers = ["worker"]
images = { worker = "gcr.io/p/shop-worker:{sha}" }

[[sites.shop.targets]]
kind = "CronJob"
name = "nightly"

[[sites.shop.targets]]
kind = "StatefulSet"
name = "search"
containers = ["index"]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        config.parse(text, "sites.toml")
    return [str(p) for p in exc.value.problems]


def test_targets_are_read_in_order_with_their_lines() -> None:
    (site,) = config.parse(SHOP).sites
    assert site.targets == (
        Target("web", DEPLOYMENT, ("app",), ("migrate",)),
        Target("worker", DEPLOYMENT, ("worker",), images={"worker": "gcr.io/p/shop-worker:{sha}"}),
        Target("nightly", CRONJOB),
        Target("search", STATEFULSET, ("index",)),
    )
    assert [t.line for t in site.targets] == [8, 13, 18, 22]
    assert site.targets[0].names == ("app", "migrate")
    assert site.targets[1].image_for("worker", site.image) == "gcr.io/p/shop-worker:{sha}"
    assert site.targets[0].image_for("app", site.image) == "gcr.io/p/shop:{sha}"
    # the callers that mean "the one Deployment" see the first target
    assert (site.deployment, site.container, site.single) == ("web", "app", False)


def test_the_single_form_is_one_deployment_target() -> None:
    text = '[sites.blog]\nrepo = "a/blog"\nimage = "x/b:{sha}"\ncontainer = "app"\n'
    (site,) = config.parse(text).sites
    assert site.targets == (Target("blog", DEPLOYMENT, ("app",), line=1),)
    assert site.single
    bare = Site("b", "a/b", None, "default", "web", None, "x:{sha}")
    assert bare.targets == (Target("web"),) and bare.targets[0].names == ()


def test_inline_targets_read_alike() -> None:
    text = (
        '[sites.blog]\nrepo = "a/blog"\nimage = "x/b:{sha}"\n'
        'targets = [{ name = "web" }, { kind = "DaemonSet", name = "agent" }]\n'
    )
    (site,) = config.parse(text).sites
    assert [str(t) for t in site.targets] == ["Deployment/web", "DaemonSet/agent"]


BASE = '[sites.shop]\nrepo = "a/shop"\nimage = "x/s:{sha}"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            BASE + '[[sites.shop.targets]]\nkind = "Job"\nname = "migrate"\n',
            'sites.toml:5: site "shop": kind "Job" cannot be a target: a Job\'s pod template is '
            "immutable",
        ),
        (
            BASE + '[[sites.shop.targets]]\nname = "web"\n[[sites.shop.targets]]\nkind = "Pod"\n'
            'name = "p"\n',
            "sites.toml:7: site \"shop\": unknown kind 'Pod'",
        ),
        (
            BASE + '[[sites.shop.targets]]\nkind = "statefulset"\nname = "s"\n',
            'sites.toml:5: site "shop": unknown kind \'statefulset\' (did you mean "StatefulSet"?)',
        ),
        (
            BASE + 'deployment = "web"\n[[sites.shop.targets]]\nname = "web"\n',
            'sites.toml:4: site "shop": "deployment" cannot be used with "targets"',
        ),
        (
            BASE + '[[sites.shop.targets]]\ncontainers = ["app"]\n',
            'sites.toml:4: site "shop": a target needs "name"',
        ),
        (
            BASE + '[[sites.shop.targets]]\nname = "web"\nimages = { worker = "x:{sha}" }\n',
            "sites.toml:6: site \"shop\": images names container 'worker', which this target",
        ),
        (
            BASE + '[[sites.shop.targets]]\nname = "web"\nimages = { app = "x:latest" }\n'
            'containers = ["app"]\n',
            'sites.toml:6: site "shop": images.app:',
        ),
        (
            BASE + '[[sites.shop.targets]]\nname = "web"\ncontainers = ["app", "app"]\n',
            "sites.toml:6: site \"shop\": container 'app' is named twice",
        ),
        (BASE + "targets = []\n", 'sites.toml:4: site "shop": "targets" must name at least one'),
        (
            BASE + '[[sites.shop.targets]]\nname = "web"\ncontainer = ["app"]\n',
            'sites.toml:6: site "shop": unknown key "container" in a target (did you mean '
            '"containers"?)',
        ),
    ],
)
def test_each_target_error_names_file_line_and_site(text: str, expected: str) -> None:
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found


def test_two_targets_of_one_site_may_not_claim_one_container() -> None:
    text = BASE + (
        '[[sites.shop.targets]]\nname = "web"\ncontainers = ["app"]\n'
        '[[sites.shop.targets]]\nname = "web"\ncontainers = ["app", "sidecar"]\n'
    )
    assert problems(text) == [
        'sites.toml:7: site "shop": two of its targets claim default/web: the same container "app"'
    ]


def test_two_sites_may_not_claim_one_container_of_any_kind() -> None:
    text = (
        BASE + '[[sites.shop.targets]]\nkind = "CronJob"\nname = "nightly"\n'
        '[sites.other]\nrepo = "a/other"\nimage = "x/o:{sha}"\n'
        '[[sites.other.targets]]\nname = "web"\n'
        '[[sites.other.targets]]\nkind = "CronJob"\nname = "nightly"\ncontainers = ["job"]\n'
    )
    assert problems(text) == [
        'sites.toml:12: site "other": targets CronJob default/nightly like site "shop" '
        '(line 1): the same CronJob (set a distinct "containers" on each)'
    ]


def test_two_targets_of_one_site_on_one_workload_are_told_the_targets_key() -> None:
    text = BASE + '[[sites.shop.targets]]\nname = "web"\n[[sites.shop.targets]]\nname = "web"\n'
    assert problems(text) == [
        'sites.toml:4: site "shop": two of its targets claim default/web: the same Deployment '
        '(set a distinct "containers" on each)'
    ]


def test_a_single_form_site_and_a_target_on_the_same_deployment_conflict() -> None:
    text = BASE + '[[sites.shop.targets]]\nname = "blog"\n'
    text += '[sites.blog]\nrepo = "a/blog"\nimage = "x/b:{sha}"\ncontainer = "app"\n'
    assert problems(text) == [
        'sites.toml:6: site "blog": targets default/blog like site "shop" (line 1): the same '
        'Deployment (set a distinct "container" on each)'
    ]


def test_the_same_name_of_another_kind_is_another_workload() -> None:
    text = BASE + '[[sites.shop.targets]]\nname = "web"\n'
    text += '[[sites.shop.targets]]\nkind = "StatefulSet"\nname = "web"\n'
    assert len(config.parse(text).sites[0].targets) == 2


def test_init_containers_are_parts_of_the_release_and_containers_empty_sets_only_them() -> None:
    from reconciler.core.plan import release

    (site,) = config.parse(SHOP).sites
    parts = [(p.deployment, p.container, release.is_init(p)) for p in release.parts_of(site)]
    assert parts[:2] == [("web", "app", False), ("web", "migrate", True)]
    only = SHOP.replace('containers = ["app"]\n', "containers = []\n", 1)
    (site,) = config.parse(only).sites
    assert site.targets[0].only_init and site.targets[0].sets == (("migrate", True),)
    absent = SHOP.replace('containers = ["app"]\n', "", 1)  # its only container, and migrate
    (site,) = config.parse(absent).sites
    assert site.targets[0].sets == ((None, False), ("migrate", True))


def test_the_readme_example_is_valid() -> None:
    import re

    from testkit.controlplane import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("### Targets: several workloads per site") :]
    match = re.search(r"```toml\n(.*?)```", section, re.S)
    assert match
    (site,) = config.parse(match.group(1)).sites
    assert [str(t) for t in site.targets] == [
        "Deployment/web",
        "Deployment/worker",
        "CronJob/nightly-report",
    ]
