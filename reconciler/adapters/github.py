"""The GitHub adapter (the only module that talks to PyGithub): branch heads and commit checks."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, urlsplit

import requests
import urllib3
from github import Auth, Github, GithubException
from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import MaxRetryError
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from reconciler.core.errors import DeliveryError, ErrorKind, GitHubError
from reconciler.core.fanout import bounded_map
from reconciler.core.messages import MAX_COMMITS, Commit, Comparison, Notification
from reconciler.core.model import (
    BranchHead,
    CommitState,
    HeadError,
    HeadResult,
    ImageStatus,
    RepoRef,
)
from reconciler.core.notifyconfig import Channel, EventKind
from reconciler.core.ports import RateLimit, VerifyRequest
from reconciler.settings import GitHubSettings

__all__ = ["GitHubSettings", "GitHubSource"]

log = logging.getLogger(__name__)

SHA_MEDIA_TYPE = "application/vnd.github.sha"
BATCH_SIZE = 100  # GitHub charges 1 point for up to ~100 repository fields with no connections


def _auth(settings: GitHubSettings) -> Auth.Auth | None:
    """PyGithub's auth for the settings' GitHub App installation or token (None: anonymous)."""
    if settings.app_id and settings.app_private_key and settings.app_installation_id is not None:
        app = Auth.AppAuth(settings.app_id, settings.app_private_key)
        return app.get_installation_auth(settings.app_installation_id)
    if settings.token:
        return Auth.Token(settings.token)
    return None


class _Halt(Exception):
    """Stop asking GitHub in this sync (bad credentials, primary limit exhausted)."""

    def __init__(self, error: HeadError) -> None:
        super().__init__(error.reason)
        self.error = error


@dataclass(frozen=True, slots=True)
class _Response:
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


class GitHubSource:
    """Resolves branch heads in batches: GraphQL (1 point per 100 repos) or conditional REST."""

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
        self._clock = clock
        self._local = threading.local()
        self._lock = threading.Lock()
        self._limits: dict[str, RateLimit] = {}
        self._etags: dict[str, tuple[str, str]] = {}  # url -> (etag, value)

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

    def _request(
        self, verb: str, url: str, *, headers: dict[str, str] | None = None, body: Any = None
    ) -> _Response:
        """One request with GitHub's rate-limit rules applied; raises _Halt or GitHubError."""
        self._check_budget("graphql" if url.endswith("graphql") else "core")
        for attempt in range(3):
            try:
                status, hdrs, text = self._requester().requestJson(verb, url, None, headers, body)
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
            response = _Response(status, {k.lower(): v for k, v in hdrs.items()}, text)
            self._note_limits(response.headers)
            wait = self._retry_wait(response)
            if wait is None:
                return response
            if wait > self.settings.max_retry_wait or attempt == 2:
                raise _Halt(self._limited(response, wait))
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

    def _retry_wait(self, r: _Response) -> float | None:
        """Seconds to wait before retrying a rate-limited answer, None when it was not limited."""
        if r.status == 401:
            raise _Halt(
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
            reset = float(r.headers.get("x-ratelimit-reset", self._clock() + 3600))
            return max(0.0, reset - self._clock()) + 1
        if "secondary rate limit" in r.message.lower():
            return 60.0
        return None  # a plain 403 (e.g. SAML, permissions) is the caller's to report

    def _limited(self, r: _Response, wait: float) -> HeadError:
        resource = r.headers.get("x-ratelimit-resource", "core")
        when = time.strftime("%H:%M:%S UTC", time.gmtime(self._clock() + wait))
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

    def _check_budget(self, resource: str) -> None:
        """Never send a request GitHub would refuse: fail fast while the limit is exhausted."""
        with self._lock:
            limit = self._limits.get(resource)
        if limit and limit.remaining <= 0 and limit.reset_epoch > self._clock():
            wait = limit.reset_epoch - self._clock()
            when = time.strftime("%H:%M:%S UTC", time.gmtime(limit.reset_epoch))
            raise _Halt(
                HeadError(
                    f"GitHub {resource} rate limit exhausted ({limit.limit}/h); it resets at "
                    f"{when} (in {wait:.0f}s); no request sent",
                    ErrorKind.RATE_LIMITED,
                )
            )

    def rate_limits(self) -> Mapping[str, RateLimit]:
        with self._lock:
            return dict(self._limits)

    # -- branch heads ---------------------------------------------------------------------------

    def resolve(self, refs: Collection[RepoRef]) -> Mapping[RepoRef, HeadResult]:
        """Every ref's head; each failure becomes that ref's HeadError, never an exception."""
        if not refs:
            return {}
        use_graphql = self.settings.strategy == "graphql" or (
            self.settings.strategy == "auto" and self.settings.authenticated
        )
        if use_graphql:
            return self._resolve_graphql(refs)
        return self._resolve_rest(refs)

    def _fan_out(
        self,
        work: Iterable[Any],
        task: Callable[[Any], Mapping[RepoRef, HeadResult]],
        keys: Callable[[Any], Iterable[RepoRef]],
    ) -> dict[RepoRef, HeadResult]:
        """Run `task` over `work` with bounded concurrency; a halt fails what has not run yet."""
        items = list(work)
        out: dict[RepoRef, HeadResult] = {}
        halted: list[HeadError] = []

        def guarded(item: Any) -> Mapping[RepoRef, HeadResult]:
            if halted:
                return dict.fromkeys(keys(item), halted[0])
            try:
                return task(item)
            except _Halt as halt:
                halted.append(halt.error)
                return dict.fromkeys(keys(item), halt.error)
            except GitHubError as exc:
                return dict.fromkeys(keys(item), HeadError(str(exc), exc.kind))

        for result in bounded_map(guarded, items, limit=self.settings.concurrency, name="github"):
            out.update(result)
        return out

    def _resolve_graphql(self, refs: Collection[RepoRef]) -> dict[RepoRef, HeadResult]:
        by_repo: dict[str, list[RepoRef]] = {}
        for ref in sorted(refs, key=lambda r: (r.repo.lower(), r.branch or "")):
            by_repo.setdefault(ref.repo.lower(), []).append(ref)
        groups = list(by_repo.values())
        batches = [groups[i : i + BATCH_SIZE] for i in range(0, len(groups), BATCH_SIZE)]
        return self._fan_out(
            batches, self._graphql_batch, lambda batch: [r for group in batch for r in group]
        )

    def _graphql_batch(self, batch: list[list[RepoRef]]) -> dict[RepoRef, HeadResult]:
        query, variables, aliases = _heads_query(batch, self.settings.lookback)
        response = self._request(
            "POST", self._graphql_url(), body={"query": query, "variables": variables}
        )
        if response.status >= 400:
            raise GitHubError(
                f"GitHub GraphQL answered {response.status}: {response.message}",
                kind=ErrorKind.GITHUB,
            )
        payload = response.json() or {}
        data = payload.get("data") or {}
        errors = {
            str(e["path"][0]): e
            for e in payload.get("errors") or []
            if isinstance(e, dict) and e.get("path")
        }
        general = [e for e in payload.get("errors") or [] if not e.get("path")]
        if any(e.get("type") == "RATE_LIMITED" for e in general):
            reset = float(response.headers.get("x-ratelimit-reset", self._clock() + 3600))
            raise _Halt(self._limited(response, max(0.0, reset - self._clock())))
        if not data and general:
            message = "; ".join(str(e.get("message")) for e in general)
            raise GitHubError(
                f"GitHub GraphQL rejected the query: {message}", kind=ErrorKind.GITHUB
            )
        self._note_graphql_cost(data.get("rateLimit"))
        out: dict[RepoRef, HeadResult] = {}
        missing: list[RepoRef] = []
        for alias, group in aliases.items():
            node = data.get(alias)
            repo = group[0][0].repo
            if node is None:
                error = errors.get(alias, {})
                kind = (
                    ErrorKind.REPO_NOT_FOUND
                    if error.get("type") == "NOT_FOUND"
                    else ErrorKind.GITHUB
                )
                reason = (
                    f"repository {repo} not found (or the credentials cannot see it)"
                    if kind is ErrorKind.REPO_NOT_FOUND
                    else f"GitHub could not answer for {repo}: {error.get('message', 'no data')}"
                )
                out.update(dict.fromkeys((ref for ref, _ in group), HeadError(reason, kind)))
                continue
            for ref, field in group:
                target = node.get(field)
                if target is None or not (target.get("target") or {}).get("oid"):
                    if ref.branch is None:
                        out[ref] = HeadError(
                            f"repository {repo} has no default branch (is it empty?)",
                            ErrorKind.BRANCH_NOT_FOUND,
                        )
                    else:
                        missing.append(ref)
                    continue
                head = target["target"]
                out[ref] = BranchHead(ref.repo, target["name"], head["oid"], _history(head))
        for ref in missing:
            out[ref] = self._missing_branch(ref)
        return out

    def _graphql_url(self) -> str:
        return str(self._requester().graphql_url)

    def _note_graphql_cost(self, rate: Any) -> None:
        if not isinstance(rate, dict) or "remaining" not in rate:
            return
        log.debug("GitHub GraphQL cost %s, %s points left", rate.get("cost"), rate["remaining"])

    def _missing_branch(self, ref: RepoRef) -> HeadError:
        """A branch GraphQL did not find: ask REST once if it was renamed (GitHub redirects)."""
        assert ref.branch is not None
        try:
            r = self._request("GET", f"/repos/{ref.repo}/branches/{_quote(ref.branch)}")
        except (GitHubError, _Halt):
            r = None
        data = r.json() if r is not None and r.status == 200 else None
        if isinstance(data, dict) and data.get("name") and data["name"] != ref.branch:
            return HeadError(
                f'branch "{ref.branch}" of {ref.repo} was renamed to "{data["name"]}": '
                f'set branch = "{data["name"]}" in sites.toml',
                ErrorKind.BRANCH_RENAMED,
            )
        return HeadError(
            f'branch "{ref.branch}" not found in {ref.repo}', ErrorKind.BRANCH_NOT_FOUND
        )

    def _resolve_rest(self, refs: Collection[RepoRef]) -> dict[RepoRef, HeadResult]:
        return self._fan_out(sorted(refs, key=str), self._rest_one, lambda ref: [ref])

    def _rest_one(self, ref: RepoRef) -> dict[RepoRef, HeadResult]:
        branch = ref.branch
        if branch is None:
            r = self._conditional(f"/repos/{ref.repo}", "application/vnd.github+json")
            if r.status == 404:
                return {ref: _repo_missing(ref)}
            if r.status != 200:
                return {ref: _http_error(ref, r)}
            branch = str(json.loads(r.body)["default_branch"])
        r = self._conditional(f"/repos/{ref.repo}/commits/{_quote(branch)}", SHA_MEDIA_TYPE)
        if r.status == 200 and len(r.body.strip()) == 40:
            return {ref: BranchHead(ref.repo, branch, r.body.strip())}
        if r.status in (404, 422):
            if r.status == 404 and "commit" not in r.message.lower():
                probe = self._conditional(f"/repos/{ref.repo}", "application/vnd.github+json")
                if probe.status == 404:
                    return {ref: _repo_missing(ref)}
            return {ref: self._missing_branch(RepoRef(ref.repo, branch))}
        return {ref: _http_error(ref, r)}

    def _conditional(self, url: str, accept: str) -> _Response:
        """GET with If-None-Match from the last answer: GitHub does not charge an authorized 304."""
        with self._lock:
            cached = self._etags.get(url)
        headers = {"Accept": accept}
        if cached:
            headers["If-None-Match"] = cached[0]
        r = self._request("GET", url, headers=headers)
        if r.status == 304 and cached:
            return _Response(200, r.headers, cached[1])
        etag = r.headers.get("etag")
        if r.status == 200 and etag:
            with self._lock:
                self._etags[url] = (str(etag), r.body)
        return r

    # -- commit checks (verify = "checks") -----------------------------------------------------

    def verify(self, requests_: Collection[VerifyRequest]) -> Mapping[VerifyRequest, ImageStatus]:
        """ImageStatus per request from the checks of the commit its image was built from."""
        out: dict[VerifyRequest, ImageStatus] = {}
        seen: dict[tuple[str, str], tuple[list[_Check], str | None]] = {}
        for r in requests_:
            if r.mode != "checks":
                continue
            try:
                if (r.repo, r.sha) not in seen:
                    seen[(r.repo, r.sha)] = self._commit_checks(r.repo, r.sha)
                checks, problem = seen[(r.repo, r.sha)]
                out[r] = (
                    ImageStatus(None, problem, kind=ErrorKind.GITHUB)
                    if problem
                    else _checks_verdict(checks, r.sha, r.required_checks)
                )
            except _Halt as halt:
                out[r] = ImageStatus(None, halt.error.reason, kind=halt.error.kind)
            except GitHubError as exc:
                out[r] = ImageStatus(None, str(exc), kind=exc.kind)
        return out

    def _commit_checks(self, repo: str, sha: str) -> tuple[list[_Check], str | None]:
        """Every commit status and (latest) check run of a commit, all pages; or a problem."""
        checks: list[_Check] = []
        for what, items in (("status", "statuses"), ("check-runs", "check_runs")):
            for page in range(1, CHECK_PAGES + 1):
                url = f"/repos/{repo}/commits/{sha}/{what}?per_page=100&page={page}"
                r = self._request("GET", url)
                body = r.json()
                if r.status != 200 or not isinstance(body, dict):
                    return [], f"GitHub answered {r.status} for the checks of {sha[:7]}"
                got = [c for c in body.get(items) or [] if isinstance(c, dict)]
                checks += map(_Check.of_status if what == "status" else _Check.of_run, got)
                if len(got) < 100 or page * 100 >= int(body.get("total_count") or 0):
                    break
            else:
                return [], f"{sha[:7]} has more than {CHECK_PAGES * 100} {items}; not read"
        return checks, None

    # -- commits between two SHAs (notifications) ---------------------------------------------

    def compare(self, repo: str, base: str, head: str) -> Comparison:
        """The commits from base to head, newest MAX_COMMITS of them, in one REST request."""
        try:
            r = self._request("GET", f"/repos/{repo}/compare/{base}...{head}?per_page=100")
        except _Halt as halt:
            raise GitHubError(halt.error.reason, kind=halt.error.kind) from halt
        if r.status != 200:
            raise GitHubError(
                f"GitHub answered {r.status} comparing {repo} {base[:7]}...{head[:7]}: {r.message}"
            )
        data = r.json() or {}
        raw = data.get("commits") or []
        commits = tuple(_commit_line(c) for c in raw[-MAX_COMMITS:])
        old = data.get("base_commit")
        return Comparison(
            commits,
            int(data.get("total_commits", len(raw))),
            _commit_line(old) if isinstance(old, dict) else None,
        )


CHECK_PAGES = 10  # 1,000 statuses and 1,000 check runs per commit at most
FAILED = frozenset(
    {"failure", "error", "timed_out", "cancelled", "action_required", "startup_failure", "stale"}
)


@dataclass(frozen=True, slots=True)
class _Check:
    """A commit status or check run reduced to its name and state (pending, success, ...)."""

    name: str
    state: str

    @classmethod
    def of_status(cls, s: Mapping[str, Any]) -> _Check:
        return cls(str(s.get("context", "")), str(s.get("state") or "pending"))

    @classmethod
    def of_run(cls, c: Mapping[str, Any]) -> _Check:
        done = c.get("status") == "completed"
        return cls(str(c.get("name", "")), str(c.get("conclusion") or "") if done else "pending")


def _checks_verdict(checks: list[_Check], sha: str, required: tuple[str, ...]) -> ImageStatus:
    """Passed (True), waiting (False: pending or not reported yet) or failed (None).

    Without `required`, every check counts, at least one must have succeeded, and neutral or
    skipped ones are ignored. With `required`, only the named checks count and each must have
    succeeded: a named check that was skipped or neutral did not pass.
    """
    short = sha[:7]
    if required:
        by_name: dict[str, list[str]] = {}
        for c in checks:
            by_name.setdefault(c.name, []).append(c.state)
        missing = [n for n in required if n not in by_name]
        failed = [
            f"{n} ({s})"
            for n in required
            for s in by_name.get(n, ())
            if s not in ("success", "pending")
        ]
        pending = [n for n in required if "pending" in by_name.get(n, ())]
    else:
        if not checks:
            return ImageStatus(
                False,
                f"waiting: no checks have reported on {short} yet, so its image may not exist",
            )
        missing = []
        failed = [f"{c.name} ({c.state})" for c in checks if c.state in FAILED]
        pending = [c.name for c in checks if c.state == "pending"]
        if not failed and not pending and not any(c.state == "success" for c in checks):
            return ImageStatus(
                None,
                f"no check succeeded on {short} (all neutral or skipped)",
                kind=ErrorKind.CHECKS_FAILED,
            )
    if failed:
        return ImageStatus(
            None,
            f"checks failed on {short}: {', '.join(sorted(failed))}",
            kind=ErrorKind.CHECKS_FAILED,
        )
    if pending or missing:
        waiting = [*(f"{n} (running)" for n in pending), *(f"{n} (not reported)" for n in missing)]
        return ImageStatus(False, f"waiting for checks on {short}: {', '.join(waiting)}")
    return ImageStatus(True)


def _commit_line(c: Mapping[str, Any]) -> Commit:
    detail = c.get("commit") or {}
    author = (detail.get("author") or {}).get("name") or (c.get("author") or {}).get("login")
    return Commit(
        sha=str(c.get("sha", "")),
        subject=str(detail.get("message", "")).split("\n", 1)[0],
        author=str(author or "unknown"),
        url=str(c.get("html_url", "")),
    )


def _heads_query(
    batch: list[list[RepoRef]], lookback: int = 0
) -> tuple[str, dict[str, str], dict[str, list[tuple[RepoRef, str]]]]:
    """An aliased GraphQL query for a batch of repositories (grouped refs of one repo each),
    with the last ``lookback`` commits of each branch and their checks' rollup state."""
    params: list[str] = []
    fields: list[str] = []
    variables: dict[str, str] = {}
    history = (
        f" ... on Commit {{ history(first: {lookback}) {{ nodes {{ oid statusCheckRollup"
        " { state } } } }"
        if lookback > 0
        else ""
    )
    aliases: dict[str, list[tuple[RepoRef, str]]] = {}
    for i, group in enumerate(batch):
        owner, name = group[0].repo.split("/", 1)
        variables[f"o{i}"], variables[f"n{i}"] = owner, name
        params += [f"$o{i}: String!", f"$n{i}: String!"]
        selections: list[str] = []
        entries: list[tuple[RepoRef, str]] = []
        for j, ref in enumerate(group):
            if ref.branch is None:
                if "defaultBranchRef" not in selections:
                    selections.append("defaultBranchRef")
                entries.append((ref, "defaultBranchRef"))
                continue
            var = f"b{i}_{j}"
            variables[var] = f"refs/heads/{ref.branch}"
            params.append(f"${var}: String!")
            selections.append(f"{var}: ref(qualifiedName: ${var})")
            entries.append((ref, var))
        body = " ".join(f"{s} {{ name target {{ oid{history} }} }}" for s in selections)
        fields.append(f"r{i}: repository(owner: $o{i}, name: $n{i}) {{ {body} }}")
        aliases[f"r{i}"] = entries
    query = (
        f"query Heads({', '.join(params)}) {{\n  "
        + "\n  ".join(fields)
        + "\n  rateLimit { cost remaining limit resetAt }\n}"
    )
    return query, variables, aliases


def _history(target: Any) -> tuple[CommitState, ...]:
    """The commits of a ``history`` connection, newest first, with their rollup state."""
    nodes = ((target.get("history") or {}).get("nodes")) or []
    return tuple(
        CommitState(n["oid"], (n.get("statusCheckRollup") or {}).get("state"))
        for n in nodes
        if isinstance(n, dict) and isinstance(n.get("oid"), str)
    )


def _quote(branch: str) -> str:
    return quote(branch, safe="/")


def _repo_missing(ref: RepoRef) -> HeadError:
    return HeadError(
        f"repository {ref.repo} not found (or the credentials cannot see it)",
        ErrorKind.REPO_NOT_FOUND,
    )


def _http_error(ref: RepoRef, r: _Response) -> HeadError:
    return HeadError(f"GitHub answered {r.status} for {ref}: {r.message}", ErrorKind.GITHUB)


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


FIND_PAGE = 10  # deployments of one (sha, environment) looked at for the reconciler's own


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


class GitHubDeployments:
    """A GitHub Deployment per deployed commit, its statuses following the rollout: deploying →
    in_progress, deployed → success (GitHub marks the previous ones inactive), rolled back →
    failure for the bad commit and success again for the one running. Needs a token (or App)
    with `deployments: write`. The deployment of a commit is found by a list query, so nothing
    is remembered between syncs."""

    def __init__(self, source: GitHubSource) -> None:
        self.source = source

    def send(self, channel: Channel, n: Notification) -> None:
        if not (n.repo and n.new_sha and n.site):
            return
        environment = channel.environment or n.site
        try:
            if n.event is EventKind.DEPLOYING:
                deployment = self._create(n.repo, n.new_sha, environment, n)
                self._status(n.repo, deployment, "in_progress", n, "rolling out")
            elif n.event is EventKind.DEPLOYED:
                deployment = self._create(n.repo, n.new_sha, environment, n)
                self._status(n.repo, deployment, "success", n, "available")
            elif n.event is EventKind.ROLLED_BACK:
                bad = self._create(n.repo, n.new_sha, environment, n)
                self._status(n.repo, bad, "failure", n, f"rolled back: {n.reason}")
                good = self._find(n.repo, n.old_sha, environment, n.site) if n.old_sha else None
                if good is not None:
                    self._status(n.repo, good, "success", n, "running again after a rollback")
            elif n.event is EventKind.HELD:
                self._held(n, environment)
        except _Halt as halt:
            raise DeliveryError(f"github_deployments: {halt.error.reason}") from halt
        except GitHubError as exc:
            retryable = exc.kind in (ErrorKind.GITHUB_UNAVAILABLE, ErrorKind.GITHUB_UNREACHABLE)
            raise DeliveryError(f"github_deployments: {exc}", retryable=retryable) from exc

    def _held(self, n: Notification, environment: str) -> None:
        """A site held on another commit (a person's undo or set image, `reconciler rollback`):
        the commit now running gets a deployment marked success, the one shown before is made
        inactive; an image that is no commit of the branch is said so on the one shown."""
        assert n.repo and n.site
        who = n.detail or "someone"
        active = self._active(n.repo, environment, n.site)
        if n.running_sha is None:
            if active is not None:
                image = n.image or "an image"
                what = f"held by {who}: runs {image}, not a commit of {n.branch or 'the branch'}"
                self._status(n.repo, active, "inactive", n, what)
            return
        running = self._create(n.repo, n.running_sha, environment, n)
        if active is not None and active != running:
            what = f"replaced by {n.running_sha[:7]}: held by {who}"
            self._status(n.repo, active, "inactive", n, what)
        self._status(n.repo, running, "success", n, f"held by {who} on {n.running_sha[:7]}")

    def _active(self, repo: str, environment: str, site: str) -> int | None:
        """The site's deployment GitHub shows as live: the newest whose last status is success."""
        query = f"environment={quote(environment, safe='')}&per_page={FIND_PAGE}"
        r = self._checked(self.source._request("GET", f"/repos/{repo}/deployments?{query}"))
        for found in r.json() or []:
            payload = found.get("payload")
            if not (isinstance(payload, dict) and payload.get("site") == site):
                continue
            url = f"/repos/{repo}/deployments/{int(found['id'])}/statuses?per_page=1"
            latest = self._checked(self.source._request("GET", url)).json() or []
            if latest and isinstance(latest[0], dict) and latest[0].get("state") == "success":
                return int(found["id"])
        return None

    def _find(self, repo: str, sha: str, environment: str, site: str) -> int | None:
        """The newest deployment of (sha, environment) this reconciler created for the site."""
        query = f"sha={sha}&environment={quote(environment, safe='')}&per_page={FIND_PAGE}"
        r = self._checked(self.source._request("GET", f"/repos/{repo}/deployments?{query}"))
        for found in r.json() or []:
            payload = found.get("payload")
            if isinstance(payload, dict) and payload.get("site") == site:
                return int(found["id"])
        return None

    def _create(self, repo: str, sha: str, environment: str, n: Notification) -> int:
        """Idempotent: a deployment this reconciler created for (sha, environment) before is
        reused, so a retry after an answer that was lost (a 5xx after GitHub created it; the
        POST itself is never retried by the client, see _ReadRetry) creates no duplicate."""
        assert n.site
        existing = self._find(repo, sha, environment, n.site)
        if existing is not None:
            return existing
        body = {
            "ref": sha,
            "environment": environment,
            "auto_merge": False,
            "required_contexts": [],  # the reconciler has checked what it needs already
            "description": f"reconciler: {n.site} {n.branch or ''}@{sha[:7]}"[:140],
            "payload": {"site": n.site, "namespace": n.namespace, "deployment": n.deployment},
        }
        r = self._checked(self.source._request("POST", f"/repos/{repo}/deployments", body=body))
        return int((r.json() or {})["id"])

    def _status(self, repo: str, deployment: int, state: str, n: Notification, what: str) -> None:
        body: dict[str, Any] = {"state": state, "description": what[:140]}
        if n.site_url:
            body["environment_url"] = n.site_url
            body["log_url"] = n.site_url
        url = f"/repos/{repo}/deployments/{deployment}/statuses"
        self._checked(self.source._request("POST", url, body=body))

    @staticmethod
    def _checked(r: _Response) -> _Response:
        if 200 <= r.status < 300:
            return r
        hint = " (the token needs deployments: write)" if r.status in (403, 404) else ""
        kind = ErrorKind.GITHUB_UNAVAILABLE if r.status >= 500 else ErrorKind.GITHUB
        raise GitHubError(f"GitHub answered {r.status}: {r.message}{hint}", kind=kind)
