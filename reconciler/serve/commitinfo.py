"""The commits behind each site (subject, author, how many), fetched in the background and
cached by (repo, running, head): one compare request per pair, never on the sync's path."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from reconciler.core.errors import ReconcilerError
from reconciler.core.model import SiteResult
from reconciler.core.notify.render import Comparison
from reconciler.core.ports import CommitLog

log = logging.getLogger(__name__)

PER_ROUND = 25  # new pairs looked up after one sync at most (the rest after the next ones)
KEEP = 5000

Key = tuple[str, str, str]  # repo, running, head


class CommitInfo:
    """Looks up what each site runs and its branch head; the page shows what is known."""

    def __init__(self, commits: CommitLog, per_round: int = PER_ROUND) -> None:
        self.commits = commits
        self.per_round = per_round
        self._known: dict[Key, Comparison | None] = {}
        self._lock = threading.Lock()
        self._queue: list[Key] = []
        self._busy = False

    @staticmethod
    def key(result: SiteResult) -> Key | None:
        p = result.plan
        running = p.sha if result.applied else p.running_sha
        head = p.head_sha or p.sha
        if not (head and running):
            return None
        return (p.site.repo, running, head)

    def refresh(self, results: Sequence[SiteResult]) -> threading.Thread | None:
        """Queue the pairs not known yet (at most per_round) and start the worker if it is
        idle; returns the worker it started."""
        with self._lock:
            new = [k for r in results if (k := self.key(r)) and k not in self._known]
            self._queue = list(dict.fromkeys([*new[: self.per_round], *self._queue]))
            if self._busy or not self._queue:
                return None
            self._busy = True
        worker = threading.Thread(target=self._fetch, name="commits", daemon=True)
        worker.start()
        return worker

    def _next(self) -> Key | None:
        with self._lock:
            while self._queue:
                key = self._queue.pop(0)
                if key not in self._known:
                    return key
            self._busy = False
            return None

    def _fetch(self) -> None:
        while (key := self._next()) is not None:
            repo, running, head = key
            try:
                found: Comparison | None = self.commits.compare(repo, running, head)
            except ReconcilerError as exc:
                log.info("commits of %s %s...%s: %s", repo, running[:7], head[:7], exc)
                found = None
            with self._lock:
                if len(self._known) >= KEEP:
                    self._known.clear()
                self._known[key] = found

    def get(self, key: Key | None) -> Comparison | None:
        with self._lock:
            return self._known.get(key) if key else None
