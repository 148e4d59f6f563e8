"""The one bounded fan-out: run a function over items on at most `limit` threads, in order."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def bounded_map(fn: Callable[[T], R], items: Iterable[T], *, limit: int, name: str) -> list[R]:
    """fn(item) for every item, at most `limit` at a time; results in the items' order.

    An exception from fn propagates (after the pool has shut down); callers that must not fail
    as a whole turn each item's failure into a value inside fn.
    """
    work = list(items)
    if not work:
        return []
    workers = max(1, min(limit, len(work)))
    with ThreadPoolExecutor(workers, thread_name_prefix=name) as pool:
        return list(pool.map(fn, work))
