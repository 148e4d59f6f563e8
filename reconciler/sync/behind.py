"""How far each site is behind its branch head: which compares to ask for, and the result."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reconciler.core.errors import ReconcilerError
from reconciler.core.model import SiteResult
from reconciler.core.notify.render import Comparison
from reconciler.core.ports import CommitLog
from reconciler.sync.fanout import bounded_map

MAX_PARALLEL = 8


@dataclass(frozen=True, slots=True)
class Behind:
    """A site's running commit, its branch head, and the commits in between (None: unknown)."""

    repo: str
    running: str
    head: str
    web_url: str
    comparison: Comparison | None = None
    error: str = ""

    @property
    def compare_url(self) -> str:
        return f"{self.web_url}/{self.repo}/compare/{self.running}...{self.head}"

    @property
    def commits(self) -> int | None:
        return self.comparison.total if self.comparison else None


def wanted(results: Sequence[SiteResult], web_url: str) -> dict[str, Behind]:
    """The sites whose recorded running commit differs from the branch head."""
    out = {}
    for r in results:
        p = r.plan
        head = p.head_sha or p.sha
        if head and p.running_sha and head != p.running_sha:
            out[p.site.name] = Behind(p.site.repo, p.running_sha, head, web_url.rstrip("/"))
    return out


def measure(
    results: Sequence[SiteResult], commits: CommitLog, web_url: str
) -> Mapping[str, Behind]:
    """One compare request per site that is behind (in parallel, bounded); errors are kept."""
    todo = wanted(results, web_url)

    def one(item: tuple[str, Behind]) -> tuple[str, Behind]:
        name, b = item
        try:
            return name, Behind(
                b.repo, b.running, b.head, b.web_url, commits.compare(b.repo, b.running, b.head)
            )
        except ReconcilerError as exc:
            return name, Behind(b.repo, b.running, b.head, b.web_url, error=str(exc))

    return dict(bounded_map(one, todo.items(), limit=MAX_PARALLEL, name="compare"))
