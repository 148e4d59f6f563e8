"""GraphQL: the endpoint (auth, parse/validate cache, points), the cost model and the resolvers."""

from __future__ import annotations

import base64
import json
import math
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from testkit.github.objects import HTML_BASE
from testkit.github.ratelimits import Caller, RateLimits
from testkit.github.replies import Reply
from testkit.github.schemas import load_graphql_schema
from testkit.github.state import Repo, RepoState, iso, node_id, resolve_commit, rollup_state
from testkit.github.stats import Counters

if TYPE_CHECKING:
    from graphql import DocumentNode, GraphQLResolveInfo, SelectionSetNode

Json = Any


class GraphQLApi(RepoState, RateLimits, Counters):
    """POST /graphql: executes validated queries against the state and charges their cost."""

    graphql_rate_limit_status: int

    def __init__(self) -> None:
        super().__init__()
        self._gql_docs: dict[str, DocumentNode | list[dict[str, Json]]] = {}
        # benchmarks only (bench.run --memo-answers): an answer is remembered for the state's
        # generation and given again, with the caller's rate limit, while nothing changed; the
        # stand-in's own CPU (graphql-core resolving every field) then weighs less on the
        # shared cores than GitHub's servers would. Tests leave it off.
        self.memo_answers = False
        self._answers: dict[tuple[str, str, object], tuple[int, dict[str, Json]]] = {}

    def _graphql(self, caller: Caller, body: bytes) -> Reply:
        if caller.token is None:
            return self._with_bucket(
                Reply(
                    401,
                    {
                        "message": "This endpoint requires you to be authenticated.",
                        "documentation_url": "https://docs.github.com/graphql/guides/"
                        "forming-calls-with-graphql#authenticating-with-graphql",
                    },
                ),
                caller,
            )
        reply = self._graphql_authed(caller, body)
        reply.resource = "graphql"
        reply.validate = False
        if reply.bucket is None:
            self._with_bucket(reply, caller)
        return reply

    def _graphql_authed(self, caller: Caller, body: bytes) -> Reply:
        from graphql import execute_sync

        try:
            payload = json.loads(body or b"null")
        except ValueError:
            return Reply(
                400,
                {
                    "message": "Problems parsing JSON",
                    "documentation_url": "https://docs.github.com/graphql",
                },
            )
        query = payload.get("query") if isinstance(payload, dict) else None
        if not isinstance(query, str):
            return Reply(
                200,
                {
                    "errors": [
                        {"message": "A query attribute must be specified and must be a string."}
                    ]
                },
            )
        assert isinstance(payload, dict)
        variables = payload.get("variables") or {}
        operation_name = payload.get("operationName")
        self._log_graphql(query, variables, operation_name)
        if not isinstance(variables, dict):
            return Reply(200, {"errors": [{"message": "Variables are invalid JSON."}]})
        prepared = self._prepare_graphql(query)
        if isinstance(prepared, list):
            return Reply(200, {"errors": prepared})
        cost, node_count, dry_run = graphql_cost(prepared, operation_name, variables)
        ok, bucket = self._charge(caller, "graphql", 0 if dry_run else cost)
        if not ok:
            self._bump("rate_limited")
            return Reply(
                self.graphql_rate_limit_status,
                {
                    "errors": [
                        {
                            "type": "RATE_LIMITED",
                            "code": "graphql_rate_limit",
                            "message": "API rate limit already exceeded for user ID "
                            f"{caller.user_id}.",
                        }
                    ]
                },
                bucket=bucket,
                resource="graphql",
            )
        with self._lock:
            rate = {
                "__typename": "RateLimit",
                "cost": cost,
                "limit": bucket.limit,
                "remaining": bucket.remaining,
                "used": bucket.used,
                "resetAt": iso(bucket.reset),
                "nodeCount": node_count,
            }
        key = (query, json.dumps(variables, sort_keys=True), operation_name)
        memo = self._answers.get(key) if self.memo_answers else None
        if memo is not None and memo[0] == self.generation:
            return Reply(
                200,
                _with_rate(memo[1], rate),
                bucket=bucket,
                points=0 if dry_run else cost,
                resource="graphql",
            )
        generation = self.generation
        root = {"repository": self._gql_repository, "rateLimit": rate}
        result = execute_sync(
            load_graphql_schema(),
            prepared,
            root_value=root,
            variable_values=variables,
            operation_name=operation_name if isinstance(operation_name, str) else None,
            field_resolver=field_resolver,
        )
        out: dict[str, Json] = {}
        if result.data is not None or not result.errors:
            out["data"] = result.data
        if result.errors:
            out["errors"] = [format_error(e.formatted) for e in result.errors]
        elif self.memo_answers:
            self._answers[key] = (generation, out)
        return Reply(
            200,
            out,
            bucket=bucket,
            points=0 if dry_run else cost,
            resource="graphql",
        )

    def _prepare_graphql(self, query: str) -> DocumentNode | list[dict[str, Json]]:
        from graphql import GraphQLError, parse, validate

        with self._lock:
            cached = self._gql_docs.get(query)
        if cached is not None:
            return cached
        schema = load_graphql_schema()
        prepared: DocumentNode | list[dict[str, Json]]
        try:
            document = parse(query)
        except GraphQLError as exc:
            prepared = [format_error(exc.formatted)]
        else:
            errors = validate(schema, document)
            prepared = [format_error(e.formatted) for e in errors] if errors else document
        with self._lock:
            if len(self._gql_docs) >= 512:
                self._gql_docs.clear()
            self._gql_docs[query] = prepared
        return prepared

    def _gql_repository(
        self, info: GraphQLResolveInfo[Any], owner: str, name: str, followRenames: bool = True
    ) -> dict[str, Json]:
        from graphql import GraphQLError

        repo = self._find_repo(owner, name)
        if repo is None:
            raise GraphQLError(
                f"Could not resolve to a Repository with the name '{owner}/{name}'.",
                extensions={"type": "NOT_FOUND"},
            )
        return GqlBuilder(self._lock).repository(repo)


