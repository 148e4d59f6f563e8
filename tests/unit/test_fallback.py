"""The newest ready commit, forward only: candidates (pure) and the engine deploying one."""

from __future__ import annotations

from dataclasses import replace

from reconciler.core import annotations as ann
from reconciler.core.config import sites as config
from reconciler.core.errors import ErrorKind
from reconciler.core.model import (
    Action,
    BranchHead,
    CommitState,
    Container,
    ObservedDeployment,
    RepoRef,
    Site,
    SitePlan,
    SiteResult,
    Skip,
    SyncRequest,
)
from reconciler.core.plan.fallback import candidates, not_ready, reason
from reconciler.sync.engine import Engine
from tests.fakes import FakeCluster, FakeHeads, FakeVerifier

H, C3, C2, C1, C0 = ("e" * 40, "d" * 40, "c" * 40, "b" * 40, "a" * 40)  # newest first
IMAGE = "gcr.io/p/{repo}:{sha}"


def _head(*checks: str | None) -> BranchHead:
    shas = (H, C3, C2, C1, C0)
    states = checks or (None,) * len(shas)
    return BranchHead(
        "acme/blog", "main", H, tuple(CommitState(s, c) for s, c in zip(shas, states, strict=True))
    )


def _plan(verify: str = "registry", running: str | None = C0, **kw: object) -> SitePlan:
    site = Site("blog", "acme/blog", "main", "web", "blog", None, IMAGE, verify=verify)
    current = f"gcr.io/p/blog:{running}" if running else "gcr.io/p/blog:manual"
    return SitePlan(
        site,
        Action.SKIP,
        skip=Skip.IMAGE_MISSING,
        sha=H,
        running_sha=running,
        current_image=current,
        **kw,  # type: ignore[arg-type]
    )


def test_candidates_are_newer_than_what_runs_newest_first() -> None:
    found = candidates(_plan(running=C1), _head())
    assert [(c.sha, c.behind) for c in found] == [(C3, 1), (C2, 2)]
    assert found[0].image == f"gcr.io/p/blog:{C3}"


def test_the_running_commit_is_found_by_its_image_too() -> None:
    plan = replace(_plan(running=C2), running_sha=None)
    assert [c.sha for c in candidates(plan, _head())] == [C3]


def test_unknown_running_commit_means_the_whole_window() -> None:
    assert [c.sha for c in candidates(_plan(running=None), _head())] == [C3, C2, C1, C0]


def test_failed_commits_and_unpassed_checks_are_never_candidates() -> None:
    assert [c.sha for c in candidates(_plan(running=C0, failed_sha=C3), _head())] == [C2, C1]
    head = _head("PENDING", "FAILURE", "PENDING", "SUCCESS", "SUCCESS")
    assert [c.sha for c in candidates(_plan("checks", running=C0), head)] == [C1]


def test_no_history_no_candidates() -> None:
    assert candidates(_plan(), BranchHead("acme/blog", "main", H)) == ()
    running_head = candidates(_plan(running=C3), _head())
    assert running_head == ()


SITES = """\
[defaults]
namespace = "web"
image = "gcr.io/p/{repo}:{sha}"

[sites.blog]
repo = "acme/blog"
branch = "main"
"""


def _world(running: str) -> tuple[config.Config, FakeHeads, FakeCluster, FakeVerifier]:
    cfg = config.parse(SITES)
    heads = FakeHeads()
    heads.heads[RepoRef("acme/blog", "main")] = _head()
    cluster = FakeCluster()
    cluster.add(
        ObservedDeployment(
            "web",
            "blog",
            (Container("app", f"gcr.io/p/blog:{running}"),),
            annotations={ann.SHA: running},
            resource_version="1",
        )
    )
    return cfg, heads, cluster, FakeVerifier()


def test_head_not_built_deploys_the_newest_built_commit() -> None:
    cfg, heads, cluster, verifier = _world(C0)
    verifier.missing |= {f"gcr.io/p/blog:{H}", f"gcr.io/p/blog:{C3}"}
    report = Engine(heads=heads, cluster=cluster, verifier=verifier).run(cfg, SyncRequest())
    (blog,) = report.results
    assert blog.applied and blog.plan.sha == C2
    why = f"head {H[:7]} not ready (image missing); deploying {C2[:7]}, 2 commits behind"
    assert blog.plan.reason == f"deployed main@{C2[:7]} (was {C0[:7]}); {why}"
    plan = Engine(heads=heads, cluster=_world(C0)[2], verifier=verifier).plan(cfg)
    assert plan.sites[0].action is Action.UPDATE and plan.sites[0].reason == why
    assert [c.image for c, _ in cluster.applied] == [f"gcr.io/p/blog:{C2}"]


def test_never_older_than_what_runs() -> None:
    cfg, heads, cluster, verifier = _world(C2)
    verifier.missing |= {f"gcr.io/p/blog:{H}", f"gcr.io/p/blog:{C3}"}
    report = Engine(heads=heads, cluster=cluster, verifier=verifier).run(cfg, SyncRequest())
    (blog,) = report.results
    assert blog.action is Action.SKIP and not blog.applied and cluster.applied == []
    asked = {r.image for r in verifier.seen}
    assert f"gcr.io/p/blog:{C1}" not in asked, "older than what runs: not even checked"


