"""The GitHub adapter against a real HTTP stand-in that answers in GitHub's own schemas."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from reconciler.adapters.github import GitHubSettings, GitHubSource
from reconciler.core.model import (
    BranchHead,
    CommitState,
    HeadError,
    ImageStatus,
    RepoRef,
    VerifyRequest,
)
from reconciler.core.plan.checks import Check, checks_verdict
from testkit.github import GitHubStandIn, random_sha
from testkit.github_fixtures import TOKEN


class Sleeps:
    """Records waits instead of sleeping (injected, not patched)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def source(gh: GitHubStandIn, token: str | None = TOKEN, **kw: object) -> GitHubSource:
    settings = GitHubSettings(api_url=gh.url, token=token, **kw)  # type: ignore[arg-type]
    return GitHubSource(settings, sleep=Sleeps())


def test_graphql_batches_many_repos_for_one_point_per_hundred(github: GitHubStandIn) -> None:
    refs = []
    expected = {}
    for i in range(250):
        sha = random_sha()
        github.add_repo(f"acme/site{i}", {"main": sha, "release": random_sha()})
        refs.append(RepoRef(f"acme/site{i}", "main" if i % 2 else None))
        expected[f"acme/site{i}"] = sha
    heads = source(github).resolve(refs)
    assert all(isinstance(h, BranchHead) for h in heads.values()), heads
    assert {r.repo: h.sha for r, h in heads.items() if isinstance(h, BranchHead)} == expected
    assert all(h.branch == "main" for h in heads.values() if isinstance(h, BranchHead))
    stats = github.stats()
    assert stats["graphql_queries"] == 3
    # With the last 20 commits of each branch (and their checks): 2 points per 100 repositories.
    assert stats["by_token"][TOKEN]["points"].get("graphql") == 5
    assert stats["by_token"][TOKEN]["points"].get("core", 0) == 0
    github.reset_stats()
    source(github, lookback=0).resolve(refs)
    assert github.stats()["by_token"][TOKEN]["points"].get("graphql") == 3


def test_heads_come_with_their_recent_history_and_checks(github: GitHubStandIn) -> None:
    github.add_repo("acme/blog", {"main": "a" * 40})
    for sha in ("b" * 40, "c" * 40, "d" * 40):
        github.set_branch("acme/blog", "main", sha)
    github.set_checks("acme/blog", "c" * 40, "success")
    github.set_checks("acme/blog", "d" * 40, "pending")
    ref = RepoRef("acme/blog", "main")
    head = source(github, lookback=3).resolve([ref])[ref]
    assert isinstance(head, BranchHead) and head.sha == "d" * 40
    assert head.history == (
        CommitState("d" * 40, "PENDING"),
        CommitState("c" * 40, "SUCCESS"),
        CommitState("b" * 40, None),
    )
    # each commit's committedDate comes along (the lead time's "pushed" without a webhook)
    assert head.committed_at and head.committed_at.endswith("Z")
    assert all(c.committed_at and c.committed_at.endswith("Z") for c in head.history)
    plain = source(github, lookback=0).resolve([ref])[ref]
    assert plain == BranchHead("acme/blog", "main", "d" * 40)
    assert plain.committed_at == head.committed_at


def test_same_repo_two_branches_and_default(github: GitHubStandIn) -> None:
    github.add_repo("acme/blog", {"trunk": "a" * 40, "preview": "b" * 40}, default_branch="trunk")
    refs = [RepoRef("acme/blog", None), RepoRef("acme/blog", "preview")]
    heads = source(github, lookback=0).resolve(refs)
    assert heads[refs[0]] == BranchHead("acme/blog", "trunk", "a" * 40)
    assert heads[refs[1]] == BranchHead("acme/blog", "preview", "b" * 40)
    assert github.stats()["graphql_queries"] == 1


