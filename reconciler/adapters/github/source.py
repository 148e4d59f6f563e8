"""GitHubSource: one client playing the three ports GitHub serves: HeadSource (heads),
ImageVerifier (verify = "checks") and CommitLog (compare), sharing the rate-limit bookkeeping."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from functools import cached_property

from reconciler.adapters.github.checks import CheckReader
from reconciler.adapters.github.client import GitHubClient
from reconciler.adapters.github.deployments import CommitReader
from reconciler.adapters.github.heads import HeadReader
from reconciler.core.model import HeadResult, ImageStatus, RepoRef
from reconciler.core.notify.render import Comparison
from reconciler.core.ports import VerifyRequest


class GitHubSource(GitHubClient):
    """Branch heads, commit checks and compares over one client (the readers keep no state of
    their own: all of it, rate limits and ETags, is the client's)."""

    @cached_property
    def _heads(self) -> HeadReader:
        return HeadReader(self)

    @cached_property
    def _checks(self) -> CheckReader:
        return CheckReader(self)

    @cached_property
    def _commits(self) -> CommitReader:
        return CommitReader(self)

    def resolve(self, refs: Collection[RepoRef]) -> Mapping[RepoRef, HeadResult]:
        return self._heads.resolve(refs)

    def verify(self, requests_: Collection[VerifyRequest]) -> Mapping[VerifyRequest, ImageStatus]:
        return self._checks.verify(requests_)

    def compare(self, repo: str, base: str, head: str) -> Comparison:
        return self._commits.compare(repo, base, head)
