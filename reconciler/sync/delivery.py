"""The one place that says how each site's image is delivered: the engine's own Kubernetes patch
path (Site.delivery "kubernetes", the default: None here), or a SiteDelivery port (core/ports.py)
registered under the site's delivery ("helm", "git"). Engine, commands and history all ask here."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from reconciler.core.errors import ErrorKind, ReconcilerError
from reconciler.core.model import (
    KUBERNETES,
    Action,
    ClusterRef,
    HeadResult,
    ObservedDeployment,
    Site,
    SitePlan,
)
from reconciler.core.ports import SiteDelivery

# The SiteDelivery of a delivery name in a named cluster ([clusters.NAME]): its helm runs with
# that cluster's kubeconfig, its reads and records go through that cluster's port. Raises a
# ReconcilerError naming the cluster when it cannot be reached (those sites' error).
Remote = Callable[[str, ClusterRef], SiteDelivery]


class Deliveries:
    """The SiteDelivery of each delivery name the process can serve: in the home cluster
    (`by_name`), and in each named cluster (`remote`, built per use: the cluster's port is
    rebuilt when its credentials change)."""

    def __init__(
        self, by_name: Mapping[str, SiteDelivery] | None = None, remote: Remote | None = None
    ) -> None:
        self.by_name = dict(by_name or {})
        self.remote = remote

    def of(self, site: Site) -> SiteDelivery | None:
        """The site's delivery; None for the engine's own Kubernetes path. A delivery this
        process was not built with, or a cluster it cannot reach, is that site's error
        (ReconcilerError), never a crash."""
        if site.delivery == KUBERNETES:
            return None
        return self._get(site.delivery, site.cluster)

    def _get(self, name: str, cluster: ClusterRef | None) -> SiteDelivery:
        if cluster is not None and self.remote is not None:
            return self.remote(name, cluster)
        found = self.by_name.get(name) if cluster is None else None
        if found is None:
            where = f" for {cluster}" if cluster is not None else ""
            why = f'delivery "{name}" is not available{where} in this process'
            raise ReconcilerError(why, kind=ErrorKind.INTERNAL)
        return found

    def groups(self, sites: Sequence[Site]) -> dict[tuple[str, ClusterRef | None], list[Site]]:
        """The sites of each delivery other than Kubernetes and cluster, in config order."""
        out: dict[tuple[str, ClusterRef | None], list[Site]] = {}
        for site in sites:
            if site.delivery != KUBERNETES:
                out.setdefault((site.delivery, site.cluster), []).append(site)
        return out

    def observe(self, sites: Sequence[Site]) -> dict[str, object]:
        """What each non-Kubernetes site's delivery read for it (a ReconcilerError when that
        failed, its cluster's included: that site's error verdict); Kubernetes sites are not
        in it."""
        seen: dict[str, object] = {}
        for (name, cluster), group in self.groups(sites).items():
            try:
                seen.update(self._get(name, cluster).observe(group))
            except ReconcilerError as exc:
                seen.update({s.name: exc for s in group})
        return seen

    def workload(self, plan: SitePlan, seen: Mapping[str, object]) -> ObservedDeployment | None:
        """The workload carrying a non-Kubernetes site's lead time (None: none was read)."""
        got = seen.get(plan.site.name)
        if got is None or isinstance(got, ReconcilerError):
            return None
        try:
            delivery = self.of(plan.site)
        except ReconcilerError:
            return None
        return delivery.workload(plan, got) if delivery is not None else None

    def verdict(
        self, site: Site, head: HeadResult | None, seen: Mapping[str, object], now: float
    ) -> SitePlan:
        """A non-Kubernetes site's verdict from its delivery; an unreadable one is its error."""
        base = SitePlan(site, Action.ERROR, branch=site.branch)
        got = seen.get(site.name)
        if isinstance(got, ReconcilerError):
            return replace(base, reason=str(got), error_kind=got.kind)
        try:
            delivery = self.of(site)
            assert delivery is not None
            return delivery.verdict(site, head, got, now)
        except ReconcilerError as exc:
            return replace(base, reason=str(exc), error_kind=exc.kind)