def _with_rate(answer: dict[str, Json], rate: Mapping[str, Json]) -> dict[str, Json]:
    """A remembered answer with this request's rate limit (the fields it asked for)."""
    data = answer.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("rateLimit"), dict):
        return answer
    fresh = {k: rate.get(k, v) for k, v in data["rateLimit"].items()}
    return {**answer, "data": {**data, "rateLimit": fresh}}


def graphql_cost(
    document: DocumentNode, operation_name: Json, variables: Mapping[str, Json]
) -> tuple[int, int, bool]:
    """(cost, nodeCount, dryRun): every repository/node field or connection page is a request;
    a connection's children are multiplied by its first/last; cost = max(1, ceil(requests/100))."""
    from graphql import (
        BooleanValueNode,
        FieldNode,
        FragmentDefinitionNode,
        FragmentSpreadNode,
        InlineFragmentNode,
        IntValueNode,
        OperationDefinitionNode,
        VariableNode,
    )

    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    operation = next(
        (o for o in operations if o.name is not None and o.name.value == operation_name),
        operations[0] if operations else None,
    )
    totals = {"requests": 0, "nodes": 0, "dry": 0}

    def arg_value(node: Any) -> Json:
        if isinstance(node, IntValueNode):
            return int(node.value)
        if isinstance(node, BooleanValueNode):
            return node.value
        if isinstance(node, VariableNode):
            return variables.get(node.name.value)
        return None

    def walk(selection_set: SelectionSetNode | None, multiplier: int, depth: int) -> None:
        if selection_set is None or depth > 50:
            return
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                args = {a.name.value: arg_value(a.value) for a in selection.arguments or ()}
                name = selection.name.value
                child = multiplier
                if name == "rateLimit" and args.get("dryRun") is True:
                    totals["dry"] = 1
                if name in ("repository", "node"):
                    totals["requests"] += multiplier
                    totals["nodes"] += multiplier
                page = args.get("first", args.get("last"))
                if isinstance(page, int) and not isinstance(page, bool):
                    totals["requests"] += multiplier
                    child = multiplier * max(page, 0)
                    totals["nodes"] += child
                walk(selection.selection_set, child, depth + 1)
            elif isinstance(selection, InlineFragmentNode):
                walk(selection.selection_set, multiplier, depth + 1)
            elif isinstance(selection, FragmentSpreadNode):
                fragment = fragments.get(selection.name.value)
                if fragment is not None:
                    walk(fragment.selection_set, multiplier, depth + 1)

    if operation is not None:
        walk(operation.selection_set, 1, 0)
    cost = max(1, math.ceil(totals["requests"] / 100))
    return cost, totals["nodes"], bool(totals["dry"])


