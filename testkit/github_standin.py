"""Loopback HTTP stand-in for api.github.com (REST subset + GraphQL) for tests and the benchmark."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import random
import re
import secrets
import socket
import sys
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypedDict

if TYPE_CHECKING:
    from graphql import DocumentNode, GraphQLResolveInfo, GraphQLSchema, SelectionSetNode

__all__ = [
    "CallerStats",
    "GitHubStandIn",
    "StandInStats",
    "load_graphql_schema",
    "preload",
    "random_sha",
    "rest_schema_errors",
    "shared_dir",
]

Json = Any


class _Headers(Protocol):
    def get(self, name: str, /) -> str | None: ...


CheckState = Literal["success", "pending", "failure", "error"]

DOCS = "https://docs.github.com/rest"
HTML_BASE = "https://github.com"
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_SHA_MEDIA_RE = re.compile(r"application/vnd\.github(?:\.v3)?[.+]sha\b")
_REPO_PATH_RE = re.compile(r"^/repos/([^/]+)/([^/]+)(/.*)?$")
_GRAPHQL_PATHS = frozenset({"/graphql", "/api/graphql"})
_HOUR = 3600

_OPERATIONS: dict[str, tuple[str, str]] = {
    # route name -> (OpenAPI operationId, documentation URL)
    "rest:repo": ("repos/get", f"{DOCS}/repos/repos#get-a-repository"),
    "rest:branch": ("repos/get-branch", f"{DOCS}/branches/branches#get-a-branch"),
    "rest:commits": ("repos/get-commit", f"{DOCS}/commits/commits#get-a-commit"),
    "rest:git-ref": ("git/get-ref", f"{DOCS}/git/refs#get-a-reference"),
    "rest:status": (
        "repos/get-combined-status-for-ref",
        f"{DOCS}/commits/statuses#get-the-combined-status-for-a-specific-reference",
    ),
    "rest:check-runs": (
        "checks/list-for-ref",
        f"{DOCS}/checks/runs#list-check-runs-for-a-git-reference",
    ),
    "rest:compare": (
        "repos/compare-commits-with-basehead",
        f"{DOCS}/commits/commits#compare-two-commits",
    ),
    "rest:rate_limit": (
        "rate-limit/get",
        f"{DOCS}/rate-limit/rate-limit#get-rate-limit-status-for-the-authenticated-user",
    ),
}


def random_sha() -> str:
    """A random 40-hex commit SHA."""
    return secrets.token_hex(20)


def shared_dir() -> Path:
    """The project's read-only ../shared directory (env RECONCILER_SHARED_DIR overrides)."""
    env = os.environ.get("RECONCILER_SHARED_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / ".." / "shared"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _node_id(text: str) -> str:
    return base64.b64encode(text.encode()).decode().rstrip("=")


def _q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="/")


# --------------------------------------------------------------------------------------------
# Schema loading (module-level, lazy, once)
# --------------------------------------------------------------------------------------------

_LOAD_LOCK = threading.Lock()
_GRAPHQL_SCHEMA: GraphQLSchema | None = None
_REST_VALIDATORS: _RestValidators | None = None


class _RestValidators:
    """Precompiled OpenAPI 3.0 response validators, one per (operationId, status)."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        from jsonschema.validators import extend  # type: ignore[import-untyped,unused-ignore]
        from openapi_schema_validator import OAS30Validator, oas30_format_checker
        from referencing import Registry
        from referencing.jsonschema import DRAFT4

        strict_enum = OAS30Validator.VALIDATORS["enum"]

        def nullable_enum(validator: Any, enums: Any, instance: Any, schema: Any) -> Any:
            # OAS 3.0.3: `nullable: true` adds null to the allowed values; GitHub's spec relies on
            # that for e.g. check-run.conclusion (null while in progress, enum without null).
            if instance is None and schema.get("nullable") is True:
                return iter(())
            return strict_enum(validator, enums, instance, schema)

        validator_class = extend(OAS30Validator, {"enum": nullable_enum})

        if not str(document.get("openapi", "")).startswith("3.0"):
            raise RuntimeError("expected an OpenAPI 3.0 document")
        uri = "urn:github-rest-openapi-subset"
        registry: Registry[Any] = Registry().with_resource(uri, DRAFT4.create_resource(document))

        def compile_pointer(pointer: str) -> Any:
            ref = f"{uri}#{urllib.parse.quote(pointer)}"
            return validator_class(
                {"$ref": ref}, registry=registry, format_checker=oas30_format_checker
            )

        self.by_operation: dict[tuple[str, int], Any] = {}
        for path, item in document["paths"].items():
            escaped = path.replace("~", "~0").replace("/", "~1")
            for method, operation in item.items():
                for status, response in operation.get("responses", {}).items():
                    if "$ref" in response:
                        name = response["$ref"].rsplit("/", 1)[-1]
                        content = document["components"]["responses"][name].get("content", {})
                        base = f"/components/responses/{name}"
                    else:
                        content = response.get("content", {})
                        base = f"/paths/{escaped}/{method}/responses/{status}"
                    if "application/json" in content:
                        pointer = f"{base}/content/application~1json/schema"
                        self.by_operation[operation["operationId"], int(status)] = compile_pointer(
                            pointer
                        )
        self.basic_error = compile_pointer("/components/schemas/basic-error")

    def errors(self, operation_id: str | None, status: int, body: Json) -> list[str]:
        validator = self.by_operation.get((operation_id or "", status))
        if validator is None:
            if status < 300:
                return [f"no JSON response schema for {operation_id} {status}"]
            validator = self.basic_error
        return [
            f"{operation_id} {status} at /{'/'.join(str(p) for p in err.absolute_path)}: "
            f"{err.message[:300]}"
            for err in validator.iter_errors(body)
        ]


def _rest_validators() -> _RestValidators:
    global _REST_VALIDATORS  # noqa: PLW0603
    if _REST_VALIDATORS is None:
        with _LOAD_LOCK:
            if _REST_VALIDATORS is None:
                path = shared_dir() / "github" / "rest-openapi-subset.json"
                with path.open(encoding="utf-8") as f:
                    _REST_VALIDATORS = _RestValidators(json.load(f))
    return _REST_VALIDATORS


def load_graphql_schema() -> GraphQLSchema:
    """GitHub's public GraphQL schema from ../shared (parsed once per process)."""
    global _GRAPHQL_SCHEMA  # noqa: PLW0603
    if _GRAPHQL_SCHEMA is None:
        with _LOAD_LOCK:
            if _GRAPHQL_SCHEMA is None:
                from graphql import build_client_schema

                path = shared_dir() / "github" / "graphql-schema.json"
                with path.open(encoding="utf-8") as f:
                    raw = json.load(f)
                schema = build_client_schema(raw.get("data", raw))
                # GitHub's schema trips graphql-core's strict self-check; queries still validate.
                schema._validation_errors = []
                _GRAPHQL_SCHEMA = schema
    return _GRAPHQL_SCHEMA


def rest_schema_errors(operation_id: str | None, status: int, body: Json) -> list[str]:
    """Violations of the operation's response schema (basic-error for unlisted error statuses)."""
    return _rest_validators().errors(operation_id, status, body)