def test_missing_repo_in_a_batch_fails_only_that_repo(github: GitHubStandIn) -> None:
    github.add_repo("acme/a", {"main": "a" * 40})
    github.add_repo("acme/c", {"main": "c" * 40})
    refs = [RepoRef("acme/a", "main"), RepoRef("acme/gone", "main"), RepoRef("acme/c", None)]
    heads = source(github).resolve(refs)
    assert isinstance(heads[refs[0]], BranchHead) and isinstance(heads[refs[2]], BranchHead)
    gone = heads[refs[1]]
    assert isinstance(gone, HeadError) and gone.kind == "repo_not_found"
    assert "acme/gone not found" in gone.reason


def test_missing_and_renamed_branches_say_which(github: GitHubStandIn) -> None:
    github.add_repo("acme/blog", {"main": "a" * 40, "old": "b" * 40})
    github.rename_branch("acme/blog", "old", "new")
    missing, renamed = RepoRef("acme/blog", "nope"), RepoRef("acme/blog", "old")
    heads = source(github).resolve([missing, renamed])
    gone = heads[missing]
    assert isinstance(gone, HeadError) and gone.kind == "branch_not_found"
    r = heads[renamed]
    assert isinstance(r, HeadError) and r.kind == "branch_renamed"
    assert 'renamed to "new"' in r.reason


def test_5xx_is_retried(github: GitHubStandIn) -> None:
    github.add_repo("acme/blog", {"main": "a" * 40})
    github.fail_next(2, status=502)
    heads = source(github).resolve([RepoRef("acme/blog", "main")])
    assert heads == {RepoRef("acme/blog", "main"): BranchHead("acme/blog", "main", "a" * 40)}


def test_persistent_5xx_fails_those_sites_with_a_reason(github: GitHubStandIn) -> None:
    github.add_repo("acme/blog", {"main": "a" * 40})
    github.fail_next(20, status=503)
    ref = RepoRef("acme/blog", "main")
    head = source(github).resolve([ref])[ref]
    assert isinstance(head, HeadError) and "503" in head.reason


def test_exhausted_rate_limit_fails_fast_and_stops_asking(github: GitHubStandIn) -> None:
    for i in range(3):
        github.add_repo(f"acme/s{i}", {"main": random_sha()})
    github.set_remaining(TOKEN, 0, resource="graphql")
    src = source(github)
    refs = [RepoRef(f"acme/s{i}", "main") for i in range(3)]
    heads = src.resolve(refs)
    assert all(isinstance(h, HeadError) and h.kind == "rate_limited" for h in heads.values())
    before = github.stats()["requests"]
    again = src.resolve(refs)
    assert all(isinstance(h, HeadError) and h.kind == "rate_limited" for h in again.values())
    assert github.stats()["requests"] == before, "no request may be sent while exhausted"
    assert "no request sent" in next(iter(again.values())).reason  # type: ignore[union-attr]


def test_secondary_limit_retry_after_is_honoured(github: GitHubStandIn) -> None:
    github.add_repo("acme/blog", {"main": "a" * 40})
    github.fail_next(1, status=403, retry_after=2)
    sleeps = Sleeps()
    src = GitHubSource(GitHubSettings(api_url=github.url, token=TOKEN), sleep=sleeps)
    heads = src.resolve([RepoRef("acme/blog", "main")])
    assert isinstance(next(iter(heads.values())), BranchHead)
    assert sleeps.waits == [2.0]


def test_retry_after_beyond_the_bound_is_not_waited_for(github: GitHubStandIn) -> None:
    github.add_repo("acme/blog", {"main": "a" * 40})
    github.fail_next(1, status=403, retry_after=3600)
    ref = RepoRef("acme/blog", "main")
    head = source(github).resolve([ref])[ref]
    assert isinstance(head, HeadError) and head.kind == "rate_limited"


