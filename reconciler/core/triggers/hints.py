"""What an event says to do (pure): a Hint naming the sites to sync, or why nothing is synced.

Events (GitHub webhooks, Cloud Build and Artifact Registry messages, Cloud Scheduler jobs) are
hints, never orders: a Hint only chooses which sites the next sync covers. The sync still decides
from what GitHub and the cluster say, so an event cannot make it deploy anything it would not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from reconciler.core.model import Site

__all__ = ["Hint", "Outcome", "follows"]


class Outcome(StrEnum):
    """What became of an event (a metrics label)."""

    SYNC = "sync"  # the named sites are synced
    PING = "ping"  # a liveness check of the sender: answered, nothing else
    REPORTED = "reported"  # concerns sites but must never deploy (deleted branch or image)
    IGNORED = "ignored"  # well-formed, but nothing we follow (other branch, state, event)
    DUPLICATE = "duplicate"  # a redelivery of an event already handled
    MALFORMED = "malformed"  # cannot be understood
    REJECTED = "rejected"  # not proven to come from the sender (bad or missing signature)


@dataclass(frozen=True, slots=True)
class Hint:
    """The verdict on one event: its kind, outcome, the sites concerned, and why, for the log.

    ``sites`` is None only for a Cloud Scheduler job that asks for every site.
    """

    event: str
    outcome: Outcome
    reason: str
    sites: frozenset[str] | None = frozenset()

    @property
    def syncs(self) -> bool:
        return self.outcome is Outcome.SYNC

    def as_dict(self) -> dict[str, object]:
        return {
            "event": self.event,
            "outcome": self.outcome.value,
            "reason": self.reason,
            "sites": None if self.sites is None else sorted(self.sites),
        }


def follows(
    sites: Iterable[Site], repo: str, branch: str | None, default_branch: str | None
) -> frozenset[str]:
    """The sites of ``repo`` (any case, as GitHub's names) that follow ``branch``.

    A site with no branch follows the repository's default branch; when that is not known
    either, it is taken to match (one more site in a sync costs nothing and decides nothing).
    ``branch`` None matches every branch of the repository.
    """
    out = set()
    for site in sites:
        if site.repo.lower() != repo.lower():
            continue
        followed = site.branch or default_branch
        if branch is None or followed is None or followed == branch:
            out.add(site.name)
    return frozenset(out)
