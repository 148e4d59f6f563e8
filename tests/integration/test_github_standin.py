"""Tests for the GitHub stand-in server, driven by real clients (requests, PyGithub)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import github
import pytest
import requests

from testkit.github import (
    ROUTES,
    GitHubStandIn,
    openapi_operation,
    random_sha,
    rest_schema_errors,
)

TOKEN = "ghp_test_token"
MAIN_SHA = "a" * 40
DEV_SHA = "b" * 40


@pytest.fixture
def gh() -> Iterator[GitHubStandIn]:
    with GitHubStandIn(tokens=[TOKEN]) as server:
        server.add_repo("acme/web", {"main": MAIN_SHA, "dev": DEV_SHA})
        yield server
        assert server.schema_violations == []
        assert server.internal_errors == []


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers["Authorization"] = f"token {TOKEN}"
        yield session


def pygithub(gh: GitHubStandIn, token: str = TOKEN) -> github.Github:
    # retry=None: PyGithub's default GithubRetry would sleep until x-ratelimit-reset.
    # PyGithub also sleeps 0.25 s between requests and 1 s between POSTs unless told not to.
    return github.Github(
        auth=github.Auth.Token(token),
        base_url=gh.url,
        retry=None,
        seconds_between_requests=None,
        seconds_between_writes=None,
    )


def graphql(http: requests.Session, gh: GitHubStandIn, query: str, **variables: Any) -> Any:
    r = http.post(f"{gh.url}/graphql", json={"query": query, "variables": variables})
    assert r.status_code == 200, r.text
    assert r.headers["x-ratelimit-resource"] == "graphql"
    return r.json()


# ---- REST shapes -------------------------------------------------------------------------------

REST_CASES = [
    ("/repos/acme/web", "repos/get"),
    ("/repos/acme/web/branches/main", "repos/get-branch"),
    ("/repos/acme/web/commits/main", "repos/get-commit"),
    (f"/repos/acme/web/commits/{MAIN_SHA}", "repos/get-commit"),
    ("/repos/acme/web/git/ref/heads/main", "git/get-ref"),
    ("/repos/acme/web/commits/main/status", "repos/get-combined-status-for-ref"),
    ("/repos/acme/web/commits/main/check-runs", "checks/list-for-ref"),
    ("/repos/acme/web/commits/dev/status", "repos/get-combined-status-for-ref"),
    ("/repos/acme/web/commits/dev/check-runs", "checks/list-for-ref"),
    ("/rate_limit", "rate-limit/get"),
]


@pytest.mark.parametrize(("path", "operation"), REST_CASES)
def test_rest_bodies_match_openapi_schema(
    gh: GitHubStandIn, http: requests.Session, path: str, operation: str
) -> None:
    gh.set_checks("acme/web", MAIN_SHA, "success", names=("build", "lint"))
    gh.set_checks("acme/web", DEV_SHA, "pending")
    r = http.get(gh.url + path)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    assert rest_schema_errors(operation, 200, r.json()) == []
    if path != "/rate_limit":
        assert r.headers["ETag"].startswith('W/"')


def test_rest_error_bodies_match_schema(gh: GitHubStandIn, http: requests.Session) -> None:
    cases = [
        ("/repos/acme/nope", 404, "repos/get", "Not Found"),
        ("/repos/acme/web/branches/nope", 404, "repos/get-branch", "Branch not found"),
        ("/repos/acme/web/git/ref/heads/nope", 404, "git/get-ref", "Not Found"),
        ("/repos/acme/web/commits/nope", 422, "repos/get-commit", "No commit found for SHA: nope"),
        ("/", 404, None, "Not Found"),
        ("/repos/acme/web/issues", 404, None, "Not Found"),
    ]
    for path, status, operation, message in cases:
        r = http.get(gh.url + path)
        assert r.status_code == status, path
        assert r.json()["message"] == message
        assert "documentation_url" in r.json()
        assert rest_schema_errors(operation, status, r.json()) == []


def test_routes_are_operations_of_the_openapi_subset() -> None:
    assert ROUTES
    for r in ROUTES:
        assert openapi_operation(r.method, r.template) == r.operation_id, r


def test_schema_violation_answers_500(
    gh: GitHubStandIn, http: requests.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    from testkit.github import objects

    original = objects.full_repository

    def broken(repo: Any, api: str) -> dict[str, Any]:
        obj = original(repo, api)
        del obj["default_branch"]
        return obj

    monkeypatch.setattr(objects, "full_repository", broken)
    gh.add_repo("acme/broken")
    r = http.get(f"{gh.url}/repos/acme/broken")
    assert r.status_code == 500
    assert any("default_branch" in v for v in gh.schema_violations)
    gh.schema_violations.clear()


def test_pygithub_reads(gh: GitHubStandIn) -> None:
    gh.set_checks("acme/web", MAIN_SHA, "failure", names=("ci",))
    g = pygithub(gh)
    repo = g.get_repo("acme/web")
    assert repo.default_branch == "main"
    assert repo.full_name == "acme/web"
    assert repo.get_branch("main").commit.sha == MAIN_SHA
    assert repo.get_branch("dev").commit.sha == DEV_SHA
    assert repo.get_commit("main").sha == MAIN_SHA
    assert repo.get_git_ref("heads/dev").object.sha == DEV_SHA
    commit = repo.get_commit(MAIN_SHA)
    assert commit.get_combined_status().state == "failure"
    runs = list(commit.get_check_runs())
    assert [(run.name, run.conclusion) for run in runs] == [("ci", "failure")]
    assert g.get_rate_limit().resources.core.limit == 5000
    with pytest.raises(github.UnknownObjectException):
        g.get_repo("acme/missing")
    with pytest.raises(github.GithubException) as excinfo:
        repo.get_branch("missing")
    assert excinfo.value.status == 404


def test_default_checks_are_pending_and_empty(gh: GitHubStandIn, http: requests.Session) -> None:
    status = http.get(f"{gh.url}/repos/acme/web/commits/main/status").json()
    assert (status["state"], status["total_count"], status["statuses"]) == ("pending", 0, [])
    runs = http.get(f"{gh.url}/repos/acme/web/commits/main/check-runs").json()
    assert runs == {"total_count": 0, "check_runs": []}


def test_checks_are_paged_like_github(gh: GitHubStandIn, http: requests.Session) -> None:
    gh.set_checks("acme/web", MAIN_SHA, "success", names=[f"job{i:02}" for i in range(45)])
    gh.set_checks("acme/web", MAIN_SHA, "neutral", names=["lint"], kind="run")
    url = f"{gh.url}/repos/acme/web/commits/main/check-runs"
    first = http.get(url)  # GitHub's default page size is 30
    assert first.json()["total_count"] == 46 and len(first.json()["check_runs"]) == 30
    assert 'page=2>; rel="next"' in first.headers["Link"]
    last = http.get(url, params={"per_page": 100, "page": 1})
    assert len(last.json()["check_runs"]) == 46 and "Link" not in last.headers
    assert {r["conclusion"] for r in last.json()["check_runs"]} == {"success", "neutral"}
    status = http.get(f"{gh.url}/repos/acme/web/commits/main/status", params={"page": 2}).json()
    assert status["total_count"] == 45 and len(status["statuses"]) == 15  # runs-only: no status
    with pytest.raises(ValueError, match="kind='run'"):
        gh.set_checks("acme/web", MAIN_SHA, "skipped")


# ---- ETags and conditional requests ------------------------------------------------------------

SHA_ACCEPT = {"Accept": "application/vnd.github.sha"}


def test_bare_sha_etag_and_free_304(gh: GitHubStandIn, http: requests.Session) -> None:
    url = f"{gh.url}/repos/acme/web/commits/main"
    r = http.get(url, headers=SHA_ACCEPT)
    assert r.status_code == 200
    assert r.text == MAIN_SHA
    assert r.headers["ETag"] == f'"{MAIN_SHA}"'
    remaining = int(r.headers["x-ratelimit-remaining"])

    for tag in (f'"{MAIN_SHA}"', f'W/"{MAIN_SHA}"'):
        r = http.get(url, headers={**SHA_ACCEPT, "If-None-Match": tag})
        assert r.status_code == 304
        assert r.content == b""
        assert int(r.headers["x-ratelimit-remaining"]) == remaining

    new_sha = gh.set_branch("acme/web", "main")
    r = http.get(url, headers={**SHA_ACCEPT, "If-None-Match": f'"{MAIN_SHA}"'})
    assert r.status_code == 200
    assert r.text == new_sha
    assert int(r.headers["x-ratelimit-remaining"]) == remaining - 1

    r = http.get(url, headers={"Accept": "application/vnd.github.v3.sha"})
    assert r.text == new_sha

    stats = gh.stats()
    assert stats["not_modified"] == 2
    assert stats["by_token"][TOKEN]["not_modified"] == 2
    assert stats["by_token"][TOKEN]["points"]["core"] == 3
    assert stats["by_route"]["rest:commits"] == 5


def test_anonymous_304_still_costs(gh: GitHubStandIn) -> None:
    url = f"{gh.url}/repos/acme/web/commits/main"
    first = requests.get(url, headers=SHA_ACCEPT)
    again = requests.get(url, headers={**SHA_ACCEPT, "If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304
    assert int(again.headers["x-ratelimit-remaining"]) == 58


def test_json_etag_304_and_change(gh: GitHubStandIn, http: requests.Session) -> None:
    url = f"{gh.url}/repos/acme/web/branches/main"
    r = http.get(url)
    etag = r.headers["ETag"]
    r2 = http.get(url, headers={"If-None-Match": etag})
    assert r2.status_code == 304
    assert r2.headers["ETag"] == etag
    assert r2.headers["x-ratelimit-used"] == "1"
    new_sha = gh.set_branch("acme/web", "main")
    r3 = http.get(url, headers={"If-None-Match": etag})
    assert r3.status_code == 200
    assert r3.json()["commit"]["sha"] == new_sha
    assert r3.json()["commit"]["parents"][0]["sha"] == MAIN_SHA
    # ETags depend on the token
    gh.add_token("other")
    r4 = requests.get(url, headers={"Authorization": "Bearer other"})
    assert r4.headers["ETag"] != r3.headers["ETag"]


# ---- branch lifecycle --------------------------------------------------------------------------


def test_renamed_branch_redirects(gh: GitHubStandIn, http: requests.Session) -> None:
    gh.rename_branch("acme/web", "main", "trunk")
    r = http.get(f"{gh.url}/repos/acme/web/branches/main", allow_redirects=False)
    assert r.status_code == 301
    assert r.headers["Location"] == f"{gh.url}/repos/acme/web/branches/trunk"
    assert rest_schema_errors("repos/get-branch", 301, r.json()) == []
    followed = http.get(f"{gh.url}/repos/acme/web/branches/main")
    assert followed.status_code == 200
    assert followed.json()["name"] == "trunk"
    assert followed.json()["commit"]["sha"] == MAIN_SHA
    assert http.get(f"{gh.url}/repos/acme/web").json()["default_branch"] == "trunk"
    assert pygithub(gh).get_repo("acme/web").get_branch("main").name == "trunk"
    # A new branch with the old name wins over the redirect.
    gh.set_branch("acme/web", "main", DEV_SHA)
    assert http.get(f"{gh.url}/repos/acme/web/branches/main").json()["name"] == "main"


def test_deleted_branch_and_missing_repo(gh: GitHubStandIn, http: requests.Session) -> None:
    gh.delete_branch("acme/web", "dev")
    r = http.get(f"{gh.url}/repos/acme/web/branches/dev")
    assert r.status_code == 404
    assert r.json()["message"] == "Branch not found"
    r = http.get(f"{gh.url}/repos/acme/web/commits/dev", headers=SHA_ACCEPT)
    assert r.status_code == 422
    gh.remove_repo("acme/web")
    assert http.get(f"{gh.url}/repos/acme/web").status_code == 404


def test_branch_names_with_slashes_and_case_insensitive_repo(
    gh: GitHubStandIn, http: requests.Session
) -> None:
    sha = gh.set_branch("acme/web", "release/v1.2")
    assert http.get(f"{gh.url}/repos/acme/web/branches/release/v1.2").json()["commit"]["sha"] == sha
    r = http.get(f"{gh.url}/repos/ACME/Web/commits/release/v1.2", headers=SHA_ACCEPT)
    assert r.text == sha
    assert http.get(f"{gh.url}/repos/acme/web/commits/release/v1.2/status").json()["sha"] == sha


def test_private_repo_hidden_from_anonymous(gh: GitHubStandIn, http: requests.Session) -> None:
    gh.add_repo("acme/secret", private=True)
    assert requests.get(f"{gh.url}/repos/acme/secret").status_code == 404
    r = http.get(f"{gh.url}/repos/acme/secret")
    assert r.status_code == 200
    assert r.json()["private"] is True


# ---- auth and rate limits ----------------------------------------------------------------------


def test_rate_limit_headers_on_every_response(gh: GitHubStandIn, http: requests.Session) -> None:
    for path in ("/repos/acme/web", "/repos/acme/nope", "/rate_limit"):
        r = http.get(gh.url + path)
        for header in ("limit", "remaining", "used", "reset", "resource"):
            assert f"x-ratelimit-{header}" in r.headers, (path, header)
    assert r.headers["x-ratelimit-used"] == "2"  # /rate_limit is free
    assert r.json()["resources"]["core"]["used"] == 2
    assert r.json()["rate"]["remaining"] == 4998


def test_bad_credentials(gh: GitHubStandIn) -> None:
    r = requests.get(f"{gh.url}/repos/acme/web", headers={"Authorization": "token wrong"})
    assert r.status_code == 401
    assert r.json()["message"] == "Bad credentials"
    assert "documentation_url" in r.json()
    with pytest.raises(github.BadCredentialsException):
        pygithub(gh, "wrong").get_repo("acme/web")


def test_primary_limit_exhaustion(gh: GitHubStandIn, http: requests.Session) -> None:
    gh.set_remaining(TOKEN, 1)
    assert http.get(f"{gh.url}/repos/acme/web").status_code == 200
    r = http.get(f"{gh.url}/repos/acme/web")
    assert r.status_code == 403
    assert r.headers["x-ratelimit-remaining"] == "0"
    assert r.json()["message"].startswith("API rate limit exceeded for")
    assert http.get(f"{gh.url}/rate_limit").status_code == 200
    with pytest.raises(github.RateLimitExceededException):
        pygithub(gh).get_repo("acme/web")
    assert gh.stats()["rate_limited"] == 2
    assert gh.rate_limit(TOKEN)["remaining"] == 0


def test_rate_limit_429_and_custom_limits() -> None:
    with GitHubStandIn(rate_limit_status=429, reset_epoch=int(time.time()) + 60) as gh:
        gh.add_repo("o/r")
        gh.add_token("small", limit=2)
        headers = {"Authorization": "token small"}
        statuses = [requests.get(f"{gh.url}/repos/o/r", headers=headers) for _ in range(3)]
        assert [r.status_code for r in statuses] == [200, 200, 429]
        assert statuses[0].headers["x-ratelimit-limit"] == "2"
        assert statuses[0].headers["x-ratelimit-reset"] == str(gh.reset_epoch)


def test_anonymous_limit_is_60(gh: GitHubStandIn) -> None:
    with requests.Session() as anon:
        for i in range(60):
            r = anon.get(f"{gh.url}/repos/acme/web/commits/main", headers=SHA_ACCEPT)
            assert r.status_code == 200, i
        assert r.headers["x-ratelimit-limit"] == "60"
        assert r.headers["x-ratelimit-remaining"] == "0"
        r = anon.get(f"{gh.url}/repos/acme/web")
    assert r.status_code == 403
    assert r.json()["message"].startswith("API rate limit exceeded for 127.0.0.1.")
    assert gh.stats()["by_token"]["anonymous:127.0.0.1"]["requests"] == 61


# ---- faults, secondary limit, latency, concurrency --------------------------------------------


def test_fault_injection_5xx(gh: GitHubStandIn, http: requests.Session) -> None:
    gh.fail_next(2, status=502)
    url = f"{gh.url}/repos/acme/web/branches/main"
    assert [http.get(url).status_code for _ in range(3)] == [502, 502, 200]
    gh.fail_next(1, status=503, path_contains="/commits/")
    assert http.get(url).status_code == 200
    r = http.get(f"{gh.url}/repos/acme/web/commits/main", headers=SHA_ACCEPT)
    assert r.status_code == 503
    assert r.json()["message"] == "Service Unavailable"
    assert gh.stats()["faults_injected"] == 3
    assert gh.stats()["points"]["core"] == 2  # failed requests are not charged


def test_fault_injection_403_retry_after(gh: GitHubStandIn, http: requests.Session) -> None:
    gh.fail_next(status=403, retry_after=1)
    r = http.get(f"{gh.url}/repos/acme/web")
    assert r.status_code == 403
    assert r.headers["retry-after"] == "1"
    assert r.json()["message"].startswith("You have exceeded a secondary rate limit")
    assert int(r.headers["x-ratelimit-remaining"]) > 0
    assert http.get(f"{gh.url}/repos/acme/web").status_code == 200


def test_secondary_limit_on_concurrency() -> None:
    with GitHubStandIn(
        tokens=[TOKEN],
        max_concurrent=2,
        latency_median_ms=500,
        latency_sigma=0,
        secondary_retry_after_s=7,
    ) as gh:
        gh.add_repo("o/r")
        results: list[requests.Response] = []
        lock = threading.Lock()

        barrier = threading.Barrier(6)

        def call() -> None:
            barrier.wait()
            r = requests.get(f"{gh.url}/repos/o/r", headers={"Authorization": f"token {TOKEN}"})
            with lock:
                results.append(r)

        threads = [threading.Thread(target=call) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        limited = [r for r in results if r.status_code == 403]
        assert len(limited) >= 3
        assert sum(r.status_code == 200 for r in results) >= 1
        assert all(r.headers["retry-after"] == "7" for r in limited)
        assert "secondary rate limit" in limited[0].json()["message"]
        assert gh.stats()["secondary_limited"] == len(limited)


def test_many_concurrent_connections_and_latency() -> None:
    with GitHubStandIn(
        tokens=[TOKEN], max_concurrent=1000, latency_median_ms=2000, latency_sigma=0
    ) as gh:
        gh.add_repo("o/r")
        outcomes: list[int | str] = []
        lock = threading.Lock()
        barrier = threading.Barrier(150)

        def call() -> None:
            barrier.wait()
            try:
                outcome: int | str = requests.get(
                    f"{gh.url}/repos/o/r/commits/main", headers=SHA_ACCEPT, timeout=30
                ).status_code
            except requests.RequestException as exc:
                outcome = repr(exc)
            with lock:
                outcomes.append(outcome)

        threads = [threading.Thread(target=call) for _ in range(150)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # The anonymous limit is 60/h per IP: 60 succeed, the rest are rate limited.
        assert sorted(outcomes, key=str) == [200] * 60 + [403] * 90
        # each answer takes 2 s, far longer than 150 released threads take to send: most overlap
        assert gh.stats()["max_in_flight"] > 100


def test_latency_is_lognormal_around_median() -> None:
    with GitHubStandIn(tokens=[TOKEN], latency_median_ms=40, latency_sigma=0.5, seed=1) as gh:
        gh.add_repo("o/r")
        with requests.Session() as s:
            durations = []
            for _ in range(15):
                t0 = time.monotonic()
                s.get(f"{gh.url}/rate_limit")
                durations.append(time.monotonic() - t0)
        durations.sort()
        assert 0.02 < durations[len(durations) // 2] < 0.3
        assert durations[-1] > durations[0] * 1.5


def test_head_and_misc_methods(gh: GitHubStandIn, http: requests.Session) -> None:
    r = http.head(f"{gh.url}/repos/acme/web")
    assert r.status_code == 200
    assert r.content == b""
    assert int(r.headers["Content-Length"]) > 100
    assert http.delete(f"{gh.url}/repos/acme/web").status_code == 404
    assert http.get(f"{gh.url}/graphql").status_code == 404


# ---- GraphQL -----------------------------------------------------------------------------------

THREE_ALIASES = """
query {
  a: repository(owner: "acme", name: "web") {
    nameWithOwner
    defaultBranchRef { name target { oid } }
  }
  b: repository(owner: "acme", name: "gone") {
    nameWithOwner
  }
  c: repository(owner: "acme", name: "api") {
    name
    owner { login }
    ref(qualifiedName: "refs/heads/main") {
      name
      prefix
      target { __typename ... on Commit { oid committedDate messageHeadline url } }
    }
  }
}
"""


def test_graphql_partial_success(gh: GitHubStandIn, http: requests.Session) -> None:
    api_sha = random_sha()
    gh.add_repo("acme/api", {"main": api_sha})
    body = graphql(http, gh, THREE_ALIASES)
    data = body["data"]
    assert data["a"] == {
        "nameWithOwner": "acme/web",
        "defaultBranchRef": {"name": "main", "target": {"oid": MAIN_SHA}},
    }
    assert data["b"] is None
    ref = data["c"]["ref"]
    assert (data["c"]["name"], data["c"]["owner"]["login"]) == ("api", "acme")
    assert (ref["name"], ref["prefix"]) == ("main", "refs/heads/")
    assert ref["target"]["__typename"] == "Commit"
    assert ref["target"]["oid"] == api_sha
    assert ref["target"]["url"].endswith(f"/acme/api/commit/{api_sha}")
    assert ref["target"]["committedDate"].endswith("Z")
    assert body["errors"] == [
        {
            "type": "NOT_FOUND",
            "path": ["b"],
            "locations": [{"line": 7, "column": 3}],
            "message": "Could not resolve to a Repository with the name 'acme/gone'.",
        }
    ]
    assert gh.graphql_queries == [THREE_ALIASES]


def test_graphql_via_pygithub(gh: GitHubStandIn) -> None:
    g = pygithub(gh)
    query = """
    query($owner: String!, $name: String!, $branch: String!) {
      repository(owner: $owner, name: $name) { ref(qualifiedName: $branch) { target { oid } } }
      rateLimit { cost remaining }
    }
    """
    headers, body = g.requester.graphql_query(
        query, {"owner": "acme", "name": "web", "branch": "dev"}
    )
    assert body["data"]["repository"]["ref"]["target"]["oid"] == DEV_SHA
    assert body["data"]["rateLimit"] == {"cost": 1, "remaining": 4999}
    assert headers["x-ratelimit-resource"] == "graphql"
    # PyGithub raises on any `errors`, even alongside partial data.
    with pytest.raises(github.UnknownObjectException) as excinfo:
        g.requester.graphql_query(THREE_ALIASES.replace('"api"', '"web"'), {})
    assert excinfo.value.data["data"]["a"]["nameWithOwner"] == "acme/web"


@pytest.mark.parametrize("qualified", ["dev", "heads/dev", "refs/heads/dev", "nope", "refs/tags/x"])
def test_graphql_ref_qualified_names(
    gh: GitHubStandIn, http: requests.Session, qualified: str
) -> None:
    query = 'query($q: String!) { r: repository(owner: "acme", name: "web") { ref(qualifiedName: $q) { name target { oid } } } }'  # noqa: E501
    ref = graphql(http, gh, query, q=qualified)["data"]["r"]["ref"]
    if "dev" in qualified:
        assert ref == {"name": "dev", "target": {"oid": DEV_SHA}}
    else:
        assert ref is None


def test_graphql_object_and_refs(gh: GitHubStandIn, http: requests.Session) -> None:
    query = """{ repository(owner: "acme", name: "web") {
      main: object(expression: "main") { oid }
      sha: object(oid: "DEV_SHA") { ... on Commit { messageHeadline } }
      missing: object(expression: "main:README.md") { oid }
      refs(refPrefix: "refs/heads/", first: 1) {
        totalCount nodes { name } pageInfo { hasNextPage endCursor }
      }
    } }""".replace("DEV_SHA", DEV_SHA)
    repo = graphql(http, gh, query)["data"]["repository"]
    assert repo["main"] == {"oid": MAIN_SHA}
    assert repo["sha"]["messageHeadline"].startswith("Update dev")
    assert repo["missing"] is None
    assert repo["refs"]["totalCount"] == 2
    assert repo["refs"]["nodes"] == [{"name": "dev"}]
    assert repo["refs"]["pageInfo"]["hasNextPage"] is True


def test_graphql_invalid_query_errors(gh: GitHubStandIn, http: requests.Session) -> None:
    body = graphql(http, gh, '{ repository(owner: "acme", name: "web") { noSuchField } }')
    assert "data" not in body
    assert "noSuchField" in body["errors"][0]["message"]
    assert body["errors"][0]["locations"]
    body = graphql(http, gh, "{ repository(owner: ")
    assert body["errors"][0]["message"].startswith("Syntax Error")
    assert gh.rate_limit(TOKEN, "graphql")["used"] == 0


def test_graphql_unmodelled_field_fails_loudly(gh: GitHubStandIn, http: requests.Session) -> None:
    body = graphql(http, gh, '{ repository(owner: "acme", name: "web") { diskUsage } }')
    assert "does not model Repository.diskUsage" in body["errors"][0]["message"]


def test_graphql_cost_model(gh: GitHubStandIn, http: requests.Session) -> None:
    for i in range(101):
        gh.add_repo(f"fleet/app{i}")

    def aliases(n: int) -> str:
        fields = " ".join(
            f'r{i}: repository(owner: "fleet", name: "app{i}") {{ defaultBranchRef {{ target {{ oid }} }} }}'  # noqa: E501
            for i in range(n)
        )
        return "{ " + fields + " rateLimit { cost used nodeCount } }"

    body = graphql(http, gh, aliases(100))
    assert "errors" not in body
    assert body["data"]["rateLimit"] == {"cost": 1, "used": 1, "nodeCount": 100}
    body = graphql(http, gh, aliases(101))
    assert body["data"]["rateLimit"]["cost"] == 2
    assert body["data"]["rateLimit"]["used"] == 3
    dry = graphql(http, gh, aliases(3).replace("rateLimit {", "rateLimit(dryRun: true) {"))
    assert dry["data"]["rateLimit"]["used"] == 3
    connections = '{ repository(owner: "acme", name: "web") { refs(refPrefix: "refs/heads/", first: 100) { nodes { name } } } rateLimit { cost } }'  # noqa: E501
    assert graphql(http, gh, connections)["data"]["rateLimit"]["cost"] == 1
    stats = gh.stats()
    assert stats["by_route"]["graphql"] == 4
    assert stats["points"]["graphql"] == 4
    assert stats["graphql_queries"] == 4


def test_graphql_rate_limit_and_auth(gh: GitHubStandIn, http: requests.Session) -> None:
    r = requests.post(f"{gh.url}/graphql", json={"query": "{ rateLimit { cost } }"})
    assert r.status_code == 401
    gh.set_remaining(TOKEN, 0, resource="graphql")
    r = http.post(f"{gh.url}/api/graphql", json={"query": "{ rateLimit { cost } }"})
    assert r.status_code == 200
    assert r.headers["x-ratelimit-remaining"] == "0"
    assert r.json()["errors"][0]["type"] == "RATE_LIMITED"
    # The core bucket is separate.
    assert http.get(f"{gh.url}/repos/acme/web").status_code == 200


def test_stats_reset(gh: GitHubStandIn, http: requests.Session) -> None:
    http.get(f"{gh.url}/repos/acme/web")
    assert gh.stats()["requests"] == 1
    gh.reset_stats()
    stats = gh.stats()
    assert stats["requests"] == 0
    assert stats["by_route"] == {}
    assert gh.graphql_queries == []
