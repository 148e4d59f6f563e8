"""The loopback HTTP server and GitHubStandIn: lifecycle, latency, dispatch, headers, validation."""

from __future__ import annotations

import math
import random
import secrets
import socket
import sys
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from testkit.github import gitrest, rest, web
from testkit.github.gitstate import GitRepoState
from testkit.github.graphql import GraphQLApi
from testkit.github.ratelimits import (
    Caller,
    exhausted_reply,
    fault_reply,
    parse_token,
    secondary_reply,
)
from testkit.github.replies import DOCS, Headers, Reply, error
from testkit.github.schemas import preload, rest_schema_errors
from testkit.processes import Started

_GRAPHQL_PATHS = frozenset({"/graphql", "/api/graphql"})
_WRITE_ROUTES = gitrest  # registers the Contents, Git data and pull-request routes


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


class GitHubStandIn(GraphQLApi, GitRepoState, Started):
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
        memo_answers: bool = False,
    ) -> None:
        super().__init__()
        self.memo_answers = memo_answers
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
        self._rng = random.Random(seed)
        self._graphql_log = deque(maxlen=graphql_log_size)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        for token in tokens:
            self.add_token(token)

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> Self:
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

    # ---- request handling ----------------------------------------------------------------

    def _latency_s(self) -> float:
        median = self.latency_median_ms
        if median <= 0:
            return 0.0
        if self.latency_sigma <= 0:
            return median / 1000
        with self._lock:
            return self._rng.lognormvariate(math.log(median / 1000), self.latency_sigma)

    def _handle(self, method: str, raw_path: str, headers: Headers, body: bytes, ip: str) -> Reply:
        in_flight = self._enter()
        try:
            delay = self._latency_s()
            if delay > 0:
                time.sleep(delay)  # the simulated network and server time, not synchronisation
            try:
                return self._dispatch(method, raw_path, headers, body, ip=ip, in_flight=in_flight)
            except Exception as exc:
                message = f"{method} {raw_path}: {type(exc).__name__}: {exc}"
                with self._lock:
                    self.internal_errors.append(message)
                return Reply(
                    500, {"message": f"GitHub stand-in crashed: {message}"}, validate=False
                )
        finally:
            self._leave()

    def _dispatch(
        self, method: str, raw_path: str, headers: Headers, body: bytes, *, ip: str, in_flight: int
    ) -> Reply:
        split = urllib.parse.urlsplit(raw_path)
        path = split.path
        if path.startswith("/api/v3/"):
            path = path[7:]
        web_page = web.page(method, path, self._find_repo)
        if web_page is not None:  # a link of the status page, not an API call
            return web_page
        graphql = method == "POST" and path in _GRAPHQL_PATHS
        found = None if graphql else rest.match(method, path)
        route = "graphql" if graphql else found[0].name if found else "other"

        caller = self._caller(parse_token(headers.get("Authorization")), ip)
        if caller is None:
            reply = Reply(401, error(401, "Bad credentials", DOCS))
            anonymous = self._caller(None, ip)
            assert anonymous is not None
            self._with_bucket(reply, anonymous)
        elif graphql:
            reply = self._limited(caller, path, "graphql", in_flight) or self._graphql(caller, body)
        else:
            if method not in ("GET", "HEAD"):  # a REST write may change what GraphQL answers
                with self._lock:
                    self.generation += 1
            reply = self._limited(caller, path, "core", in_flight) or self._rest(
                found, split.query, headers, body, caller
            )
            lost = self._take_after_fault(route) if reply.status < 300 else None
            if lost is not None:  # done, but the answer is a failure
                self._bump("faults_injected")
                reply = fault_reply(lost)
                reply.resource = "core"
                self._with_bucket(reply, caller)
        self._finish(reply)
        self._record(route, caller, reply)
        return reply

    def _limited(self, caller: Caller, path: str, resource: str, in_flight: int) -> Reply | None:
        """The secondary-limit or injected-fault answer, if this request gets one."""
        if in_flight > self.max_concurrent:
            self._bump("secondary_limited")
            reply = secondary_reply(self.secondary_retry_after_s)
        else:
            fault = self._take_fault(path)
            if fault is None:
                return None
            self._bump("faults_injected")
            reply = fault_reply(fault)
        reply.resource = resource
        return self._with_bucket(reply, caller)

    def _rest(
        self,
        found: tuple[rest.Route, dict[str, str]] | None,
        query: str,
        headers: Headers,
        body: bytes,
        caller: Caller,
    ) -> Reply:
        charged = found is None or found[0].charged
        bucket = None
        if charged:
            ok, bucket = self._charge(caller, "core", 1)
            if not ok:
                self._bump("rate_limited")
                return exhausted_reply(self.rate_limit_status, caller, bucket)
        with self._lock:
            reply = rest.answer(
                found,
                api=self.url,
                query=urllib.parse.parse_qs(query),
                headers=headers,
                body=body,
                caller=caller,
                limits=self,
                repos=self._find_repo,
            )
        if not charged:
            return self._with_bucket(reply, caller)
        reply.bucket = bucket
        reply.points = 1
        if reply.status == 304 and caller.token is not None:
            self._refund(caller, "core", 1)
            reply.points = 0
        return reply

    def _finish(self, reply: Reply) -> None:
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