def test_failed_checks_on_the_head_fall_back_too() -> None:
    failed = replace(
        _plan("checks"), action=Action.ERROR, skip=None, error_kind=ErrorKind.CHECKS_FAILED
    )
    assert not_ready(failed)
    head = _head("FAILURE", "SUCCESS", None, None, None)
    (chosen,) = candidates(failed, head)
    assert reason(failed, head, chosen) == (
        f"head {H[:7]} not ready (checks failed); deploying {C3[:7]}, 1 commit behind"
    )
    other = replace(failed, error_kind=ErrorKind.FORBIDDEN)
    assert not not_ready(other)


def test_a_ready_head_goes_out_as_before() -> None:
    cfg, heads, cluster, verifier = _world(C0)
    report = Engine(heads=heads, cluster=cluster, verifier=verifier).run(cfg, SyncRequest())
    assert report.results[0].plan.sha == H and report.results[0].applied


DIGEST = "sha256:" + "9" * 64


def _adopted(image: str, sites: str = SITES) -> tuple[config.Config, FakeHeads, FakeCluster]:
    """A Deployment another tool rolled out (no reconciler.dev/ annotations), then adopted."""
    cfg = config.parse(sites)
    heads = FakeHeads()
    heads.heads[RepoRef("acme/blog", "main")] = _head()
    cluster = FakeCluster()
    cluster.add(ObservedDeployment("web", "blog", (Container("app", image),), resource_version="1"))
    return cfg, heads, cluster


def test_an_adopted_digest_pinned_deployment_is_never_moved_back() -> None:
    """#17: `app:<c2>@sha256:…` runs c2 although nothing records it; the walk stops there even
    when c2's own image is gone from the registry and c1's is there."""
    cfg, heads, cluster = _adopted(f"gcr.io/p/blog:{C2}@{DIGEST}")
    verifier = FakeVerifier()
    verifier.missing |= {f"gcr.io/p/blog:{s}" for s in (H, C3, C2)}
    (blog,) = (
        Engine(heads=heads, cluster=cluster, verifier=verifier).run(cfg, SyncRequest()).results
    )
    assert blog.action is Action.SKIP and not blog.applied, blog.plan.reason
    assert cluster.applied == []
    assert blog.plan.running_sha == C2
    asked = {r.image for r in verifier.seen}
    assert not asked & {f"gcr.io/p/blog:{C1}", f"gcr.io/p/blog:{C0}"}


def test_an_adopted_short_sha_image_is_its_commit_too() -> None:
    sites = SITES.replace("{repo}:{sha}", "{repo}:{short_sha}")
    cfg, heads, cluster = _adopted(f"gcr.io/p/blog:{C2[:7]}@{DIGEST}", sites)
    verifier = FakeVerifier()
    verifier.missing |= {f"gcr.io/p/blog:{s[:7]}" for s in (H, C3)}
    (blog,) = (
        Engine(heads=heads, cluster=cluster, verifier=verifier).run(cfg, SyncRequest()).results
    )
    assert blog.action is Action.SKIP and not blog.applied and cluster.applied == []
    assert blog.plan.running_sha == C2


def test_the_running_commit_of_a_plan_is_one_notion() -> None:
    from reconciler.core.plan import running

    site = Site("blog", "acme/blog", "main", "web", "blog", None, IMAGE)
    pinned = f"gcr.io/p/blog:{C1}@{DIGEST}"
    assert running.running_sha(site, {}, pinned, _head()) == C1
    # the image wins over a stale record (a person's `kubectl set image` to another commit)
    assert running.running_sha(site, {ann.SHA: C2}, pinned, _head()) == C1
    assert running.running_sha(site, {ann.SHA: C2}, "nginx:1.27", _head()) == C2
    assert running.running_sha(site, {}, "nginx:1.27", _head()) is None
    plan = replace(_plan(running=None), current_image=pinned)
    assert running.runs(plan, C1, f"gcr.io/p/blog:{C1}")


def test_the_plan_of_a_fallback_names_the_head_and_the_target() -> None:
    """#17: HEAD is the branch head; the commit going out instead has its own column / key."""
    import json

    from reconciler.cli.output import report_json, report_text
    from reconciler.core.model import SyncReport

    cfg, heads, cluster, verifier = _world(C0)
    verifier.missing |= {f"gcr.io/p/blog:{H}", f"gcr.io/p/blog:{C3}"}
    (p,) = Engine(heads=heads, cluster=cluster, verifier=verifier).plan(cfg).sites
    report = SyncReport("r", "cli", False, True, 0.0, 0.0, (SiteResult(p),))
    (row,) = json.loads(report_json(report))
    assert (row["head_sha"], row["target_sha"]) == (H, C2)
    header, line = report_text(report).splitlines()[:2]
    assert header.split()[4:6] == ["HEAD", "TARGET"]
    assert line.split()[5:7] == [f"main@{H[:7]}", C2[:7]]
