"""REST routing: a table of routes, each an OpenAPI operation of the subset, and their handlers."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from testkit.github import objects
from testkit.github.replies import DOCS, Headers, Reply, error, json_ok, sha_reply
from testkit.github.state import Repo, links, resolve_commit

if TYPE_CHECKING:
    from testkit.github.ratelimits import Caller, RateLimits

Json = Any

#: Path parameters whose values may contain "/" (branch names, refs such as heads/main).
SLASHED_PARAMS = frozenset({"branch", "ref", "basehead"})
_REPO_PREFIX = "/repos/{owner}/{repo}"
_SHA_MEDIA_RE = re.compile(r"application/vnd\.github(?:\.v3)?[.+]sha\b")
_PARAM_RE = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class RestRequest:
    """One REST call as a handler sees it (handlers run under the stand-in's lock)."""

    route: Route
    api: str  # the stand-in's base URL, for the URLs inside bodies
    params: Mapping[str, str]  # path parameters, percent-decoded
    query: Mapping[str, list[str]]
    headers: Headers
    body: bytes
    caller: Caller
    limits: RateLimits
    found_repo: Repo | None  # the {owner}/{repo} of a /repos/... route (visible to the caller)

    @property
    def repo(self) -> Repo:
        if self.found_repo is None:
            raise LookupError(f"{self.route.template} is not a repository route")
        return self.found_repo

    def ok(self, obj: Json) -> Reply:
        """200 with obj, validated against the operation's schema, with ETag/304 support."""
        return json_ok(obj, self.route.operation_id, self.caller.key, self.headers)

    def answer(self, status: int, obj: Json) -> Reply:
        """Any status with obj (e.g. 201 for a POST), validated against that status's schema."""
        return Reply(status, obj, schema_op=self.route.operation_id)

    def error(self, status: int, message: str) -> Reply:
        """GitHub's error body for this operation (validated against its schema too)."""
        return Reply(
            status, error(status, message, self.route.doc), schema_op=self.route.operation_id
        )


Handler = Callable[[RestRequest], Reply]


@dataclass(frozen=True)
class Route:
    """A REST endpoint: `template` and `operation_id` exactly as in rest-openapi-subset.json."""

    name: str  # the key in stats()["by_route"]
    method: str
    template: str
    operation_id: str
    doc: str
    handler: Handler
    charged: bool = True  # costs one core point (GET /rate_limit is free)
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts: list[str] = []
        last = 0
        for m in _PARAM_RE.finditer(self.template):
            parts.append(re.escape(self.template[last : m.start()]))
            name = m.group(1)
            parts.append(f"(?P<{name}>.+?)" if name in SLASHED_PARAMS else f"(?P<{name}>[^/]+)")
            last = m.end()
        parts.append(re.escape(self.template[last:]))
        object.__setattr__(self, "pattern", re.compile("^" + "".join(parts) + "/?$"))

    @property
    def specificity(self) -> int:
        """Literal characters in the template: the most specific matching route wins."""
        return len(_PARAM_RE.sub("", self.template))

    @property
    def repo_scoped(self) -> bool:
        return self.template.startswith(_REPO_PREFIX)


ROUTES: list[Route] = []


def route(
    name: str, method: str, template: str, operation_id: str, doc: str, *, charged: bool = True
) -> Callable[[Handler], Handler]:
    """Register the decorated handler for `method template` (see the package docstring)."""

    def register(handler: Handler) -> Handler:
        ROUTES.append(Route(name, method, template, operation_id, doc, handler, charged))
        return handler

    return register


def match(method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    """The route for a request (HEAD is GET without a body) and its decoded path parameters."""
    wanted = "GET" if method == "HEAD" else method
    best: tuple[Route, dict[str, str]] | None = None
    for candidate in ROUTES:
        if candidate.method != wanted:
            continue
        m = candidate.pattern.match(path)
        if m is not None and (best is None or candidate.specificity > best[0].specificity):
            params = {k: urllib.parse.unquote(v) for k, v in m.groupdict().items()}
            best = (candidate, params)
    return best


def answer(
    found: tuple[Route, dict[str, str]] | None,
    *,
    api: str,
    query: Mapping[str, list[str]],
    headers: Headers,
    body: bytes,
    caller: Caller,
    limits: RateLimits,
    repos: Callable[[str, str], Repo | None],
) -> Reply:
    """Run the route's handler; 404 for no route, or a repository the caller cannot see."""
    if found is None:
        return Reply(404, error(404, "Not Found", DOCS))
    r, params = found
    repo = None
    if r.repo_scoped:
        repo = repos(params["owner"], params["repo"])
        if repo is None or (repo.private and caller.token is None):
            return Reply(404, error(404, "Not Found", r.doc), schema_op=r.operation_id)
    request = RestRequest(r, api, params, query, headers, body, caller, limits, repo)
    return r.handler(request)


# ---- handlers ---------------------------------------------------------------------------------

_DOCS = "https://docs.github.com/rest"


@route("rest:repo", "GET", _REPO_PREFIX, "repos/get", f"{_DOCS}/repos/repos#get-a-repository")
def _get_repository(req: RestRequest) -> Reply:
    repo = req.repo
    if repo.full_cache is None or repo.full_cache.get("url", "").split("/repos/")[0] != req.api:
        repo.full_cache = objects.full_repository(repo, req.api)
    return req.ok(repo.full_cache)


@route(
    "rest:branch",
    "GET",
    f"{_REPO_PREFIX}/branches/{{branch}}",
    "repos/get-branch",
    f"{_DOCS}/branches/branches#get-a-branch",
)
def _get_branch(req: RestRequest) -> Reply:
    repo, branch = req.repo, req.params["branch"]
    sha = repo.branches.get(branch)
    if sha is not None:
        return req.ok(objects.branch_object(repo, branch, sha, req.api))
    target = repo.renamed.get(branch)
    if target is None or target not in repo.branches:
        return req.error(404, "Branch not found")
    location = (
        f"{req.api}/repos/{objects.quote(repo.owner)}/{objects.quote(repo.name)}"
        f"/branches/{objects.quote(target)}"
    )
    return Reply(
        301,
        {"message": "Moved Permanently", "url": location, "documentation_url": req.route.doc},
        headers=[("Location", location)],
        schema_op=req.route.operation_id,
    )


@route(
    "rest:git-ref",
    "GET",
    f"{_REPO_PREFIX}/git/ref/{{ref}}",
    "git/get-ref",
    f"{_DOCS}/git/refs#get-a-reference",
)
def _get_git_ref(req: RestRequest) -> Reply:
    ref = req.params["ref"]
    branch = ref[6:] if ref.startswith("heads/") else None
    sha = req.repo.branches.get(branch) if branch else None
    if branch is None or sha is None:
        return req.error(404, "Not Found")
    return req.ok(objects.git_ref(req.repo, branch, sha, req.api))


def _commit_sha(req: RestRequest, missing_status: int) -> str | Reply:
    """The SHA {ref} names, or the error reply (409 empty repository, else missing_status)."""
    repo, ref = req.repo, req.params["ref"]
    if not repo.branches and not repo.commits:
        return req.error(409, "Git Repository is empty.")
    sha = resolve_commit(repo, ref)
    if sha is not None:
        return sha
    if missing_status == 422:
        return req.error(422, f"No commit found for SHA: {ref}")
    return req.error(404, "Not Found")


@route(
    "rest:commits",
    "GET",
    f"{_REPO_PREFIX}/commits/{{ref}}",
    "repos/get-commit",
    f"{_DOCS}/commits/commits#get-a-commit",
)
def _get_commit(req: RestRequest) -> Reply:
    sha = _commit_sha(req, 422)
    if isinstance(sha, Reply):
        return sha
    if _SHA_MEDIA_RE.search(req.headers.get("Accept") or ""):
        return sha_reply(sha, req.headers)
    obj = objects.commit_object(req.repo, req.repo.commits[sha], req.api)
    obj["stats"] = {"total": 0, "additions": 0, "deletions": 0}
    obj["files"] = []
    return req.ok(obj)


@route(
    "rest:status",
    "GET",
    f"{_REPO_PREFIX}/commits/{{ref}}/status",
    "repos/get-combined-status-for-ref",
    f"{_DOCS}/commits/statuses#get-the-combined-status-for-a-specific-reference",
)
def _get_combined_status(req: RestRequest) -> Reply:
    sha = _commit_sha(req, 404)
    if isinstance(sha, Reply):
        return sha
    return _paged(req, sha, "status", objects.combined_status(req.repo, sha, req.api, req.query))


@route(
    "rest:check-runs",
    "GET",
    f"{_REPO_PREFIX}/commits/{{ref}}/check-runs",
    "checks/list-for-ref",
    f"{_DOCS}/checks/runs#list-check-runs-for-a-git-reference",
)
def _list_check_runs(req: RestRequest) -> Reply:
    sha = _commit_sha(req, 404)
    if isinstance(sha, Reply):
        return sha
    return _paged(req, sha, "check-runs", objects.check_runs(req.repo, sha, req.api, req.query))


def _paged(req: RestRequest, sha: str, what: str, obj: Json) -> Reply:
    """A page of a commit's statuses or check runs, with GitHub's Link header."""
    reply = req.ok(obj)
    url = f"{req.api}/repos/{req.repo.full_name}/commits/{sha}/{what}"
    link = links(url, int(obj["total_count"]), req.query)
    if link and reply.status == 200:
        reply.headers.append(("Link", link))
    return reply


@route(
    "rest:compare",
    "GET",
    f"{_REPO_PREFIX}/compare/{{basehead}}",
    "repos/compare-commits-with-basehead",
    f"{_DOCS}/commits/commits#compare-two-commits",
)
def _compare(req: RestRequest) -> Reply:
    basehead = req.params["basehead"]
    base_ref, _, head_ref = basehead.partition("...")
    base, head = resolve_commit(req.repo, base_ref), resolve_commit(req.repo, head_ref)
    try:  # the compare endpoint pages its commits 250 at a time by default
        per_page = max(1, min(int((req.query.get("per_page") or ["250"])[0]), 250))
        page = max(int((req.query.get("page") or ["1"])[0]), 1)
    except ValueError:
        per_page, page = 250, 1
    body = (
        objects.comparison(req.repo, base, head, basehead, req.api, page=page, per_page=per_page)
        if base and head
        else None
    )
    return req.error(404, "Not Found") if body is None else req.ok(body)


@route(
    "rest:rate_limit",
    "GET",
    "/rate_limit",
    "rate-limit/get",
    f"{_DOCS}/rate-limit/rate-limit#get-rate-limit-status-for-the-authenticated-user",
    charged=False,
)
def _get_rate_limit(req: RestRequest) -> Reply:
    body, core = req.limits.rate_limit_body(req.caller)
    return Reply(200, body, schema_op=req.route.operation_id, bucket=core)