def preload(graphql: bool = True, rest: bool = True) -> None:
    """Load the shared schemas now (else they load on first use, ~0.5 s for GraphQL)."""
    if rest:
        _rest_validators()
    if graphql:
        load_graphql_schema()


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Commit:
    sha: str
    message: str
    date: str
    parents: tuple[str, ...]
    author: str = "Stand-in Bot"


@dataclass(frozen=True)
class _Check:
    id: int
    name: str
    state: str
    created_at: str


@dataclass
class _Repo:
    owner: str
    name: str
    id: int
    owner_id: int
    owner_type: str
    default_branch: str
    private: bool
    created_at: str
    pushed_at: str
    branches: dict[str, str] = field(default_factory=dict)
    renamed: dict[str, str] = field(default_factory=dict)
    commits: dict[str, _Commit] = field(default_factory=dict)
    checks: dict[str, list[_Check]] = field(default_factory=dict)
    full_cache: dict[str, Json] | None = None

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass
class _Bucket:
    limit: int
    used: int
    reset: int

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


@dataclass(frozen=True)
class _Caller:
    token: str | None
    key: str  # "token:<t>" or "ip:<addr>"
    stats_key: str  # the token itself, or "anonymous:<addr>"
    user_id: int
    ip: str


@dataclass
class _Fault:
    remaining: int
    status: int
    path_contains: str | None
    retry_after: int | None


@dataclass
class _Reply:
    status: int
    json_body: Json = None
    raw_body: bytes | None = None
    content_type: str | None = "application/json; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    schema_op: str | None = None  # OpenAPI operationId to validate JSON against
    validate: bool = True
    resource: str = "core"
    bucket: _Bucket | None = None
    points: int = 0

    def body_bytes(self) -> bytes:
        if self.raw_body is None:
            self.raw_body = (
                b""
                if self.json_body is None and self.status == 304
                else json.dumps(self.json_body, separators=(",", ":")).encode()
            )
        return self.raw_body


class CallerStats(TypedDict):
    requests: int
    points: dict[str, int]
    not_modified: int


class StandInStats(TypedDict):
    requests: int
    by_route: dict[str, int]
    by_status: dict[int, int]
    by_token: dict[str, CallerStats]
    points: dict[str, int]
    not_modified: int
    rate_limited: int
    secondary_limited: int
    faults_injected: int
    max_in_flight: int
    graphql_queries: int


def _empty_stats() -> StandInStats:
    return {
        "requests": 0,
        "by_route": {},
        "by_status": {},
        "by_token": {},
        "points": {},
        "not_modified": 0,
        "rate_limited": 0,
        "secondary_limited": 0,
        "faults_injected": 0,
        "max_in_flight": 0,
        "graphql_queries": 0,
    }


