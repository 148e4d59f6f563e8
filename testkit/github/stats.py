"""Counters: requests by route, status and caller; points, GraphQL log."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from testkit.github.state import Core

if TYPE_CHECKING:
    from testkit.github.ratelimits import Caller
    from testkit.github.replies import Reply

Json = Any


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


class Counters(Core):
    """Request counters, the in-flight gauge and the log of GraphQL requests (since reset_stats)."""

    def __init__(self) -> None:
        super().__init__()
        self._in_flight = 0
        self._stats = _empty_stats()
        self._graphql_log: deque[dict[str, Json]] = deque(maxlen=1000)

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

    def _enter(self) -> int:
        """Count a request in; returns how many are in flight with it."""
        with self._lock:
            self._in_flight += 1
            self._stats["max_in_flight"] = max(self._stats["max_in_flight"], self._in_flight)
            return self._in_flight

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _log_graphql(self, query: str, variables: Json, operation_name: Json) -> None:
        with self._lock:
            self._stats["graphql_queries"] += 1
            self._graphql_log.append(
                {"query": query, "variables": variables, "operationName": operation_name}
            )

    def _record(self, route: str, caller: Caller | None, reply: Reply) -> None:
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
