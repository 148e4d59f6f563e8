"""The pure planner, table-driven: (site, head, observed) -> action and reason."""

from __future__ import annotations

from dataclasses import replace

import pytest

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
    Skip,
)
from reconciler.core.plan import planner

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
    request = planner.VerifyRequest(f"gcr.io/p/blog:{SHA}", "acme/blog", SHA, "registry")
    gated = planner.gate(result, {request: status})
    assert gated.sites[0].action is action
    assert reason in gated.sites[0].reason


DIGEST = "sha256:" + "d" * 64
TARGET = f"gcr.io/p/blog:{SHA}"


@pytest.mark.parametrize(("pin", "target"), [(True, f"{TARGET}@{DIGEST}"), (False, TARGET)])
def test_gate_pins_the_verified_digest_unless_turned_off(pin: bool, target: str) -> None:
    site = replace(SITE, pin_digest=pin)
    result = planner.plan([site], {site.ref: HEAD}, {"web": dep(APP_OLD)})
    request = planner.verify_request(result.sites[0])
    assert request == planner.VerifyRequest(TARGET, "acme/blog", SHA, "registry")
    gated = planner.gate(result, {request: planner.ImageStatus(True, digest=DIGEST)})
    assert gated.sites[0].target_image == target
    assert planner.change_for(gated.sites[0]).image == target


@pytest.mark.parametrize("running", [TARGET, f"{TARGET}@{DIGEST}", f"{TARGET}@sha256:{'e' * 64}"])
@pytest.mark.parametrize("pin", [True, False])
def test_tag_and_tag_at_digest_of_the_same_commit_are_in_sync(running: str, pin: bool) -> None:
    site = replace(SITE, pin_digest=pin)
    p = planner.plan_site(site, {site.ref: HEAD}, {"web": dep(("app", running))})
    assert p.action is Action.IN_SYNC, p.reason


def test_verification_is_keyed_by_image_and_kind() -> None:
    checks = replace(SITE, name="shop", deployment="shop", verify="checks", required_checks=("ci",))
    view: NamespaceView = {
        name: ObservedDeployment("web", name, (Container("app", APP_OLD[1]),))
        for name in ("blog", "shop")
    }
    result = planner.plan([SITE, checks], {SITE.ref: HEAD}, {"web": view})
    by_registry, by_checks = (planner.verify_request(p) for p in result.sites)
    assert by_registry and by_checks and by_registry.image == by_checks.image
    assert by_registry != by_checks and by_checks.required_checks == ("ci",)
    gated = planner.gate(
        result,
        {
            by_registry: planner.ImageStatus(True, digest=DIGEST),
            by_checks: planner.ImageStatus(False, "waiting for checks"),
        },
    )
    assert [p.action for p in gated.sites] == [Action.UPDATE, Action.SKIP]
    assert gated.sites[1].skip is Skip.CHECKS_PENDING
    assert gated.sites[0].target_image == f"{TARGET}@{DIGEST}"
