"""GitHubSource: one client playing the three ports GitHub serves: HeadSource (heads),
ImageVerifier (verify = "checks") and CommitLog (compare), sharing the rate-limit bookkeeping."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping

from reconciler.adapters.github.checks import CheckReader
from reconciler.adapters.github.client import GitHubClient
from reconciler.adapters.github.deployments import CommitReader
from reconciler.adapters.github.heads import HeadReader
from reconciler.core.model import HeadResult, ImageStatus, RepoRef
from reconciler.core.notify.render import Comparison
from reconciler.core.ports import VerifyRequest
from reconciler.settings import GitHubSettings


class GitHubSource(GitHubClient):
    """Branch heads, commit checks and compares over one client."""

    def __init__(
        self,
        settings: GitHubSettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(settings, sleep=sleep, clock=clock)
        self._heads = HeadReader(self)
        self._checks = CheckReader(self)
        self._commits = CommitReader(self)

    def resolve(self, refs: Collection[RepoRef]) -> Mapping[RepoRef, HeadResult]:
        return self._heads.resolve(refs)

    def verify(self, requests_: Collection[VerifyRequest]) -> Mapping[VerifyRequest, ImageStatus]:
        return self._checks.verify(requests_)

    def compare(self, repo: str, base: str, head: str) -> Comparison:
        return self._commits.compare(repo, base, head)
