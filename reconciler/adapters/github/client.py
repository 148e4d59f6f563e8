"""The request path to GitHub: PyGithub's Requester per thread, read-only retries, the
rate-limit rules (retry-after, an exhausted limit fails fast), an adaptive number of requests in
flight (core.pace: inside GitHub's secondary limits), conditional GETs."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import requests
import urllib3
from github import Auth, Github, GithubException
from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import MaxRetryError
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from reconciler.core.errors import ErrorKind, GitHubError
from reconciler.core.model import (
    HeadError,
)
from reconciler.core.pace import Pace
from reconciler.core.ports import RateLimit
from reconciler.settings import GitHubSettings

__all__ = ["GitHubClient", "Halt", "Response"]

log = logging.getLogger(__name__)


def _auth(settings: GitHubSettings) -> Auth.Auth | None:
    """PyGithub's auth for the settings' GitHub App installation or token (None: anonymous)."""
    if settings.app_id and settings.app_private_key and settings.app_installation_id is not None:
        app = Auth.AppAuth(settings.app_id, settings.app_private_key)
        return app.get_installation_auth(settings.app_installation_id)
    if settings.token:
        return Auth.Token(settings.token)
    return None


class Halt(Exception):
    """Stop asking GitHub in this sync (bad credentials, primary limit exhausted)."""

    def __init__(self, error: HeadError) -> None:
        super().__init__(error.reason)
        self.error = error


class Throttle:
    """The requests in flight to GitHub, at the adaptive pace of core.pace (one per client, so
    every reader of heads, checks and commits shares it). Its pause is on the monotonic clock."""

    def __init__(self, pace: Pace, *, max_wait: float) -> None:
        self.pace = pace
        self.max_wait = max_wait
        self.in_flight = 0
        self.peak = 0  # the most requests in flight at once (the benchmark reports it)
        self.limited_answers = 0
        self._cond = threading.Condition()

    @contextmanager
    def slot(self, budget: Callable[[], int | None], *, waited: bool = False) -> Iterator[None]:
        """Hold one of the requests in flight; `waited`: this thread has just waited out the
        pause itself (it retries at once). A pause longer than max_wait raises Halt; so does
        `budget` (the primary limit's remaining requests, None: not known yet), and no more
        requests are in flight than it has room for."""
        with self._cond:
            while True:
                now = time.monotonic()
                pause = 0.0 if waited else self.pace.wait(now)
                if pause > self.max_wait:
                    raise Halt(_paused(pause))
                room = budget()
                cap = self.pace.bounded if room is None else min(self.pace.bounded, room)
                if pause <= 0 and self.in_flight < cap:
                    break
                self._cond.wait(pause if pause > 0 else None)
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            yield
        finally:
            with self._cond:
                self.in_flight -= 1
                self._cond.notify_all()

    def answered(self) -> None:
        with self._cond:
            self.pace = self.pace.answered()
            self._cond.notify_all()

    def limited(self, retry_after: float) -> None:
        with self._cond:
            self.limited_answers += 1
            self.pace = self.pace.limited(retry_after, time.monotonic())


def _paused(wait: float) -> HeadError:
    when = time.strftime("%H:%M:%S UTC", time.gmtime(time.time() + wait))
    return HeadError(
        f"GitHub secondary rate limit reached; not retrying before {when} (in {wait:.0f}s); "
        "no request sent; the next sync will pick this site up",
        ErrorKind.RATE_LIMITED,
    )


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, Any]
    body: str

    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None

    @property
    def message(self) -> str:
        data = self.json()
        return str(data.get("message", "")) if isinstance(data, dict) else self.body[:200]


class GitHubClient:
    """The request path to GitHub with its rate-limit rules (shared by the readers of heads,
    checks and commits, and by GitHub Deployments): one PyGithub Requester per thread."""

    def __init__(
        self,
        settings: GitHubSettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._auth = _auth(settings)
        self._sleep = sleep
        self.clock = clock
        self._local = threading.local()
        self._lock = threading.Lock()
        self._limits: dict[str, RateLimit] = {}
        self._etags: dict[str, tuple[str, str]] = {}  # url -> (etag, value)
        self.throttle = Throttle(
            Pace(limit=settings.concurrency, ceiling=settings.max_concurrency),
            max_wait=settings.max_retry_wait,
        )

    # -- plumbing -----------------------------------------------------------------------------

    def _requester(self) -> Any:
        """A Github per thread: PyGithub's Requester is not thread-safe."""
        gh = getattr(self._local, "github", None)
        if gh is None:
            retry = _ReadRetry(
                total=3,
                connect=3,
                read=2,
                status=3,
                backoff_factor=0.5,
                backoff_max=5,
                status_forcelist=(500, 502, 503, 504),
                allowed_methods=frozenset({"GET", "POST"}),  # GraphQL POSTs only: _ReadRetry
                respect_retry_after_header=True,
                raise_on_status=False,
            )
            gh = Github(
                auth=self._auth,
                base_url=self.settings.api_url,
                timeout=int(self.settings.timeout),
                retry=retry,
                pool_size=self.settings.concurrency,
                seconds_between_requests=None,  # PyGithub's default throttles to 4 requests/s
                seconds_between_writes=None,  # ... and GraphQL POSTs to 1/s
                user_agent="reconciler",
            )
            self._local.github = gh
        return gh.requester

    def bearer(self) -> str | None:
        """The token requests carry now: the token, or the App installation's, which PyGithub
        fetches and renews before it expires (None: anonymous). Shared with GitRepoWriter, so
        config-repository writes use the identity the reads use."""
        if self._auth is None:
            return None
        self._requester()  # an installation auth needs a requester to fetch its token
        token: str = self._auth.token
        return token

    def request(
        self, verb: str, url: str, *, headers: dict[str, str] | None = None, body: Any = None
    ) -> Response:
        """One request with GitHub's rate-limit rules applied; raises Halt or GitHubError."""
        resource = "graphql" if url.endswith("graphql") else "core"
        self._check_budget(resource)
        for attempt in range(3):
            try:
                with self.throttle.slot(lambda: self._check_budget(resource), waited=attempt > 0):
                    status, hdrs, text = self._requester().requestJson(
                        verb, url, None, headers, body
                    )
                    hdrs = {k.lower(): v for k, v in hdrs.items()}
                    self._note_limits(hdrs)  # before the next request may start
            except requests.exceptions.RetryError as exc:  # urllib3 retries exhausted
                raise GitHubError(
                    f"GitHub kept failing ({exc})", kind=ErrorKind.GITHUB_UNAVAILABLE
                ) from exc
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
                raise GitHubError(
                    self._unreachable(exc), kind=ErrorKind.GITHUB_UNREACHABLE
                ) from exc
            except GithubException as exc:
                raise GitHubError(f"GitHub error: {exc}", kind=ErrorKind.GITHUB) from exc
            response = Response(status, hdrs, text)
            wait = self._retry_wait(response)
            if wait is None:
                self.throttle.answered()
                return response
            if response.headers.get("retry-after") is not None or _secondary(response):
                self.throttle.limited(wait)  # fewer in flight, none before retry-after
            if wait > self.settings.max_retry_wait or attempt == 2:
                raise Halt(self.limited(response, wait))
            log.warning("GitHub asked us to wait %.0fs (%s); waiting", wait, response.message)
            self._sleep(wait)
        raise AssertionError("unreachable")

    def _unreachable(self, exc: BaseException) -> str:
        """What went wrong on the network, from the innermost cause (urllib3 wraps it twice)."""
        url = self.settings.api_url
        cause = _root_cause(exc)
        if isinstance(cause, urllib3.exceptions.ReadTimeoutError | socket.timeout):
            return f"GitHub did not answer within {self.settings.timeout:g} s ({url})"
        if isinstance(cause, urllib3.exceptions.ConnectTimeoutError):
            return f"cannot reach GitHub at {url}: no connection within {self.settings.timeout:g} s"
        reason = getattr(cause, "strerror", None) or type(cause).__name__
        return f"cannot reach GitHub at {url}: {reason}"

    def _retry_wait(self, r: Response) -> float | None:
        """Seconds to wait before retrying a rate-limited answer, None when it was not limited."""
        if r.status == 401:
            raise Halt(
                HeadError(
                    "GitHub rejected the credentials (401 Bad credentials): check GITHUB_TOKEN "
                    "or the GitHub App settings",
                    ErrorKind.AUTH,
                )
            )
        if r.status not in (403, 429):
            return None
        retry_after = r.headers.get("retry-after")
        if retry_after is not None:
            try:
                return max(0.0, float(retry_after))
            except ValueError:
                return 60.0
        if str(r.headers.get("x-ratelimit-remaining")) == "0":
            reset = float(r.headers.get("x-ratelimit-reset", self.clock() + 3600))
            return max(0.0, reset - self.clock()) + 1
        if _secondary(r):
            return 60.0
        return None  # a plain 403 (e.g. SAML, permissions) is the caller's to report

    def limited(self, r: Response, wait: float) -> HeadError:
        resource = r.headers.get("x-ratelimit-resource", "core")
        when = time.strftime("%H:%M:%S UTC", time.gmtime(self.clock() + wait))
        which = "secondary" if r.headers.get("retry-after") else f"primary ({resource})"
        return HeadError(
            f"GitHub {which} rate limit reached; not retrying before {when} "
            f"(in {wait:.0f}s); the next sync will pick this site up",
            ErrorKind.RATE_LIMITED,
        )

    def _note_limits(self, headers: Mapping[str, Any]) -> None:
        if "x-ratelimit-remaining" not in headers:
            return
        try:
            limit = RateLimit(
                limit=int(float(headers.get("x-ratelimit-limit", 0))),
                remaining=int(float(headers["x-ratelimit-remaining"])),
                reset_epoch=float(headers.get("x-ratelimit-reset", 0)),
                resource=str(headers.get("x-ratelimit-resource", "core")),
            )
        except ValueError:
            return
        with self._lock:
            self._limits[limit.resource] = limit

    def _check_budget(self, resource: str) -> int | None:
        """Never send a request GitHub would refuse: fail fast while the limit is exhausted;
        the requests left (None: not known yet, or the limit has reset)."""
        with self._lock:
            limit = self._limits.get(resource)
        if limit and limit.remaining <= 0 and limit.reset_epoch > self.clock():
            wait = limit.reset_epoch - self.clock()
            when = time.strftime("%H:%M:%S UTC", time.gmtime(limit.reset_epoch))
            raise Halt(
                HeadError(
                    f"GitHub {resource} rate limit exhausted ({limit.limit}/h); it resets at "
                    f"{when} (in {wait:.0f}s); no request sent",
                    ErrorKind.RATE_LIMITED,
                )
            )
        return limit.remaining if limit and limit.reset_epoch > self.clock() else None

    def rate_limits(self) -> Mapping[str, RateLimit]:
        with self._lock:
            return dict(self._limits)

    def graphql_url(self) -> str:
        return str(self._requester().graphql_url)

    def conditional(self, url: str, accept: str) -> Response:
        """GET with If-None-Match from the last answer: GitHub does not charge an authorized 304."""
        with self._lock:
            cached = self._etags.get(url)
        headers = {"Accept": accept}
        if cached:
            headers["If-None-Match"] = cached[0]
        r = self.request("GET", url, headers=headers)
        if r.status == 304 and cached:
            return Response(200, r.headers, cached[1])
        etag = r.headers.get("etag")
        if r.status == 200 and etag:
            with self._lock:
                self._etags[url] = (str(etag), r.body)
        return r


def _secondary(r: Response) -> bool:
    return r.status in (403, 429) and "secondary rate limit" in r.message.lower()


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost error behind requests' and urllib3's wrappers (MaxRetryError.reason, args)."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "reason", None)
        if not isinstance(inner, BaseException):
            inner = next((a for a in exc.args if isinstance(a, BaseException)), None)
        if inner is None:
            inner = exc.__cause__ or exc.__context__
        if inner is None:
            return exc
        exc = inner
    return exc


class _ReadRetry(Retry):
    """urllib3's retries for reads (GET, and GraphQL POSTs, which only read here), never for a
    REST POST that creates something: GitHub may have done it before its answer was lost."""

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        if method == "POST" and url is not None and not urlsplit(url).path.endswith("/graphql"):
            raise MaxRetryError(_pool, url, error)  # type: ignore[arg-type]  # it takes None
        return super().increment(method, url, response, error, _pool, _stacktrace)
