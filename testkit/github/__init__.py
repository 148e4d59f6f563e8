"""Loopback stand-in for api.github.com (a REST subset and GraphQL) for tests and the benchmark.

Every answer is validated against ../shared/github (rest-openapi-subset.json for REST bodies,
graphql-schema.json for queries); a body that does not match its schema becomes a 500 and lands in
`GitHubStandIn.schema_violations`, which the fixtures assert empty.

Modules, by concern:
    state       repositories, branches, commits, checks; the methods tests use to set them
    git         a real git object store (blobs, trees, commits with git's SHA-1 ids)
    gitstate    files on branches, protected branches, push access, pull requests
    ratelimits  tokens and callers, primary buckets, secondary limits, injected faults
    stats       counters (by route, status, caller; points; in flight) and the GraphQL log
    schemas     loading ../shared/github: REST response validators, the GraphQL schema
    replies     the Reply value, GitHub's error body, ETags and 304s
    objects     REST JSON shapes built from the state
    rest        the REST route table and its handlers
    gitrest     the write routes: Contents API, Git data API, pull requests
    graphql     the GraphQL endpoint, its cost model and resolvers
    server      the HTTP server and GitHubStandIn (lifecycle, dispatch, headers, validation)

Adding a REST endpoint (say GET /repos/{owner}/{repo}/deployments, the Deployments API):
 1. The operation must be in ../shared/github/rest-openapi-subset.json: its method, path template,
    operationId and a JSON schema for each status you answer with. The stand-in validates every
    reply against that schema (errors without one against basic-error), so it cannot drift from
    GitHub's documented shapes.
 2. Keep any new state in state.py (a dataclass field on Repo plus a public RepoState method for
    tests to set it, taking self._lock), and build the response JSON in objects.py.
 3. Register a handler in rest.py with the path template and operationId exactly as in the
    document::

        @route(
            "rest:deployments",
            "GET",
            f"{_REPO_PREFIX}/deployments",
            "repos/list-deployments",
            f"{_DOCS}/deployments/deployments#list-deployments",
        )
        def _list_deployments(req: RestRequest) -> Reply:
            ...  # req.repo, req.params, req.query, req.body (for POST)
            return req.ok(objects.deployments(req.repo, req.api, req.query))

    The handler runs under the stand-in's lock, after the caller was charged one core point and
    the repository was found (a missing or, for anonymous callers, private one is a 404). Path
    parameters that may contain "/" are listed in rest.SLASHED_PARAMS; of several matching
    templates the most specific wins (see rest:compare for a {basehead} route, _paged for a Link
    header). POST handlers read req.body and answer with e.g. req.answer(201, obj). The route's
    name is the key of stats()["by_route"].
 4. tests/integration/test_github_standin.py checks that every route's method, template and
    operationId exist in the document; add a case for the new body to its REST_CASES
    (schema-checked) and a test of its behaviour.
"""

from testkit.github.gitstate import Pull
from testkit.github.ratelimits import Caller
from testkit.github.rest import ROUTES, RestRequest, Route, route
from testkit.github.schemas import (
    load_graphql_schema,
    openapi_operation,
    preload,
    rest_schema_errors,
    shared_dir,
)
from testkit.github.server import GitHubStandIn
from testkit.github.state import CheckState, random_sha
from testkit.github.stats import CallerStats, StandInStats

__all__ = [
    "ROUTES",
    "Caller",
    "CallerStats",
    "CheckState",
    "GitHubStandIn",
    "Pull",
    "RestRequest",
    "Route",
    "StandInStats",
    "load_graphql_schema",
    "openapi_operation",
    "preload",
    "random_sha",
    "rest_schema_errors",
    "route",
    "shared_dir",
]
