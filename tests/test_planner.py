"""The pure planner, table-driven: (site, head, observed) -> action and reason."""

from __future__ import annotations

from dataclasses import replace

import pytest

from reconciler.core import planner
from reconciler.core.errors import ErrorKind
from reconciler.core.model import (
    Action,
    BranchHead,
    Container,
    HeadError,
    HeadResult,
    NamespaceError,
    NamespaceView,
    ObservedDeployment,
    RepoRef,
    Site,
)

SHA = "a" * 40
OLD = "b" * 40
SITE = Site(
    name="blog",
    repo="acme/blog",
    branch="main",
    namespace="web",
    deployment="blog",
    container="app",
    image="gcr.io/p/{repo}:{sha}",
)
HEAD = BranchHead("acme/blog", "main", SHA)


def dep(*containers: tuple[str, str], annotations: dict[str, str] | None = None) -> NamespaceView:
    d = ObservedDeployment(
        namespace="web",
        name="blog",
        containers=tuple(Container(n, i) for n, i in containers),
        init_containers=(Container("migrate", "gcr.io/p/migrate:1"),),
        annotations=annotations or {},
        resource_version="42",
    )
    return {"blog": d}


APP_OLD = ("app", f"gcr.io/p/blog:{OLD}")
APP_NEW = ("app", f"gcr.io/p/blog:{SHA}")
SIDECAR = ("proxy", "envoy:1.30")

CASES: list[tuple[str, Site, HeadResult | None, NamespaceView | None, Action, str]] = [
    ("behind", SITE, HEAD, dep(APP_OLD, SIDECAR), Action.UPDATE, "main is at aaaaaaa"),
    ("in sync", SITE, HEAD, dep(APP_NEW, SIDECAR), Action.IN_SYNC, "runs main@aaaaaaa"),
    (
        "only container picked implicitly",
        replace(SITE, container=None),
        HEAD,
        dep(APP_OLD),
        Action.UPDATE,
        "",
    ),
    (
        "ambiguous container",
        replace(SITE, container=None),
        HEAD,
        dep(APP_OLD, SIDECAR),
        Action.ERROR,
        'has 2 containers (app, proxy): set "container"',
    ),
    (
        "missing container",
        replace(SITE, container="web"),
        HEAD,
        dep(APP_OLD),
        Action.ERROR,
        'has no container "web" (it has: app)',
    ),
    (
        "init container is not managed",
        replace(SITE, container="migrate"),
        HEAD,
        dep(APP_OLD),
        Action.ERROR,
        '"migrate" is an init container',
    ),
    ("deployment missing", SITE, HEAD, {}, Action.ERROR, "deployment web/blog not found"),
    (
        "namespace unreadable",
        SITE,
        HEAD,
        NamespaceError("forbidden by RBAC", ErrorKind.FORBIDDEN),
        Action.ERROR,
        "forbidden by RBAC",
    ),
    (
        "head failed",
        SITE,
        HeadError("repository acme/blog not found", ErrorKind.REPO_NOT_FOUND),
        dep(APP_OLD),
        Action.ERROR,
        "repository acme/blog not found",
    ),
    ("paused in config", replace(SITE, paused=True), None, dep(APP_OLD), Action.SKIP, "paused"),
    (
        "paused by annotation",
        SITE,
        HEAD,
        dep(APP_OLD, annotations={"reconciler.dev/paused": "true"}),
        Action.SKIP,
        "reconciler.dev/paused",
    ),
]


@pytest.mark.parametrize(
    ("site", "head", "view", "action", "reason"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_plan_site(
    site: Site,
    head: HeadResult | None,
    view: NamespaceView | None,
    action: Action,
    reason: str,
) -> None:
    heads = {site.ref: head} if head else {}
    observed = {"web": view} if view is not None else {}
    p = planner.plan_site(site, heads, observed)
    assert p.action is action, p
    assert reason in p.reason


def test_update_carries_everything_the_applier_needs() -> None:
    p = planner.plan_site(SITE, {SITE.ref: HEAD}, {"web": dep(APP_OLD, SIDECAR)})
    change = planner.change_for(p)
    assert change.container == "app"
    assert change.image == f"gcr.io/p/blog:{SHA}"
    assert change.previous_image == f"gcr.io/p/blog:{OLD}"
    assert (change.repo, change.branch, change.sha) == ("acme/blog", "main", SHA)
    assert change.resource_version == "42"


def test_reason_uses_the_recorded_sha_when_present() -> None:
    view = dep(APP_OLD, annotations={"reconciler.dev/sha": OLD})
    p = planner.plan_site(SITE, {SITE.ref: HEAD}, {"web": view})
    assert p.reason == "main is at aaaaaaa; ran bbbbbbb"


def test_default_branch_name_comes_from_the_head() -> None:
    site = replace(SITE, branch=None, image="x/{repo}:{branch}-{short_sha}")
    head = BranchHead("acme/blog", "trunk", SHA)
    p = planner.plan_site(site, {site.ref: head}, {"web": dep(APP_OLD)})
    assert p.branch == "trunk" and p.target_image == "x/blog:trunk-aaaaaaa"


def test_plan_keeps_order_and_isolates_failures() -> None:
    other = replace(SITE, name="shop", deployment="shop", repo="acme/shop")
    heads: dict[RepoRef, HeadResult] = {SITE.ref: HEAD, other.ref: HeadError("boom")}
    result = planner.plan([other, SITE], heads, {"web": dep(APP_OLD)})
    assert [p.site.name for p in result.sites] == ["shop", "blog"]
    assert [p.action for p in result.sites] == [Action.ERROR, Action.UPDATE]
    assert result.updates == (result.sites[1],)


@pytest.mark.parametrize(
    ("status", "action", "reason"),
    [
        (planner.ImageStatus(True), Action.UPDATE, "main is at"),
        (planner.ImageStatus(False, "image x not in registry"), Action.SKIP, "not rolled out"),
        (planner.ImageStatus(None, "registry denied"), Action.ERROR, "cannot verify image"),
    ],
)
def test_gate(status: planner.ImageStatus, action: Action, reason: str) -> None:
    result = planner.plan([SITE], {SITE.ref: HEAD}, {"web": dep(APP_OLD)})
    gated = planner.gate(result, {f"gcr.io/p/blog:{SHA}": status})
    assert gated.sites[0].action is action
    assert reason in gated.sites[0].reason
