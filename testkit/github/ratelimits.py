"""Tokens and callers, primary rate-limit buckets, secondary limits and injected faults."""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass
from typing import Literal

from testkit.github.replies import DOCS, Reply, error
from testkit.github.state import Core

_HOUR = 3600
_LIMITS_DOCS = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"


@dataclass
class Bucket:
    limit: int
    used: int
    reset: int

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    def view(self) -> dict[str, int]:
        return {
            "limit": self.limit,
            "used": self.used,
            "remaining": self.remaining,
            "reset": self.reset,
        }


@dataclass(frozen=True)
class Caller:
    token: str | None
    key: str  # "token:<t>" or "ip:<addr>"
    stats_key: str  # the token itself, or "anonymous:<addr>"
    user_id: int
    ip: str


@dataclass
class Fault:
    remaining: int
    status: int
    path_contains: str | None
    retry_after: int | None
    after_route: str | None = None  # answer after doing the work of this route (a lost answer)


def parse_token(header: str | None) -> str | None:
    """The token of an Authorization header (token, bearer or basic), None without one."""
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


def caller_key(token: str | None, ip: str) -> str:
    return f"token:{token}" if token is not None else f"ip:{ip}"


def secondary_reply(retry_after: int) -> Reply:
    return Reply(
        403,
        {
            "message": "You have exceeded a secondary rate limit. Please wait a few minutes "
            "before you try again. If you reach out to GitHub Support for help, please include "
            f"the request ID {secrets.token_hex(8).upper()}.",
            "documentation_url": f"{_LIMITS_DOCS}#about-secondary-rate-limits",
            "status": "403",
        },
        headers=[("retry-after", str(retry_after))],
    )


def fault_reply(fault: Fault) -> Reply:
    if fault.status in (403, 429) and fault.retry_after is not None:
        return secondary_reply(fault.retry_after)
    messages = {
        500: "Server Error",
        502: "Server Error",
        503: "Service Unavailable",
        504: "We couldn't respond to your request in time. Sorry about that. Please try "
        "resubmitting your request and contact us if the problem persists.",
    }
    reply = Reply(fault.status, error(fault.status, messages.get(fault.status, "Error"), DOCS))
    if fault.retry_after is not None:
        reply.headers.append(("retry-after", str(fault.retry_after)))
    return reply


def exhausted_reply(status: int, caller: Caller, bucket: Bucket) -> Reply:
    """REST's answer when the caller's primary bucket is empty."""
    who = f"user ID {caller.user_id}" if caller.token else caller.ip
    extra = (
        ""
        if caller.token
        else " (But here's the good news: Authenticated requests get a higher rate "
        "limit. Check out the documentation for more details.)"
    )
    return Reply(
        status,
        error(status, f"API rate limit exceeded for {who}.{extra}", _LIMITS_DOCS),
        bucket=bucket,
    )