def test_bad_token_says_so(github: GitHubStandIn) -> None:
    github.add_repo("acme/blog", {"main": "a" * 40})
    ref = RepoRef("acme/blog", "main")
    head = source(github, token="wrong").resolve([ref])[ref]
    assert isinstance(head, HeadError) and head.kind == "auth"
    assert "GITHUB_TOKEN" in head.reason


def test_unreachable_github_says_where() -> None:
    src = GitHubSource(GitHubSettings(api_url="http://127.0.0.1:9", token=TOKEN, timeout=2))
    ref = RepoRef("acme/blog", "main")
    head = src.resolve([ref])[ref]
    assert isinstance(head, HeadError) and head.kind == "github_unreachable"
    assert head.reason == "cannot reach GitHub at http://127.0.0.1:9: Connection refused"


@pytest.fixture
def silent_server() -> Iterator[str]:
    """An HTTP address that accepts connections and reads requests but never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()
        for conn in held:
            conn.close()


def test_github_that_does_not_answer_says_how_long_we_waited(silent_server: str) -> None:
    src = GitHubSource(GitHubSettings(api_url=silent_server, token=TOKEN, timeout=1))
    ref = RepoRef("acme/blog", "main")
    head = src.resolve([ref])[ref]
    assert isinstance(head, HeadError) and head.kind == "github_unreachable"
    assert head.reason == f"GitHub did not answer within 1 s ({silent_server})"


def test_unauthenticated_uses_rest_and_conditional_requests(github: GitHubStandIn) -> None:
    github.add_repo("acme/blog", {"main": "a" * 40, "dev": "d" * 40})
    src = source(github, token=None)
    refs = [RepoRef("acme/blog", None), RepoRef("acme/blog", "dev")]
    heads = src.resolve(refs)
    assert heads[refs[0]] == BranchHead("acme/blog", "main", "a" * 40)
    assert heads[refs[1]] == BranchHead("acme/blog", "dev", "d" * 40)
    assert github.stats()["graphql_queries"] == 0
    github.reset_stats()
    src.resolve(refs)
    assert github.stats()["not_modified"] == github.stats()["requests"] == 3
    github.set_branch("acme/blog", "dev", "e" * 40)
    assert src.resolve(refs)[refs[1]] == BranchHead("acme/blog", "dev", "e" * 40)


def test_authorized_conditional_requests_are_free(github: GitHubStandIn) -> None:
    for i in range(5):
        github.add_repo(f"acme/s{i}", {"main": random_sha()})
    src = source(github, strategy="rest")
    refs = [RepoRef(f"acme/s{i}", "main") for i in range(5)]
    src.resolve(refs)
    github.reset_stats()
    heads = src.resolve(refs)
    assert all(isinstance(h, BranchHead) for h in heads.values())
    assert github.stats()["by_token"][TOKEN]["points"].get("core", 0) == 0
    assert github.stats()["not_modified"] == 5


def test_anonymous_budget_is_never_overdrawn(github: GitHubStandIn) -> None:
    for i in range(5):
        github.add_repo(f"acme/s{i}", {"main": random_sha()})
    github.set_remaining(None, 2)
    src = source(github, token=None, concurrency=1)
    heads = src.resolve([RepoRef(f"acme/s{i}", "main") for i in range(5)])
    ok = [h for h in heads.values() if isinstance(h, BranchHead)]
    limited = [h for h in heads.values() if isinstance(h, HeadError) and h.kind == "rate_limited"]
    assert len(ok) == 2 and len(limited) == 3
    assert github.stats()["rate_limited"] <= 1


def test_rate_limits_are_reported(github: GitHubStandIn) -> None:
    github.add_repo("acme/blog", {"main": "a" * 40})
    src = source(github)
    src.resolve([RepoRef("acme/blog", "main")])
    limits = src.rate_limits()
    assert limits["graphql"].limit == 5000 and limits["graphql"].remaining == 4999


def checks_of(
    gh: GitHubStandIn, sha: str, required: tuple[str, ...] = (), image: str = "gcr.io/p/blog"
) -> ImageStatus:
    request = VerifyRequest(f"{image}:{sha}", "acme/blog", sha, "checks", required)
    return source(gh).verify([request])[request]


@pytest.mark.parametrize(
    ("state", "exists", "reason"),
    [
        ("success", True, ""),
        ("pending", False, "waiting for checks on"),
        ("failure", None, "checks failed on"),
        (None, False, "no checks have reported"),
    ],
)
def test_commit_checks_gate(
    github: GitHubStandIn, state: str | None, exists: bool | None, reason: str
) -> None:
    sha = random_sha()
    github.add_repo("acme/blog", {"main": sha})
    if state:
        github.set_checks("acme/blog", sha, state)  # type: ignore[arg-type]
    status = checks_of(github, sha)
    assert status.exists is exists and reason in status.reason


def test_stale_check_run_is_a_failure() -> None:
    """REST's published schema has no "stale" conclusion (so the stand-in cannot send one), but
    GitHub marks check runs stale after 14 days: it must not pass."""
    runs = [Check("a", "success"), Check("b", "stale")]
    status = checks_verdict(runs, "f" * 40, ())
    assert status.exists is None and "b (stale)" in status.reason


def test_checks_are_read_past_the_first_hundred(github: GitHubStandIn) -> None:
    sha = random_sha()
    github.add_repo("acme/blog", {"main": sha})
    github.set_checks("acme/blog", sha, "success", [f"job{i:03}" for i in range(150)], kind="run")
    github.set_checks("acme/blog", sha, "success", [f"ctx{i:03}" for i in range(120)])
    assert checks_of(github, sha).exists is True
    github.set_checks("acme/blog", sha, "failure", ["zz-last-page"], kind="run")
    failed = checks_of(github, sha)
    assert failed.exists is None and "zz-last-page (failure)" in failed.reason


@pytest.mark.parametrize(
    ("states", "exists", "reason"),
    [
        ({"a": "neutral", "b": "skipped"}, None, "no check succeeded"),
        ({"a": "success", "b": "skipped"}, True, ""),
        ({"a": "success", "b": "cancelled"}, None, "b (cancelled)"),
    ],
)
def test_neutral_skipped_and_stale_are_not_passes(
    github: GitHubStandIn, states: dict[str, str], exists: bool | None, reason: str
) -> None:
    sha = random_sha()
    github.add_repo("acme/blog", {"main": sha})
    for name, state in states.items():
        github.set_checks("acme/blog", sha, state, [name], kind="run")  # type: ignore[arg-type]
    status = checks_of(github, sha)
    assert status.exists is exists and reason in status.reason, status


@pytest.mark.parametrize(
    ("states", "exists", "reason"),
    [
        ({"build": "success", "test": "success", "lint": "failure"}, True, ""),
        ({"build": "success"}, False, "test (not reported)"),
        ({"build": "success", "test": "pending"}, False, "test (running)"),
        ({"build": "success", "test": "skipped"}, None, "test (skipped)"),
        ({"build": "failure", "test": "pending"}, None, "build (failure)"),
    ],
)
def test_required_checks(
    github: GitHubStandIn, states: dict[str, str], exists: bool | None, reason: str
) -> None:
    sha = random_sha()
    github.add_repo("acme/blog", {"main": sha})
    for name, state in states.items():
        kind = "both" if state in ("success", "failure", "pending") else "run"
        github.set_checks("acme/blog", sha, state, [name], kind=kind)  # type: ignore[arg-type]
    status = checks_of(github, sha, ("build", "test"))
    assert status.exists is exists and reason in status.reason, status


def test_one_image_two_verifications(github: GitHubStandIn) -> None:
    sha = random_sha()
    github.add_repo("acme/blog", {"main": sha})
    github.set_checks("acme/blog", sha, "success", ["build"])
    github.set_checks("acme/blog", sha, "pending", ["e2e"])
    image = f"gcr.io/p/blog:{sha}"
    loose = VerifyRequest(image, "acme/blog", sha, "checks", ("build",))
    strict = VerifyRequest(image, "acme/blog", sha, "checks", ("build", "e2e"))
    statuses = source(github).verify([loose, strict])
    assert statuses[loose].exists is True and statuses[strict].exists is False


def test_the_pace_grows_within_its_ceiling_and_halves_on_a_secondary_limit() -> None:
    """A stand-in that allows 6 requests in flight and answers more with GitHub's secondary
    limit (403, retry-after 1): the pace grows from 4 past it, is answered so, halves, waits the
    retry-after out and resolves every head; never more than the ceiling (16) in flight. Each
    answer takes 200 ms, so that requests started together overlap even on a busy machine."""
    with GitHubStandIn(
        tokens=[TOKEN],
        latency_median_ms=200,
        latency_sigma=0.1,
        max_concurrent=6,
        secondary_retry_after_s=1,
    ) as gh:
        refs = []
        for i in range(1500):  # 15 GraphQL queries of 100 repositories
            gh.add_repo(f"acme/s{i:04d}", {"main": random_sha()})
            refs.append(RepoRef(f"acme/s{i:04d}", "main"))
        settings = GitHubSettings(api_url=gh.url, token=TOKEN, concurrency=4, max_concurrency=16)
        src = GitHubSource(settings)  # it really waits the retry-after out
        heads = src.resolve(refs)
        assert all(isinstance(h, BranchHead) for h in heads.values()), {
            h.reason for h in heads.values() if isinstance(h, HeadError)
        }
        stats = gh.stats()
        assert stats["secondary_limited"] >= 1 and src.throttle.limited_answers >= 1
        assert stats["max_in_flight"] <= 16 and src.throttle.peak <= 16
        assert src.throttle.pace.bounded < 16  # halved at least once since it last grew


def test_a_secondary_limit_waits_beyond_the_bound_fail_fast_sending_nothing() -> None:
    with GitHubStandIn(tokens=[TOKEN], max_concurrent=1, secondary_retry_after_s=3600) as gh:
        gh.add_repo("acme/blog", {"main": random_sha()})
        src = GitHubSource(GitHubSettings(api_url=gh.url, token=TOKEN))
        src.throttle.limited(3600)  # as if GitHub had just answered so
        before = gh.stats()["requests"]
        ref = RepoRef("acme/blog", "main")
        head = src.resolve([ref])[ref]
        assert isinstance(head, HeadError) and head.kind == "rate_limited", head
        assert "secondary rate limit" in head.reason
        assert gh.stats()["requests"] == before  # nothing was sent


def test_a_stand_in_remembering_answers_gives_the_same_heads_and_forgets_on_a_change() -> None:
    """bench.run --memo-answers: a remembered GraphQL answer is the one the stand-in would
    compute, with the caller's rate limit now; a branch move or a check makes it compute again."""
    with GitHubStandIn(tokens=[TOKEN], memo_answers=True) as gh:
        refs = []
        for i in range(150):
            gh.add_repo(f"acme/m{i:03d}", {"main": random_sha()})
            refs.append(RepoRef(f"acme/m{i:03d}", "main"))
        src = GitHubSource(GitHubSettings(api_url=gh.url, token=TOKEN))
        first = src.resolve(refs)
        points = gh.stats()["points"].get("graphql", 0)
        assert points > 0
        assert src.resolve(refs) == first and gh._answers  # remembered
        assert gh.stats()["points"].get("graphql", 0) == 2 * points  # charged like any answer
        moved = gh.set_branch("acme/m007", "main")
        again = src.resolve(refs)
        head = again[refs[7]]
        assert isinstance(head, BranchHead) and head.sha == moved
        assert {r: h for r, h in again.items() if r != refs[7]} == {
            r: h for r, h in first.items() if r != refs[7]
        }
