"""REST routing: a table of routes, each an OpenAPI operation of the subset, and their handlers."""

from __future__ import annotations

import itertools
import json
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from testkit.github import objects
from testkit.github.replies import DOCS, Headers, Reply, error, json_ok, sha_reply
from testkit.github.schemas import rest_validators
from testkit.github.state import (
    Deployment,
    DeploymentStatus,
    Repo,
    iso,
    links,
    page,
    resolve_commit,
)

if TYPE_CHECKING:
    from testkit.github.ratelimits import Caller, RateLimits

Json = Any

#: Request bodies the stand-in refused (schema violations); the fixtures assert it stays empty.
REQUEST_VIOLATIONS: list[str] = []

#: Path parameters whose values may contain "/" (branch names, refs such as heads/main, file
#: paths).
SLASHED_PARAMS = frozenset({"branch", "ref", "basehead", "path"})
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


# ---- Deployments ------------------------------------------------------------------------------

_DEPLOYMENT_IDS = itertools.count(2_000_001)
_DEPLOY_DOCS = f"{_DOCS}/deployments/deployments"


def _json_body(req: RestRequest) -> Json | Reply:
    """The request's JSON body checked against the operation's request schema (GitHub: 400
    for bad JSON, 422 for a body the schema rejects)."""
    try:
        body = json.loads(req.body or b"null")
    except ValueError:
        return req.error(400, "Problems parsing JSON")
    problems = rest_validators().request_errors(req.route.operation_id, body)
    if problems:
        REQUEST_VIOLATIONS.extend(problems)
        return req.error(422, "Invalid request.\n\n" + "\n".join(problems))
    return body


def _created(req: RestRequest, obj: Json) -> Reply:
    return Reply(201, obj, schema_op=req.route.operation_id)


@route(
    "rest:deployments",
    "GET",
    f"{_REPO_PREFIX}/deployments",
    "repos/list-deployments",
    f"{_DEPLOY_DOCS}#list-deployments",
)
def _list_deployments(req: RestRequest) -> Reply:
    repo = req.repo
    keys = ("sha", "ref", "task", "environment")
    wanted = {k: req.query[k][0] for k in keys if req.query.get(k)}
    found = [
        d
        for d in reversed(repo.deployments.values())
        if all(getattr(d, k) == v for k, v in wanted.items())
    ]
    shown, _, _ = page([objects.deployment_object(repo, d, req.api) for d in found], req.query)
    return req.ok(shown)


@route(
    "rest:deployments-create",
    "POST",
    f"{_REPO_PREFIX}/deployments",
    "repos/create-deployment",
    f"{_DEPLOY_DOCS}#create-a-deployment",
)
def _create_deployment(req: RestRequest) -> Reply:
    body = _json_body(req)
    if isinstance(body, Reply):
        return body
    repo = req.repo
    if "ref" not in body:
        return req.error(422, 'Invalid request.\n\n"ref" wasn\'t supplied.')
    sha = resolve_commit(repo, body["ref"])
    if sha is None:
        return req.error(422, f"No ref found for: {body['ref']}")
    contexts = body.get("required_contexts")
    checks = repo.checks.get(sha, [])
    if contexts != [] and any(
        c.state != "success" for c in checks if not contexts or c.name in contexts
    ):
        return req.error(409, "Conflict: Commit status checks failed for " + body["ref"] + ".")
    environment = body.get("environment", "production")
    deployment = Deployment(
        id=next(_DEPLOYMENT_IDS),
        sha=sha,
        ref=body["ref"],
        task=body.get("task", "deploy"),
        environment=environment,
        description=body.get("description", ""),
        payload=body.get("payload", {}),
        transient=bool(body.get("transient_environment", False)),
        production=bool(body.get("production_environment", environment == "production")),
        created_at=iso(time.time()),
    )
    repo.deployments[deployment.id] = deployment
    return _created(req, objects.deployment_object(repo, deployment, req.api))


def _deployment(req: RestRequest) -> Deployment | Reply:
    try:
        found = req.repo.deployments.get(int(req.params["deployment_id"]))
    except ValueError:
        found = None
    return req.error(404, "Not Found") if found is None else found


@route(
    "rest:deployment",
    "GET",
    f"{_REPO_PREFIX}/deployments/{{deployment_id}}",
    "repos/get-deployment",
    f"{_DEPLOY_DOCS}#get-a-deployment",
)
def _get_deployment(req: RestRequest) -> Reply:
    d = _deployment(req)
    if isinstance(d, Reply):
        return d
    return req.ok(objects.deployment_object(req.repo, d, req.api))


@route(
    "rest:deployment-statuses",
    "GET",
    f"{_REPO_PREFIX}/deployments/{{deployment_id}}/statuses",
    "repos/list-deployment-statuses",
    f"{_DOCS}/deployments/statuses#list-deployment-statuses",
)
def _list_deployment_statuses(req: RestRequest) -> Reply:
    d = _deployment(req)
    if isinstance(d, Reply):
        return d
    statuses = [
        objects.deployment_status_object(req.repo, d, s, req.api) for s in reversed(d.statuses)
    ]
    return req.ok(page(statuses, req.query)[0])


@route(
    "rest:deployment-statuses-create",
    "POST",
    f"{_REPO_PREFIX}/deployments/{{deployment_id}}/statuses",
    "repos/create-deployment-status",
    f"{_DOCS}/deployments/statuses#create-a-deployment-status",
)
def _create_deployment_status(req: RestRequest) -> Reply:
    d = _deployment(req)
    if isinstance(d, Reply):
        return d
    body = _json_body(req)
    if isinstance(body, Reply):
        return body
    now = iso(time.time())
    environment = body.get("environment") or (
        d.statuses[-1].environment if d.statuses else d.environment
    )
    status = DeploymentStatus(
        id=next(_DEPLOYMENT_IDS),
        state=body["state"],
        description=body.get("description", ""),
        environment=environment,
        log_url=body.get("log_url") or body.get("target_url") or "",
        environment_url=body.get("environment_url", ""),
        created_at=now,
    )
    d.statuses.append(status)
    if status.state == "success" and body.get("auto_inactive", True):
        for other in req.repo.deployments.values():  # what GitHub does with auto_inactive
            if (
                other is not d
                and other.environment == d.environment
                and not other.transient
                and not other.production
                and other.statuses
                and other.statuses[-1].state == "success"
            ):
                other.statuses.append(
                    DeploymentStatus(
                        next(_DEPLOYMENT_IDS), "inactive", "", other.environment, "", "", now
                    )
                )
    return _created(req, objects.deployment_status_object(req.repo, d, status, req.api))


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
