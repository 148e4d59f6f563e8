"""Promotion (#20) for every delivery (#21): a follower site, delivered by patching its
Deployment, by a Helm release or by a configuration repository, is planned against what its
source site, of any delivery, runs, by the same rules (core.gates.judge: soak, forward only,
never a commit failed or rolled back on the source). What each site runs comes from its
Deployment as the plan read it, or from its delivery's observation (SiteDelivery: the verdict
and the workload carrying its records). A follower ready to take a commit is then planned by
its own delivery (a `helm upgrade`, a config-repository commit) for the image of its own
template; approval and windows gate it afterwards like any site's update."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from reconciler.core import gates, promotion
from reconciler.core.config.sites import Config
from reconciler.core.model import (
    KUBERNETES,
    BranchHead,
    HeadResult,
    ObservedDeployment,
    RepoRef,
    Site,
    SitePlan,
)
from reconciler.sync.delivery import Deliveries


@dataclass(frozen=True, slots=True)
class Upstream:
    """What one plan read, for judging its followers' promotions."""

    config: Config
    deliveries: Deliveries
    seen: Mapping[str, object]  # what the deliveries observed, by site name
    deployment: Callable[[Site], ObservedDeployment | None]  # a patched site's, as read
    heads: Mapping[RepoRef, HeadResult]
    now: float

    def root_head(self, site: Site) -> BranchHead | None:
        """The branch head of the site at the head of `site`'s chain (its history orders)."""
        head = self.heads.get(gates.chain_root(self.config.by_name, site).ref)
        return head if isinstance(head, BranchHead) else None

    def observed(self, site: Site, history: Sequence[str]) -> promotion.Observed:
        """What `site` runs, as promotion judges it, whatever its delivery."""
        if site.delivery == KUBERNETES:
            return gates.observed(site, self.deployment(site), self.now)
        p = self.deliveries.verdict(site, None, self.seen, self.now)
        return gates.delivered(p, self.deliveries.workload(p, self.seen), history)

    def verdict(
        self, site: Site
    ) -> tuple[promotion.Verdict, promotion.Observed, promotion.Observed]:
        """A follower's promotion verdict, what its source runs and what it runs."""
        source = self.config.site(site.promote_from) if site.promote_from else None
        root = self.root_head(site)
        history = [c.sha for c in root.history] if root is not None else []
        there = self.observed(source, history) if source is not None else promotion.Observed()
        if not there.branch and root is not None:  # no record of it: the chain's branch
            there = replace(there, branch=root.branch)
        here = self.observed(site, history)
        judged = gates.judge(site, there, here, now=self.now, history=history)
        return judged, there, here

    def plan(self, site: Site) -> SitePlan:
        """A follower of another delivery than the Deployment patch, planned by its delivery
        against the commit its promotion allows (else what it runs: in sync, held, rolled back
        as any site of that delivery), with the promotion's words."""
        judged, there, here = self.verdict(site)
        head = gates.promoted_head(site, judged, here, there)
        p = self.deliveries.verdict(site, head, self.seen, self.now)
        return gates.after_promotion(p, judged)


def with_sources(selected: Sequence[Site], sources: Sequence[Site]) -> list[Site]:
    """The selected sites and the sources up their chains, each once (what a plan reads)."""
    names = {s.name for s in selected}
    return [*selected, *(s for s in sources if s.name not in names)]