class RateLimits(Core):
    """Per-caller buckets (core, graphql) that reset hourly, and faults queued by tests."""

    token_limit: int
    graphql_limit: int
    anonymous_limit: int
    reset_epoch: int | None

    def __init__(self) -> None:
        super().__init__()
        self._tokens: dict[str, tuple[int, int, int]] = {}  # token -> (core, graphql, user id)
        self._buckets: dict[tuple[str, str], Bucket] = {}
        self._faults: list[Fault] = []

    def add_token(
        self, token: str, limit: int | None = None, graphql_limit: int | None = None
    ) -> None:
        with self._lock:
            self._tokens[token] = (
                self.token_limit if limit is None else limit,
                self.graphql_limit if graphql_limit is None else graphql_limit,
                self._new_id(),
            )

    def _caller(self, token: str | None, ip: str) -> Caller | None:
        """Who is asking; None for an unknown token (bad credentials)."""
        anonymous = f"anonymous:{ip}"
        if token is None:
            return Caller(None, caller_key(None, ip), anonymous, 0, ip)
        with self._lock:
            known = self._tokens.get(token)
        if known is None:
            return None
        return Caller(token, caller_key(token, ip), token, known[2], ip)

    def _limit_for(self, key: str, resource: str) -> int:
        if key.startswith("token:"):
            core, graphql, _ = self._tokens.get(key[6:], (self.token_limit, 0, 0))
            return graphql if resource == "graphql" else core
        return 0 if resource == "graphql" else self.anonymous_limit

    def _bucket_locked(self, key: str, resource: str) -> Bucket:
        now = int(time.time())
        bucket = self._buckets.get((key, resource))
        if bucket is None:
            reset = self.reset_epoch if self.reset_epoch and self.reset_epoch > now else now + _HOUR
            bucket = Bucket(self._limit_for(key, resource), 0, reset)
            self._buckets[key, resource] = bucket
        elif now >= bucket.reset:
            bucket.used = 0
            bucket.reset = now + _HOUR
        return bucket

    def set_remaining(
        self,
        token: str | None,
        remaining: int,
        resource: Literal["core", "graphql"] = "core",
        ip: str = "127.0.0.1",
    ) -> None:
        """Force a bucket's remaining points (token=None: the anonymous bucket of `ip`)."""
        with self._lock:
            bucket = self._bucket_locked(caller_key(token, ip), resource)
            bucket.used = max(0, bucket.limit - remaining)

    def rate_limit(
        self,
        token: str | None,
        resource: Literal["core", "graphql"] = "core",
        ip: str = "127.0.0.1",
    ) -> dict[str, int]:
        """{limit, remaining, used, reset} of a bucket."""
        with self._lock:
            b = self._bucket_locked(caller_key(token, ip), resource)
            return {"limit": b.limit, "remaining": b.remaining, "used": b.used, "reset": b.reset}

    def reset_rate_limits(self) -> None:
        with self._lock:
            self._buckets.clear()

    def _charge(self, caller: Caller, resource: str, points: int) -> tuple[bool, Bucket]:
        with self._lock:
            bucket = self._bucket_locked(caller.key, resource)
            if bucket.remaining < points or bucket.remaining == 0:
                return False, bucket
            bucket.used += points
            return True, bucket

    def _refund(self, caller: Caller, resource: str, points: int) -> None:
        with self._lock:
            bucket = self._bucket_locked(caller.key, resource)
            bucket.used = max(0, bucket.used - points)

    def _with_bucket(self, reply: Reply, caller: Caller) -> Reply:
        with self._lock:
            reply.bucket = self._bucket_locked(caller.key, reply.resource)
        return reply

    def rate_limit_body(self, caller: Caller) -> tuple[dict[str, object], Bucket]:
        """GET /rate_limit's body (free: it never charges) and the caller's core bucket."""
        with self._lock:
            core = self._bucket_locked(caller.key, "core")
            graphql = self._bucket_locked(caller.key, "graphql")
            reset = core.reset
            authed = caller.token is not None
            body: dict[str, object] = {
                "resources": {
                    "core": core.view(),
                    "graphql": graphql.view(),
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
                "rate": core.view(),
            }
        return body, core

    def fail_next(
        self,
        n: int = 1,
        status: int = 502,
        path_contains: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        """Answer the next n requests (whose path contains path_contains) with `status`."""
        with self._lock:
            self._faults.append(Fault(n, status, path_contains, retry_after))

    def fail_after(self, route: str, n: int = 1, status: int = 502) -> None:
        """Carry out the next n requests of `route` (e.g. "rest:deployments-create"), then
        answer `status`: GitHub did the work, the client never learned it (a retry's trap)."""
        with self._lock:
            self._faults.append(Fault(n, status, None, None, after_route=route))

    def _take_after_fault(self, route: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and fault.after_route == route:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if (
                    fault.remaining > 0
                    and fault.after_route is None
                    and (fault.path_contains is None or fault.path_contains in path)
                ):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
        return None