# --------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], standin: GitHubStandIn) -> None:
        self.standin = standin
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver would print a traceback to stderr; record it instead.
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError)):
            with self.standin._lock:
                self.standin.internal_errors.append(f"{client_address}: {exc!r}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "GitHub.com"
    sys_version = ""
    timeout = 120  # idle keep-alive connections end eventually
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without NODELAY, Nagle + delayed ACK
        # add ~40 ms to every keep-alive response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def version_string(self) -> str:
        return "GitHub.com"

    def log_message(self, format: str, *args: Any) -> None:  # quiet by default
        return

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        reply = self.server.standin._handle(
            self.command, self.path, self.headers, body, self.client_address[0]
        )
        payload = reply.body_bytes()
        try:
            self.send_response(reply.status)
            if reply.content_type and reply.status != 304:
                self.send_header("Content-Type", reply.content_type)
            for name, value in reply.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD" and reply.status != 304:
                self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


# --------------------------------------------------------------------------------------------
# The stand-in
# --------------------------------------------------------------------------------------------


class GitHubStandIn:
    """A GitHub API stand-in on 127.0.0.1; use as a context manager and point clients at .url."""

    def __init__(
        self,
        *,
        latency_median_ms: float = 0.0,
        latency_sigma: float = 0.5,
        max_concurrent: int = 100,
        secondary_retry_after_s: int = 60,
        validate: bool = True,
        tokens: Iterable[str] = (),
        token_limit: int = 5000,
        graphql_limit: int = 5000,
        anonymous_limit: int = 60,
        reset_epoch: int | None = None,
        rate_limit_status: int = 403,
        graphql_rate_limit_status: int = 200,
        seed: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        preload_schemas: bool = False,
        graphql_log_size: int = 1000,
    ) -> None:
        self.latency_median_ms = latency_median_ms
        self.latency_sigma = latency_sigma
        self.max_concurrent = max_concurrent
        self.secondary_retry_after_s = secondary_retry_after_s
        self.validate = validate
        self.token_limit = token_limit
        self.graphql_limit = graphql_limit
        self.anonymous_limit = anonymous_limit
        self.reset_epoch = reset_epoch
        self.rate_limit_status = rate_limit_status
        self.graphql_rate_limit_status = graphql_rate_limit_status
        self.host = host
        self.schema_violations: list[str] = []
        self.internal_errors: list[str] = []

        self._requested_port = port
        self._preload = preload_schemas
        self._lock = threading.RLock()
        self._rng = random.Random(seed)
        self._repos: dict[str, _Repo] = {}
        self._owner_ids: dict[str, int] = {}
        self._next_id = 100_000
        self._tokens: dict[str, tuple[int, int, int]] = {}  # token -> (core, graphql, user id)
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._faults: list[_Fault] = []
        self._in_flight = 0
        self._stats = _empty_stats()
        self._graphql_log: deque[dict[str, Json]] = deque(maxlen=graphql_log_size)
        self._gql_docs: dict[str, DocumentNode | list[dict[str, Json]]] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        for token in tokens:
            self.add_token(token)

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> GitHubStandIn:
        if self._server is not None:
            return self
        if self._preload:
            preload(rest=self.validate)
        self._server = _Server((self.host, self._requested_port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="github-standin",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> GitHubStandIn:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("GitHubStandIn is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL for clients (PyGithub base_url; GraphQL at {url}/graphql)."""
        return f"http://{self.host}:{self.port}"

    @property
    def graphql_url(self) -> str:
        return f"{self.url}/graphql"

    # ---- repositories and branches -------------------------------------------------------

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _repo(self, full_name: str) -> _Repo:
        repo = self._repos.get(full_name.lower())
        if repo is None:
            raise KeyError(f"no such repository in the stand-in: {full_name}")
        return repo

    def add_repo(
        self,
        full_name: str,
        branches: Mapping[str, str] | None = None,
        default_branch: str = "main",
        private: bool = False,
        owner_type: Literal["User", "Organization"] = "Organization",
    ) -> None:
        """Create/replace a repository; branches=None gives it one random-SHA default branch."""
        owner, _, name = full_name.partition("/")
        if not owner or not name or "/" in name:
            raise ValueError(f"expected owner/name, got {full_name!r}")
        now = time.time()
        with self._lock:
            owner_id = self._owner_ids.setdefault(owner.lower(), self._new_id())
            repo = _Repo(
                owner=owner,
                name=name,
                id=self._new_id(),
                owner_id=owner_id,
                owner_type=owner_type,
                default_branch=default_branch,
                private=private,
                created_at=_iso(now - 86_400),
                pushed_at=_iso(now),
            )
            self._repos[full_name.lower()] = repo
            initial = {default_branch: random_sha()} if branches is None else dict(branches)
            for branch, sha in initial.items():
                self._set_branch_locked(repo, branch, sha, None)

    def remove_repo(self, full_name: str) -> None:
        with self._lock:
            self._repos.pop(full_name.lower(), None)

    def _set_branch_locked(
        self,
        repo: _Repo,
        branch: str,
        sha: str,
        message: str | None,
        author: str | None = None,
    ) -> None:
        if not _SHA_RE.match(sha):
            raise ValueError(f"not a 40-hex lowercase SHA: {sha!r}")
        previous = repo.branches.get(branch)
        if sha not in repo.commits:
            now = time.time()
            repo.commits[sha] = _Commit(
                sha=sha,
                message=message or f"Update {branch} to {sha[:7]}",
                date=_iso(now),
                parents=(previous,) if previous and previous != sha else (),
                author=author or "Stand-in Bot",
            )
            repo.pushed_at = _iso(now)
        repo.branches[branch] = sha
        repo.renamed.pop(branch, None)
        repo.full_cache = None

    def set_branch(
        self,
        full_name: str,
        branch: str,
        sha: str | None = None,
        message: str | None = None,
        author: str | None = None,
    ) -> str:
        """Move (or create) a branch; returns the SHA (random when not given). A new SHA becomes
        a commit whose parent is the branch's previous head, with this message and author."""
        sha = sha or random_sha()
        with self._lock:
            self._set_branch_locked(self._repo(full_name), branch, sha, message, author)
        return sha

    def branch_sha(self, full_name: str, branch: str) -> str | None:
        with self._lock:
            return self._repo(full_name).branches.get(branch)

    def delete_branch(self, full_name: str, branch: str) -> None:
        with self._lock:
            repo = self._repo(full_name)
            repo.branches.pop(branch, None)
            repo.renamed = {k: v for k, v in repo.renamed.items() if v != branch}

    def rename_branch(self, full_name: str, old: str, new: str) -> None:
        """Rename like GitHub: GET .../branches/{old} then answers 301 to the new name."""
        with self._lock:
            repo = self._repo(full_name)
            sha = repo.branches.pop(old)
            repo.branches[new] = sha
            repo.renamed = {k: (new if v == old else v) for k, v in repo.renamed.items()}
            repo.renamed[old] = new
            repo.renamed.pop(new, None)
            if repo.default_branch == old:
                repo.default_branch = new
            repo.full_cache = None

    def set_default_branch(self, full_name: str, branch: str) -> None:
        with self._lock:
            repo = self._repo(full_name)
            repo.default_branch = branch
            repo.full_cache = None

    def set_checks(
        self,
        full_name: str,
        sha: str,
        state: CheckState,
        names: Sequence[str] = ("ci",),
    ) -> None:
        """Give commit `sha` one commit status and one check run per name, all in `state`."""
        if state not in ("success", "pending", "failure", "error"):
            raise ValueError(f"bad check state {state!r}")
        now = _iso(time.time())
        with self._lock:
            repo = self._repo(full_name)
            kept = [c for c in repo.checks.get(sha, []) if c.name not in names]
            kept += [_Check(self._new_id(), name, state, now) for name in names]
            repo.checks[sha] = kept

    def clear_checks(self, full_name: str, sha: str) -> None:
        with self._lock:
            self._repo(full_name).checks.pop(sha, None)

    # ---- tokens, rate limits, faults -----------------------------------------------------

    def add_token(
        self, token: str, limit: int | None = None, graphql_limit: int | None = None
    ) -> None:
        with self._lock:
            self._tokens[token] = (
                self.token_limit if limit is None else limit,
                self.graphql_limit if graphql_limit is None else graphql_limit,
                self._new_id(),
            )

    def _limit_for(self, caller_key: str, resource: str) -> int:
        if caller_key.startswith("token:"):
            core, graphql, _ = self._tokens.get(caller_key[6:], (self.token_limit, 0, 0))
            return graphql if resource == "graphql" else core
        return 0 if resource == "graphql" else self.anonymous_limit

    def _bucket_locked(self, caller_key: str, resource: str) -> _Bucket:
        now = int(time.time())
        bucket = self._buckets.get((caller_key, resource))
        if bucket is None:
            reset = self.reset_epoch if self.reset_epoch and self.reset_epoch > now else now + _HOUR
            bucket = _Bucket(self._limit_for(caller_key, resource), 0, reset)
            self._buckets[caller_key, resource] = bucket
        elif now >= bucket.reset:
            bucket.used = 0
            bucket.reset = now + _HOUR
        return bucket

    @staticmethod
    def _caller_key(token: str | None, ip: str) -> str:
        return f"token:{token}" if token is not None else f"ip:{ip}"

    def set_remaining(
        self,
        token: str | None,
        remaining: int,
        resource: Literal["core", "graphql"] = "core",
        ip: str = "127.0.0.1",
    ) -> None:
        """Force a bucket's remaining points (token=None: the anonymous bucket of `ip`)."""
        with self._lock:
            bucket = self._bucket_locked(self._caller_key(token, ip), resource)
            bucket.used = max(0, bucket.limit - remaining)

    def rate_limit(
        self,
        token: str | None,
        resource: Literal["core", "graphql"] = "core",
        ip: str = "127.0.0.1",
    ) -> dict[str, int]:
        """{limit, remaining, used, reset} of a bucket."""
        with self._lock:
            b = self._bucket_locked(self._caller_key(token, ip), resource)
            return {"limit": b.limit, "remaining": b.remaining, "used": b.used, "reset": b.reset}

    def reset_rate_limits(self) -> None:
        with self._lock:
            self._buckets.clear()

    def _charge(self, caller: _Caller, resource: str, points: int) -> tuple[bool, _Bucket]:
        with self._lock:
            bucket = self._bucket_locked(caller.key, resource)
            if bucket.remaining < points or bucket.remaining == 0:
                return False, bucket
            bucket.used += points
            return True, bucket

    def _refund(self, caller: _Caller, resource: str, points: int) -> None:
        with self._lock:
            bucket = self._bucket_locked(caller.key, resource)
            bucket.used = max(0, bucket.used - points)

    def fail_next(
        self,
        n: int = 1,
        status: int = 502,
        path_contains: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        """Answer the next n requests (whose path contains path_contains) with `status`."""
        with self._lock:
            self._faults.append(_Fault(n, status, path_contains, retry_after))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and (
                    fault.path_contains is None or fault.path_contains in path
                ):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # ---- counters ------------------------------------------------------------------------

    def stats(self) -> StandInStats:
        with self._lock:
            s = self._stats
            return {
                "requests": s["requests"],
                "by_route": dict(s["by_route"]),
                "by_status": dict(s["by_status"]),
                "by_token": {
                    k: {
                        "requests": v["requests"],
                        "points": dict(v["points"]),
                        "not_modified": v["not_modified"],
                    }
                    for k, v in s["by_token"].items()
                },
                "points": dict(s["points"]),
                "not_modified": s["not_modified"],
                "rate_limited": s["rate_limited"],
                "secondary_limited": s["secondary_limited"],
                "faults_injected": s["faults_injected"],
                "max_in_flight": s["max_in_flight"],
                "graphql_queries": s["graphql_queries"],
            }

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = _empty_stats()
            self._graphql_log.clear()

    @property
    def graphql_queries(self) -> list[str]:
        """Query texts of the last graphql_log_size GraphQL requests (since reset_stats)."""
        with self._lock:
            return [str(entry["query"]) for entry in self._graphql_log]

    @property
    def graphql_requests(self) -> list[dict[str, Json]]:
        """GraphQL request payloads received: {query, variables, operationName}."""
        with self._lock:
            return [dict(entry) for entry in self._graphql_log]

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def _record(self, route: str, caller: _Caller | None, reply: _Reply) -> None:
        with self._lock:
            s = self._stats
            s["requests"] += 1
            s["by_route"][route] = s["by_route"].get(route, 0) + 1
            s["by_status"][reply.status] = s["by_status"].get(reply.status, 0) + 1
            if reply.status == 304:
                s["not_modified"] += 1
            if reply.points:
                s["points"][reply.resource] = s["points"].get(reply.resource, 0) + reply.points
            if caller is not None:
                per = s["by_token"].setdefault(
                    caller.stats_key, {"requests": 0, "points": {}, "not_modified": 0}
                )
                per["requests"] += 1
                if reply.status == 304:
                    per["not_modified"] += 1
                if reply.points:
                    per["points"][reply.resource] = (
                        per["points"].get(reply.resource, 0) + reply.points
                    )

    def _bump(
        self, counter: Literal["rate_limited", "secondary_limited", "faults_injected"]
    ) -> None:
        with self._lock:
            self._stats[counter] += 1

    # ---- request handling ----------------------------------------------------------------

    def _latency_s(self) -> float:
        median = self.latency_median_ms
        if median <= 0:
            return 0.0
        if self.latency_sigma <= 0:
            return median / 1000
        with self._lock:
            return self._rng.lognormvariate(math.log(median / 1000), self.latency_sigma)

    def _handle(
        self, method: str, raw_path: str, headers: _Headers, body: bytes, ip: str
    ) -> _Reply:
        with self._lock:
            self._in_flight += 1
            in_flight = self._in_flight
            self._stats["max_in_flight"] = max(self._stats["max_in_flight"], in_flight)
        try:
            delay = self._latency_s()
            if delay > 0:
                time.sleep(delay)
            try:
                return self._dispatch(
                    method=method,
                    raw_path=raw_path,
                    headers=headers,
                    body=body,
                    ip=ip,
                    in_flight=in_flight,
                )
            except Exception as exc:
                message = f"{method} {raw_path}: {type(exc).__name__}: {exc}"
                with self._lock:
                    self.internal_errors.append(message)
                return _Reply(
                    500, {"message": f"GitHub stand-in crashed: {message}"}, validate=False
                )
        finally:
            with self._lock:
                self._in_flight -= 1

    def _dispatch(
        self,
        *,
        method: str,
        raw_path: str,
        headers: _Headers,
        body: bytes,
        ip: str,
        in_flight: int,
    ) -> _Reply:
        split = urllib.parse.urlsplit(raw_path)
        path = split.path
        if path.startswith("/api/v3/"):
            path = path[7:]
        query = urllib.parse.parse_qs(split.query)
        route = self._route_name(method, path)

        token = _parse_token(headers.get("Authorization"))
        caller: _Caller | None = None
        if token is not None and token not in self._tokens:
            reply = _Reply(401, _error(401, "Bad credentials", DOCS))
            anon = _Caller(None, self._caller_key(None, ip), f"anonymous:{ip}", 0, ip)
            with self._lock:
                reply.bucket = self._bucket_locked(anon.key, "core")
        else:
            caller = _Caller(
                token,
                self._caller_key(token, ip),
                token if token is not None else f"anonymous:{ip}",
                self._tokens[token][2] if token is not None else 0,
                ip,
            )
            reply = self._dispatch_caller(
                method=method,
                path=path,
                query=query,
                route=route,
                headers=headers,
                body=body,
                caller=caller,
                in_flight=in_flight,
            )
        self._finish(reply)
        self._record(route, caller, reply)
        return reply

    def _dispatch_caller(
        self,
        *,
        method: str,
        path: str,
        query: Mapping[str, list[str]],
        route: str,
        headers: _Headers,
        body: bytes,
        caller: _Caller,
        in_flight: int,
    ) -> _Reply:
        resource = "graphql" if route == "graphql" else "core"
        if in_flight > self.max_concurrent:
            self._bump("secondary_limited")
            reply = _secondary_reply(self.secondary_retry_after_s)
            reply.resource = resource
            return self._with_bucket(reply, caller)
        fault = self._take_fault(path)
        if fault is not None:
            self._bump("faults_injected")
            reply = _fault_reply(fault)
            reply.resource = resource
            return self._with_bucket(reply, caller)
        if route == "graphql":
            return self._graphql(caller, body)
        if route == "rest:rate_limit":
            return self._with_bucket(self._rate_limit_reply(caller), caller)

        ok, bucket = self._charge(caller, "core", 1)
        if not ok:
            self._bump("rate_limited")
            who = f"user ID {caller.user_id}" if caller.token else caller.ip
            extra = (
                ""
                if caller.token
                else " (But here's the good news: Authenticated requests get a higher rate "
                "limit. Check out the documentation for more details.)"
            )
            reply = _Reply(
                self.rate_limit_status,
                _error(
                    self.rate_limit_status,
                    f"API rate limit exceeded for {who}.{extra}",
                    "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
                ),
                bucket=bucket,
            )
            return reply
        reply = self._rest(route, path, query, headers, caller)
        reply.bucket = bucket
        reply.points = 1
        if reply.status == 304 and caller.token is not None:
            self._refund(caller, "core", 1)
            reply.points = 0
        return reply

    def _with_bucket(self, reply: _Reply, caller: _Caller) -> _Reply:
        with self._lock:
            reply.bucket = self._bucket_locked(caller.key, reply.resource)
        return reply

    def _finish(self, reply: _Reply) -> None:
        if self.validate and reply.validate and reply.status != 304:
            problems = rest_schema_errors(reply.schema_op, reply.status, reply.json_body)
            if problems:
                with self._lock:
                    self.schema_violations.extend(problems)
                reply.status = 500
                reply.json_body = {
                    "message": "GitHub stand-in produced a schema-invalid body: " + problems[0],
                }
                reply.raw_body = None
                reply.headers = [h for h in reply.headers if h[0].lower() != "etag"]
        if reply.bucket is not None:
            b = reply.bucket
            with self._lock:
                values = (b.limit, b.remaining, b.used, b.reset)
            reply.headers += [
                ("x-ratelimit-limit", str(values[0])),
                ("x-ratelimit-remaining", str(values[1])),
                ("x-ratelimit-reset", str(values[3])),
                ("x-ratelimit-used", str(values[2])),
                ("x-ratelimit-resource", reply.resource),
            ]
        reply.headers += [
            ("x-github-api-version-selected", "2022-11-28"),
            ("x-github-request-id", secrets.token_hex(8).upper()),
        ]
        if reply.content_type and reply.content_type.startswith("application/json"):
            reply.headers.append(("x-github-media-type", "github.v3; format=json"))

    @staticmethod
    def _route_name(method: str, path: str) -> str:
        if method == "POST" and path in _GRAPHQL_PATHS:
            return "graphql"
        if method not in ("GET", "HEAD"):
            return "other"
        if path == "/rate_limit":
            return "rest:rate_limit"
        m = _REPO_PATH_RE.match(path)
        if m is None:
            return "other"
        rest = m.group(3) or ""
        if rest in ("", "/"):
            return "rest:repo"
        if rest.startswith("/branches/") and len(rest) > 10:
            return "rest:branch"
        if rest.startswith("/commits/") and len(rest) > 9:
            if rest.endswith("/status"):
                return "rest:status"
            if rest.endswith("/check-runs"):
                return "rest:check-runs"
            return "rest:commits"
        if rest.startswith("/git/ref/") and len(rest) > 9:
            return "rest:git-ref"
        if rest.startswith("/compare/") and "..." in rest:
            return "rest:compare"
        return "other"

    # ---- REST ----------------------------------------------------------------------------

    def _rest(
        self,
        route: str,
        path: str,
        query: Mapping[str, list[str]],
        headers: _Headers,
        caller: _Caller,
    ) -> _Reply:
        if route == "other":
            return _Reply(404, _error(404, "Not Found", DOCS))
        op, doc = _OPERATIONS[route]
        m = _REPO_PATH_RE.match(path)
        assert m is not None
        owner, name = urllib.parse.unquote(m.group(1)), urllib.parse.unquote(m.group(2))
        rest = m.group(3) or ""
        api = self.url
        accept = headers.get("Accept") or ""
        with self._lock:
            repo = self._repos.get(f"{owner}/{name}".lower())
            if repo is None or (repo.private and caller.token is None):
                return _Reply(404, _error(404, "Not Found", doc), schema_op=op)
            if route == "rest:repo":
                return self._json_ok(self._full_repository(repo, api), op, caller, headers)
            if route == "rest:branch":
                return self._branch(
                    repo,
                    branch=urllib.parse.unquote(rest[10:]),
                    api=api,
                    op=op,
                    doc=doc,
                    caller=caller,
                    headers=headers,
                )
            if route == "rest:git-ref":
                ref = urllib.parse.unquote(rest[9:])
                branch = ref[6:] if ref.startswith("heads/") else None
                sha = repo.branches.get(branch) if branch else None
                if branch is None or sha is None:
                    return _Reply(404, _error(404, "Not Found", doc), schema_op=op)
                return self._json_ok(_git_ref(repo, branch, sha, api), op, caller, headers)
            if route == "rest:compare":
                body = _compare(repo, urllib.parse.unquote(rest[9:]), api, query)
                if body is None:
                    return _Reply(404, _error(404, "Not Found", doc), schema_op=op)
                return self._json_ok(body, op, caller, headers)
            # commits/{ref}[/status|/check-runs]
            tail = urllib.parse.unquote(rest[9:])
            if route == "rest:status":
                tail = tail[: -len("/status")]
            elif route == "rest:check-runs":
                tail = tail[: -len("/check-runs")]
            if not repo.branches and not repo.commits:
                return _Reply(409, _error(409, "Git Repository is empty.", doc), schema_op=op)
            sha = _resolve_commit(repo, tail)
            if sha is None:
                if route == "rest:commits":
                    return _Reply(
                        422, _error(422, f"No commit found for SHA: {tail}", doc), schema_op=op
                    )
                return _Reply(404, _error(404, "Not Found", doc), schema_op=op)
            if route == "rest:status":
                return self._json_ok(_combined_status(repo, sha, api), op, caller, headers)
            if route == "rest:check-runs":
                return self._json_ok(_check_runs(repo, sha, api, query), op, caller, headers)
            if _SHA_MEDIA_RE.search(accept):
                return _sha_reply(sha, headers)
            obj = _commit(repo, repo.commits[sha], api)
            obj["stats"] = {"total": 0, "additions": 0, "deletions": 0}
            obj["files"] = []
            return self._json_ok(obj, op, caller, headers)

    def _branch(
        self,
        repo: _Repo,
        *,
        branch: str,
        api: str,
        op: str,
        doc: str,
        caller: _Caller,
        headers: _Headers,
    ) -> _Reply:
        sha = repo.branches.get(branch)
        if sha is None:
            target = repo.renamed.get(branch)
            if target is not None and target in repo.branches:
                location = f"{api}/repos/{_q(repo.owner)}/{_q(repo.name)}/branches/{_q(target)}"
                return _Reply(
                    301,
                    {"message": "Moved Permanently", "url": location, "documentation_url": doc},
                    headers=[("Location", location)],
                    schema_op=op,
                )
            return _Reply(404, _error(404, "Branch not found", doc), schema_op=op)
        return self._json_ok(_branch(repo, branch, sha, api), op, caller, headers)

    def _json_ok(self, obj: Json, op: str, caller: _Caller, headers: _Headers) -> _Reply:
        reply = _Reply(200, obj, schema_op=op)
        body = reply.body_bytes()
        digest = hashlib.sha256(
            caller.key.encode() + b"\0" + (headers.get("Accept") or "").encode() + b"\0" + body
        ).hexdigest()
        etag = f'W/"{digest}"'
        cache = [
            ("ETag", etag),
            ("Cache-Control", "private, max-age=60, s-maxage=60"),
            ("Vary", "Accept, Authorization, Cookie, X-GitHub-OTP, Accept-Encoding"),
        ]
        if _etag_matches(headers.get("If-None-Match"), digest):
            return _Reply(304, None, raw_body=b"", content_type=None, headers=cache, validate=False)
        reply.headers += cache
        return reply

    def _full_repository(self, repo: _Repo, api: str) -> Json:
        if repo.full_cache is None or repo.full_cache.get("url", "").split("/repos/")[0] != api:
            repo.full_cache = _full_repository(repo, api)
        return repo.full_cache

    def _rate_limit_reply(self, caller: _Caller) -> _Reply:
        with self._lock:
            core = self._bucket_locked(caller.key, "core")
            graphql = self._bucket_locked(caller.key, "graphql")

            def view(b: _Bucket) -> dict[str, int]:
                return {
                    "limit": b.limit,
                    "used": b.used,
                    "remaining": b.remaining,
                    "reset": b.reset,
                }

            reset = core.reset
            authed = caller.token is not None
            body = {
                "resources": {
                    "core": view(core),
                    "graphql": view(graphql),
                    "search": {
                        "limit": 30 if authed else 10,
                        "used": 0,
                        "remaining": 30 if authed else 10,
                        "reset": reset,
                    },
                    "code_search": {
                        "limit": 10 if authed else 0,
                        "used": 0,
                        "remaining": 10 if authed else 0,
                        "reset": reset,
                    },
                },
                "rate": view(core),
            }
        return _Reply(200, body, schema_op="rate-limit/get", bucket=core)

    # ---- GraphQL -------------------------------------------------------------------------

    def _graphql(self, caller: _Caller, body: bytes) -> _Reply:
        if caller.token is None:
            return self._with_bucket(
                _Reply(
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

    def _graphql_authed(self, caller: _Caller, body: bytes) -> _Reply:
        from graphql import execute_sync

        try:
            payload = json.loads(body or b"null")
        except ValueError:
            return _Reply(
                400,
                {
                    "message": "Problems parsing JSON",
                    "documentation_url": "https://docs.github.com/graphql",
                },
            )
        query = payload.get("query") if isinstance(payload, dict) else None
        if not isinstance(query, str):
            return _Reply(
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
        with self._lock:
            self._stats["graphql_queries"] += 1
            self._graphql_log.append(
                {"query": query, "variables": variables, "operationName": operation_name}
            )
        if not isinstance(variables, dict):
            return _Reply(200, {"errors": [{"message": "Variables are invalid JSON."}]})
        prepared = self._prepare_graphql(query)
        if isinstance(prepared, list):
            return _Reply(200, {"errors": prepared})
        cost, node_count, dry_run = _graphql_cost(prepared, operation_name, variables)
        ok, bucket = self._charge(caller, "graphql", 0 if dry_run else cost)
        if not ok:
            self._bump("rate_limited")
            return _Reply(
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
                "resetAt": _iso(bucket.reset),
                "nodeCount": node_count,
            }
        root = {"repository": self._gql_repository, "rateLimit": rate}
        result = execute_sync(
            load_graphql_schema(),
            prepared,
            root_value=root,
            variable_values=variables,
            operation_name=operation_name if isinstance(operation_name, str) else None,
            field_resolver=_gql_field_resolver,
        )
        out: dict[str, Json] = {}
        if result.data is not None or not result.errors:
            out["data"] = result.data
        if result.errors:
            out["errors"] = [_format_gql_error(e.formatted) for e in result.errors]
        return _Reply(
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
            prepared = [_format_gql_error(exc.formatted)]
        else:
            errors = validate(schema, document)
            prepared = [_format_gql_error(e.formatted) for e in errors] if errors else document
        with self._lock:
            if len(self._gql_docs) >= 512:
                self._gql_docs.clear()
            self._gql_docs[query] = prepared
        return prepared

    def _gql_repository(
        self, info: GraphQLResolveInfo[Any], owner: str, name: str, followRenames: bool = True
    ) -> dict[str, Json]:
        from graphql import GraphQLError

        with self._lock:
            repo = self._repos.get(f"{owner}/{name}".lower())
        if repo is None:
            raise GraphQLError(
                f"Could not resolve to a Repository with the name '{owner}/{name}'.",
                extensions={"type": "NOT_FOUND"},
            )
        return _GqlBuilder(self._lock).repository(repo)


# --------------------------------------------------------------------------------------------
# Helpers: auth, ETags, canned replies
# --------------------------------------------------------------------------------------------


def _parse_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() in ("token", "bearer") and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value).decode()
        except ValueError:
            return value
        return decoded.partition(":")[2] or decoded
    return header.strip()


def _etag_matches(if_none_match: str | None, value: str) -> bool:
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*":
            return True
        tag = tag.removeprefix("W/").strip('"')
        if tag == value:
            return True
    return False


def _error(status: int, message: str, doc: str) -> dict[str, str]:
    return {"message": message, "documentation_url": doc, "status": str(status)}


def _secondary_reply(retry_after: int) -> _Reply:
    return _Reply(
        403,
        {
            "message": "You have exceeded a secondary rate limit. Please wait a few minutes "
            "before you try again. If you reach out to GitHub Support for help, please include "
            f"the request ID {secrets.token_hex(8).upper()}.",
            "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"
            "#about-secondary-rate-limits",
            "status": "403",
        },
        headers=[("retry-after", str(retry_after))],
    )


def _fault_reply(fault: _Fault) -> _Reply:
    if fault.status in (403, 429) and fault.retry_after is not None:
        return _secondary_reply(fault.retry_after)
    messages = {
        500: "Server Error",
        502: "Server Error",
        503: "Service Unavailable",
        504: "We couldn't respond to your request in time. Sorry about that. Please try "
        "resubmitting your request and contact us if the problem persists.",
    }
    reply = _Reply(fault.status, _error(fault.status, messages.get(fault.status, "Error"), DOCS))
    if fault.retry_after is not None:
        reply.headers.append(("retry-after", str(fault.retry_after)))
    return reply


def _sha_reply(sha: str, headers: _Headers) -> _Reply:
    cache = [
        ("ETag", f'"{sha}"'),
        ("Cache-Control", "private, max-age=60, s-maxage=60"),
        ("Vary", "Accept, Authorization, Cookie, X-GitHub-OTP, Accept-Encoding"),
        ("x-github-media-type", "github.v3; param=sha"),
    ]
    if _etag_matches(headers.get("If-None-Match"), sha):
        return _Reply(304, None, raw_body=b"", content_type=None, headers=cache, validate=False)
    return _Reply(
        200,
        None,
        raw_body=sha.encode(),
        content_type="application/vnd.github.sha; charset=utf-8",
        headers=cache,
        validate=False,
    )


def _resolve_commit(repo: _Repo, ref: str) -> str | None:
    if ref in repo.branches:
        return repo.branches[ref]
    for prefix in ("refs/heads/", "heads/"):
        if ref.startswith(prefix) and ref[len(prefix) :] in repo.branches:
            return repo.branches[ref[len(prefix) :]]
    if ref == "HEAD":
        return repo.branches.get(repo.default_branch)
    lowered = ref.lower()
    if _SHA_RE.match(lowered) and lowered in repo.commits:
        return lowered
    return None


# --------------------------------------------------------------------------------------------
# REST object builders (shapes follow rest-openapi-subset.json)
# --------------------------------------------------------------------------------------------

_BOT_LOGIN = "standin-bot"
_BOT_ID = 9_000_001


def _simple_user(login: str, user_id: int, kind: str, api: str) -> dict[str, Json]:
    prefix = "orgs" if kind == "Organization" else "users"
    user_api = f"{api}/users/{login}"
    return {
        "login": login,
        "id": user_id,
        "node_id": _node_id(f"04:{kind}{user_id}"),
        "avatar_url": f"https://avatars.githubusercontent.com/u/{user_id}?v=4",
        "gravatar_id": "",
        "url": f"{api}/{prefix}/{login}",
        "html_url": f"{HTML_BASE}/{login}",
        "followers_url": f"{user_api}/followers",
        "following_url": f"{user_api}/following{{/other_user}}",
        "gists_url": f"{user_api}/gists{{/gist_id}}",
        "starred_url": f"{user_api}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{user_api}/subscriptions",
        "organizations_url": f"{user_api}/orgs",
        "repos_url": f"{api}/{prefix}/{login}/repos",
        "events_url": f"{user_api}/events{{/privacy}}",
        "received_events_url": f"{user_api}/received_events",
        "type": kind,
        "user_view_type": "public",
        "site_admin": False,
    }


def _minimal_repository(repo: _Repo, api: str) -> dict[str, Json]:
    base = f"{api}/repos/{repo.owner}/{repo.name}"
    return {
        "id": repo.id,
        "node_id": _node_id(f"010:Repository{repo.id}"),
        "name": repo.name,
        "full_name": repo.full_name,
        "private": repo.private,
        "owner": _simple_user(repo.owner, repo.owner_id, repo.owner_type, api),
        "html_url": f"{HTML_BASE}/{repo.full_name}",
        "description": None,
        "fork": False,
        "url": base,
        "forks_url": f"{base}/forks",
        "keys_url": f"{base}/keys{{/key_id}}",
        "collaborators_url": f"{base}/collaborators{{/collaborator}}",
        "teams_url": f"{base}/teams",
        "hooks_url": f"{base}/hooks",
        "issue_events_url": f"{base}/issues/events{{/number}}",
        "events_url": f"{base}/events",
        "assignees_url": f"{base}/assignees{{/user}}",
        "branches_url": f"{base}/branches{{/branch}}",
        "tags_url": f"{base}/tags",
        "blobs_url": f"{base}/git/blobs{{/sha}}",
        "git_tags_url": f"{base}/git/tags{{/sha}}",
        "git_refs_url": f"{base}/git/refs{{/sha}}",
        "trees_url": f"{base}/git/trees{{/sha}}",
        "statuses_url": f"{base}/statuses/{{sha}}",
        "languages_url": f"{base}/languages",
        "stargazers_url": f"{base}/stargazers",
        "contributors_url": f"{base}/contributors",
        "subscribers_url": f"{base}/subscribers",
        "subscription_url": f"{base}/subscription",
        "commits_url": f"{base}/commits{{/sha}}",
        "git_commits_url": f"{base}/git/commits{{/sha}}",
        "comments_url": f"{base}/comments{{/number}}",
        "issue_comment_url": f"{base}/issues/comments{{/number}}",
        "contents_url": f"{base}/contents/{{+path}}",
        "compare_url": f"{base}/compare/{{base}}...{{head}}",
        "merges_url": f"{base}/merges",
        "archive_url": f"{base}/{{archive_format}}{{/ref}}",
        "downloads_url": f"{base}/downloads",
        "issues_url": f"{base}/issues{{/number}}",
        "pulls_url": f"{base}/pulls{{/number}}",
        "milestones_url": f"{base}/milestones{{/number}}",
        "notifications_url": f"{base}/notifications{{?since,all,participating}}",
        "labels_url": f"{base}/labels{{/name}}",
        "releases_url": f"{base}/releases{{/id}}",
        "deployments_url": f"{base}/deployments",
    }


def _full_repository(repo: _Repo, api: str) -> dict[str, Json]:
    obj = _minimal_repository(repo, api)
    html = obj["html_url"]
    obj.update(
        {
            "git_url": f"git://github.com/{repo.full_name}.git",
            "ssh_url": f"git@github.com:{repo.full_name}.git",
            "clone_url": f"{html}.git",
            "svn_url": html,
            "mirror_url": None,
            "homepage": None,
            "language": "Python",
            "forks_count": 0,
            "stargazers_count": 0,
            "watchers_count": 0,
            "size": 128,
            "default_branch": repo.default_branch,
            "open_issues_count": 0,
            "is_template": False,
            "topics": [],
            "has_issues": True,
            "has_projects": True,
            "has_wiki": False,
            "has_pages": False,
            "has_downloads": True,
            "has_discussions": False,
            "archived": False,
            "disabled": False,
            "visibility": "private" if repo.private else "public",
            "pushed_at": repo.pushed_at,
            "created_at": repo.created_at,
            "updated_at": repo.pushed_at,
            "permissions": {
                "admin": False,
                "maintain": False,
                "push": False,
                "triage": False,
                "pull": True,
            },
            "allow_forking": True,
            "web_commit_signoff_required": False,
            "license": None,
            "forks": 0,
            "open_issues": 0,
            "watchers": 0,
            "network_count": 0,
            "subscribers_count": 1,
        }
    )
    if repo.owner_type == "Organization":
        obj["organization"] = obj["owner"]
    return obj


def _commit(repo: _Repo, commit: _Commit, api: str) -> dict[str, Json]:
    base = f"{api}/repos/{repo.owner}/{repo.name}"
    html = f"{HTML_BASE}/{repo.full_name}"
    tree = hashlib.sha1(b"tree" + commit.sha.encode(), usedforsecurity=False).hexdigest()
    person = {
        "name": commit.author,
        "email": "standin-bot@users.noreply.github.com",
        "date": commit.date,
    }
    return {
        "sha": commit.sha,
        "node_id": _node_id(f"06:Commit{repo.id}:{commit.sha}"),
        "commit": {
            "author": person,
            "committer": dict(person),
            "message": commit.message,
            "tree": {"sha": tree, "url": f"{base}/git/trees/{tree}"},
            "url": f"{base}/git/commits/{commit.sha}",
            "comment_count": 0,
            "verification": {
                "verified": False,
                "reason": "unsigned",
                "signature": None,
                "payload": None,
                "verified_at": None,
            },
        },
        "url": f"{base}/commits/{commit.sha}",
        "html_url": f"{html}/commit/{commit.sha}",
        "comments_url": f"{base}/commits/{commit.sha}/comments",
        "author": _simple_user(_BOT_LOGIN, _BOT_ID, "User", api),
        "committer": _simple_user(_BOT_LOGIN, _BOT_ID, "User", api),
        "parents": [
            {"sha": p, "url": f"{base}/commits/{p}", "html_url": f"{html}/commit/{p}"}
            for p in commit.parents
        ],
    }


def _ancestry(repo: _Repo, sha: str, limit: int = 10_000) -> list[str]:
    """sha and its first-parent ancestors, newest first."""
    out: list[str] = []
    current: str | None = sha
    while current is not None and current in repo.commits and len(out) < limit:
        out.append(current)
        parents = repo.commits[current].parents
        current = parents[0] if parents else None
    return out


def _compare(
    repo: _Repo, basehead: str, api: str, query: Mapping[str, list[str]]
) -> dict[str, Json] | None:
    """GET /compare/{base}...{head} over first-parent history (paginated like GitHub's)."""
    base_ref, _, head_ref = basehead.partition("...")
    base, head = _resolve_commit(repo, base_ref), _resolve_commit(repo, head_ref)
    if base is None or head is None:
        return None
    head_line, base_line = _ancestry(repo, head), _ancestry(repo, base)
    if base in head_line:
        ahead, behind, merge_base = head_line[: head_line.index(base)], [], base
    elif head in base_line:
        ahead, behind, merge_base = [], base_line[: base_line.index(head)], head
    else:
        common = next((c for c in head_line if c in set(base_line)), None)
        if common is None:  # unrelated histories: GitHub answers 404 for these
            return None
        ahead = head_line[: head_line.index(common)]
        behind = base_line[: base_line.index(common)]
        merge_base = common
    status = (
        "identical"
        if base == head
        else "ahead"
        if not behind
        else ("behind" if not ahead else "diverged")
    )
    per_page = min(int((query.get("per_page") or ["250"])[0]), 250)
    page = max(int((query.get("page") or ["1"])[0]), 1)
    oldest_first = list(reversed(ahead))
    shown = oldest_first[(page - 1) * per_page : page * per_page]
    html = f"{HTML_BASE}/{repo.full_name}"
    return {
        "url": f"{api}/repos/{repo.owner}/{repo.name}/compare/{basehead}",
        "html_url": f"{html}/compare/{basehead}",
        "permalink_url": f"{html}/compare/{repo.owner}:{base}...{repo.owner}:{head}",
        "diff_url": f"{html}/compare/{basehead}.diff",
        "patch_url": f"{html}/compare/{basehead}.patch",
        "base_commit": _commit(repo, repo.commits[base], api),
        "merge_base_commit": _commit(repo, repo.commits[merge_base], api),
        "status": status,
        "ahead_by": len(ahead),
        "behind_by": len(behind),
        "total_commits": len(ahead),
        "commits": [_commit(repo, repo.commits[c], api) for c in shown],
        "files": [],
    }


def _branch(repo: _Repo, branch: str, sha: str, api: str) -> dict[str, Json]:
    base = f"{api}/repos/{repo.owner}/{repo.name}/branches/{_q(branch)}"
    return {
        "name": branch,
        "commit": _commit(repo, repo.commits[sha], api),
        "_links": {"self": base, "html": f"{HTML_BASE}/{repo.full_name}/tree/{branch}"},
        "protected": False,
        "protection": {
            "enabled": False,
            "required_status_checks": {"enforcement_level": "off", "contexts": [], "checks": []},
        },
        "protection_url": f"{base}/protection",
    }


def _git_ref(repo: _Repo, branch: str, sha: str, api: str) -> dict[str, Json]:
    base = f"{api}/repos/{repo.owner}/{repo.name}/git"
    return {
        "ref": f"refs/heads/{branch}",
        "node_id": _node_id(f"03:Ref{repo.id}:refs/heads/{branch}"),
        "url": f"{base}/refs/heads/{_q(branch)}",
        "object": {"type": "commit", "sha": sha, "url": f"{base}/commits/{sha}"},
    }


def _combined_state(checks: Sequence[_Check]) -> str:
    states = {c.state for c in checks}
    if not states:
        return "pending"
    if states & {"failure", "error"}:
        return "failure"
    if "pending" in states:
        return "pending"
    return "success"


def _combined_status(repo: _Repo, sha: str, api: str) -> dict[str, Json]:
    base = f"{api}/repos/{repo.owner}/{repo.name}"
    checks = repo.checks.get(sha, [])
    statuses = [
        {
            "url": f"{base}/statuses/{sha}",
            "avatar_url": f"https://avatars.githubusercontent.com/u/{_BOT_ID}?v=4",
            "id": c.id,
            "node_id": _node_id(f"013:StatusContext{c.id}"),
            "state": c.state,
            "description": f"{c.name}: {c.state}",
            "target_url": f"https://ci.example.com/{c.id}",
            "context": c.name,
            "created_at": c.created_at,
            "updated_at": c.created_at,
        }
        for c in checks
    ]
    return {
        "state": _combined_state(checks),
        "statuses": statuses,
        "sha": sha,
        "total_count": len(statuses),
        "repository": _minimal_repository(repo, api),
        "commit_url": f"{base}/commits/{sha}",
        "url": f"{base}/commits/{sha}/status",
    }


_ACTIONS_APP_ID = 15368


def _check_runs(repo: _Repo, sha: str, api: str, query: Mapping[str, list[str]]) -> dict[str, Json]:
    base = f"{api}/repos/{repo.owner}/{repo.name}"
    app = {
        "id": _ACTIONS_APP_ID,
        "slug": "github-actions",
        "node_id": "MDM6QXBwMTUzNjg=",
        "owner": _simple_user("github", 9919, "Organization", api),
        "name": "GitHub Actions",
        "description": "Automate your workflow from idea to production",
        "external_url": "https://help.github.com/en/actions",
        "html_url": f"{HTML_BASE}/apps/github-actions",
        "created_at": "2018-07-30T09:30:17Z",
        "updated_at": "2019-12-10T19:04:12Z",
        "permissions": {
            "actions": "write",
            "checks": "write",
            "contents": "write",
            "metadata": "read",
        },
        "events": ["check_run", "check_suite", "push"],
    }
    wanted_name = query["check_name"][0] if query.get("check_name") else None
    wanted_status = query["status"][0] if query.get("status") else None
    runs = []
    for c in repo.checks.get(sha, []):
        done = c.state != "pending"
        status = "completed" if done else "in_progress"
        if wanted_name is not None and c.name != wanted_name:
            continue
        if wanted_status is not None and status != wanted_status:
            continue
        runs.append(
            {
                "id": c.id,
                "head_sha": sha,
                "node_id": _node_id(f"08:CheckRun{c.id}"),
                "external_id": "",
                "url": f"{base}/check-runs/{c.id}",
                "html_url": f"{HTML_BASE}/{repo.full_name}/runs/{c.id}",
                "details_url": f"{HTML_BASE}/{repo.full_name}/runs/{c.id}",
                "status": status,
                "conclusion": ("success" if c.state == "success" else "failure") if done else None,
                "started_at": c.created_at,
                "completed_at": c.created_at if done else None,
                "output": {
                    "title": None,
                    "summary": None,
                    "text": None,
                    "annotations_count": 0,
                    "annotations_url": f"{base}/check-runs/{c.id}/annotations",
                },
                "name": c.name,
                "check_suite": {"id": c.id + 1},
                "app": app,
                "pull_requests": [],
            }
        )
    return {"total_count": len(runs), "check_runs": runs}


# --------------------------------------------------------------------------------------------
# GraphQL: cost model, resolvers, error shape
# --------------------------------------------------------------------------------------------


def _graphql_cost(
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


def _gql_field_resolver(source: Any, info: GraphQLResolveInfo[Any], **args: Any) -> Any:
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


def _format_gql_error(formatted: Mapping[str, Json]) -> dict[str, Json]:
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


class _GqlBuilder:
    """Builds dict-shaped GraphQL objects over a repository (read under the stand-in lock)."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock

    def repository(self, repo: _Repo) -> dict[str, Json]:
        with self._lock:
            default_sha = repo.branches.get(repo.default_branch)
            default_branch = repo.default_branch
            private = repo.private
            pushed_at = repo.pushed_at
        obj: dict[str, Json] = {
            "__typename": "Repository",
            "id": _node_id(f"010:Repository{repo.id}"),
            "databaseId": repo.id,
            "name": repo.name,
            "nameWithOwner": repo.full_name,
            "owner": {
                "__typename": repo.owner_type,
                "id": _node_id(f"04:{repo.owner_type}{repo.owner_id}"),
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
                    sha = _resolve_commit(repo, expression)
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

    def ref(self, repo: _Repo, repo_obj: dict[str, Json], branch: str, sha: str) -> dict[str, Json]:
        return {
            "__typename": "Ref",
            "id": _node_id(f"03:Ref{repo.id}:refs/heads/{branch}"),
            "name": branch,
            "prefix": "refs/heads/",
            "repository": repo_obj,
            "target": self.commit(repo, repo_obj, sha),
        }

    def commit(self, repo: _Repo, repo_obj: dict[str, Json], sha: str) -> dict[str, Json] | None:
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
            state = _combined_state(checks).upper()
            rollup = {
                "__typename": "StatusCheckRollup",
                "id": _node_id(f"rollup:{sha}"),
                "state": state,
            }
        return {
            "__typename": "Commit",
            "id": _node_id(f"06:Commit{repo.id}:{sha}"),
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
                "id": _node_id(f"status:{sha}"),
                "state": rollup["state"],
            },
        }