def field_resolver(source: Any, info: GraphQLResolveInfo[Any], **args: Any) -> Any:
    """graphql-core's default resolver, except that an unmodelled field fails loudly."""
    if isinstance(source, Mapping):
        if info.field_name not in source:
            from graphql import GraphQLError

            raise GraphQLError(
                f"The GitHub stand-in does not model {info.parent_type.name}.{info.field_name}."
            )
        value = source[info.field_name]
    else:
        value = getattr(source, info.field_name, None)
    if callable(value):
        return value(info, **args)
    return value


def format_error(formatted: Mapping[str, Json]) -> dict[str, Json]:
    extensions = dict(formatted.get("extensions") or {})
    error_type = extensions.pop("type", None)
    out: dict[str, Json] = {}
    if error_type is not None:
        out["type"] = error_type
    if "path" in formatted and formatted["path"] is not None:
        out["path"] = formatted["path"]
    if formatted.get("locations"):
        out["locations"] = formatted["locations"]
    if extensions:
        out["extensions"] = extensions
    out["message"] = formatted["message"]
    return out


class GqlBuilder:
    """Builds dict-shaped GraphQL objects over a repository (read under the stand-in lock)."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock

    def repository(self, repo: Repo) -> dict[str, Json]:
        with self._lock:
            default_sha = repo.branches.get(repo.default_branch)
            default_branch = repo.default_branch
            private = repo.private
            pushed_at = repo.pushed_at
        obj: dict[str, Json] = {
            "__typename": "Repository",
            "id": node_id(f"010:Repository{repo.id}"),
            "databaseId": repo.id,
            "name": repo.name,
            "nameWithOwner": repo.full_name,
            "owner": {
                "__typename": repo.owner_type,
                "id": node_id(f"04:{repo.owner_type}{repo.owner_id}"),
                "login": repo.owner,
                "url": f"{HTML_BASE}/{repo.owner}",
                "resourcePath": f"/{repo.owner}",
                "avatarUrl": lambda info, size=None: (
                    f"https://avatars.githubusercontent.com/u/{repo.owner_id}?v=4"
                ),
            },
            "url": f"{HTML_BASE}/{repo.full_name}",
            "resourcePath": f"/{repo.full_name}",
            "sshUrl": f"git@github.com:{repo.full_name}.git",
            "description": None,
            "homepageUrl": None,
            "isPrivate": private,
            "visibility": "PRIVATE" if private else "PUBLIC",
            "isArchived": False,
            "isDisabled": False,
            "isFork": False,
            "isLocked": False,
            "isTemplate": False,
            "isMirror": False,
            "isEmpty": default_sha is None,
            "createdAt": repo.created_at,
            "updatedAt": pushed_at,
            "pushedAt": pushed_at,
            "stargazerCount": 0,
            "forkCount": 0,
        }
        obj["defaultBranchRef"] = (
            None if default_sha is None else self.ref(repo, obj, default_branch, default_sha)
        )

        def ref(info: GraphQLResolveInfo[Any], qualifiedName: str) -> dict[str, Json] | None:
            name = qualifiedName
            for prefix in ("refs/heads/", "heads/"):
                if name.startswith(prefix):
                    name = name[len(prefix) :]
                    break
            else:
                if name.startswith("refs/"):
                    return None
            with self._lock:
                sha = repo.branches.get(name)
            return None if sha is None else self.ref(repo, obj, name, sha)

        def git_object(
            info: GraphQLResolveInfo[Any], oid: str | None = None, expression: str | None = None
        ) -> dict[str, Json] | None:
            with self._lock:
                sha = oid.lower() if oid else None
                if sha is None and expression is not None and ":" not in expression:
                    sha = resolve_commit(repo, expression)
                known = sha is not None and sha in repo.commits
            return self.commit(repo, obj, sha) if known and sha else None

        def refs(
            info: GraphQLResolveInfo[Any],
            refPrefix: str,
            first: int | None = None,
            after: str | None = None,
            **_: Any,
        ) -> dict[str, Json]:
            with self._lock:
                branches = sorted(repo.branches.items()) if refPrefix == "refs/heads/" else []
            start = 0
            if after:
                cursor = base64.b64decode(after.encode()).decode()
                start = next((i + 1 for i, (n, _) in enumerate(branches) if n == cursor), 0)
            page = branches[start : start + (first if first is not None else 100)]
            nodes = [self.ref(repo, obj, n, s) for n, s in page]
            cursors = [base64.b64encode(n.encode()).decode() for n, _ in page]
            return {
                "__typename": "RefConnection",
                "totalCount": len(branches),
                "nodes": nodes,
                "edges": [
                    {"__typename": "RefEdge", "node": n, "cursor": c}
                    for n, c in zip(nodes, cursors, strict=True)
                ],
                "pageInfo": {
                    "__typename": "PageInfo",
                    "hasNextPage": start + len(page) < len(branches),
                    "hasPreviousPage": start > 0,
                    "startCursor": cursors[0] if cursors else None,
                    "endCursor": cursors[-1] if cursors else None,
                },
            }

        obj["ref"] = ref
        obj["object"] = git_object
        obj["refs"] = refs
        return obj

    def ref(self, repo: Repo, repo_obj: dict[str, Json], branch: str, sha: str) -> dict[str, Json]:
        return {
            "__typename": "Ref",
            "id": node_id(f"03:Ref{repo.id}:refs/heads/{branch}"),
            "name": branch,
            "prefix": "refs/heads/",
            "repository": repo_obj,
            "target": self.commit(repo, repo_obj, sha),
        }

    def commit(self, repo: Repo, repo_obj: dict[str, Json], sha: str) -> dict[str, Json] | None:
        with self._lock:
            commit = repo.commits.get(sha)
            checks = list(repo.checks.get(sha, []))
        if commit is None:
            return None
        html = f"{HTML_BASE}/{repo.full_name}/commit/{sha}"
        headline, _, body = commit.message.partition("\n")
        actor = {
            "__typename": "GitActor",
            "name": "Stand-in Bot",
            "email": "standin-bot@users.noreply.github.com",
            "date": commit.date,
            "user": None,
        }
        rollup = None
        if checks:
            state = rollup_state(checks)
            rollup = {
                "__typename": "StatusCheckRollup",
                "id": node_id(f"rollup:{sha}"),
                "state": state,
            }

        def history(
            info: GraphQLResolveInfo[Any], first: int | None = None, **_: Any
        ) -> dict[str, Json]:
            """The commit and its first-parent ancestors, newest first (one page)."""
            shas: list[str] = []
            with self._lock:
                at: str | None = sha
                while at is not None and at in repo.commits and at not in shas:
                    shas.append(at)
                    parents = repo.commits[at].parents
                    at = parents[0] if parents else None
            page = shas[: first if first is not None else 100]
            nodes = [self.commit(repo, repo_obj, c) for c in page]
            return {
                "__typename": "CommitHistoryConnection",
                "totalCount": len(shas),
                "nodes": nodes,
                "edges": [
                    {"__typename": "CommitEdge", "node": n, "cursor": f"{sha} {i}"}
                    for i, n in enumerate(nodes)
                ],
                "pageInfo": {
                    "__typename": "PageInfo",
                    "hasNextPage": len(page) < len(shas),
                    "hasPreviousPage": False,
                    "startCursor": None,
                    "endCursor": None,
                },
            }

        return {
            "__typename": "Commit",
            "history": history,
            "id": node_id(f"06:Commit{repo.id}:{sha}"),
            "oid": sha,
            "abbreviatedOid": sha[:7],
            "committedDate": commit.date,
            "authoredDate": commit.date,
            "pushedDate": None,
            "message": commit.message,
            "messageHeadline": headline,
            "messageBody": body.strip(),
            "url": html,
            "commitUrl": html,
            "resourcePath": f"/{repo.full_name}/commit/{sha}",
            "author": actor,
            "committer": dict(actor),
            "repository": repo_obj,
            "statusCheckRollup": rollup,
            "status": None
            if rollup is None
            else {
                "__typename": "Status",
                "id": node_id(f"status:{sha}"),
                "state": rollup["state"],
            },
        }
