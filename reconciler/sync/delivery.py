"""The one place that says how each site's image is delivered: the engine's own Kubernetes patch
path (Site.delivery "kubernetes", the default: None here), or a SiteDelivery port (core/ports.py)
registered under the site's delivery ("helm", "git"). Engine, commands and history all ask here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from reconciler.core.errors import ErrorKind, ReconcilerError
from reconciler.core.model import (
    KUBERNETES,
    Action,
    HeadResult,
    ObservedDeployment,
    Site,
    SitePlan,
)
from reconciler.core.ports import SiteDelivery


class Deliveries:
    """The SiteDelivery of each delivery name the process can serve."""

    def __init__(self, by_name: Mapping[str, SiteDelivery] | None = None) -> None:
        self.by_name = dict(by_name or {})

    def of(self, site: Site) -> SiteDelivery | None:
        """The site's delivery; None for the engine's own Kubernetes path. A delivery this
        process was not built with is that site's error (ReconcilerError), never a crash."""
        if site.delivery == KUBERNETES:
            return None
        found = self.by_name.get(site.delivery)
        if found is None:
            raise ReconcilerError(
                f'{site.name}: delivery "{site.delivery}" is not available in this process',
                kind=ErrorKind.INTERNAL,
            )
        return found

    def groups(self, sites: Sequence[Site]) -> dict[str, list[Site]]:
        """The sites of each delivery other than Kubernetes, in config order."""
        out: dict[str, list[Site]] = {}
        for site in sites:
            if site.delivery != KUBERNETES:
                out.setdefault(site.delivery, []).append(site)
        return out

    def observe(self, sites: Sequence[Site]) -> dict[str, object]:
        """What each non-Kubernetes site's delivery read for it (a ReconcilerError when that
        failed: that site's error verdict); Kubernetes sites are not in it."""
        seen: dict[str, object] = {}
        for name, group in self.groups(sites).items():
            delivery = self.by_name.get(name)
            try:
                if delivery is None:
                    why = f'delivery "{name}" is not available in this process'
                    raise ReconcilerError(why, kind=ErrorKind.INTERNAL)
                seen.update(delivery.observe(group))
            except ReconcilerError as exc:
                seen.update({s.name: exc for s in group})
        return seen

    def workload(self, plan: SitePlan, seen: Mapping[str, object]) -> ObservedDeployment | None:
        """The workload carrying a non-Kubernetes site's lead time (None: none was read)."""
        got = seen.get(plan.site.name)
        delivery = self.by_name.get(plan.site.delivery)
        if got is None or isinstance(got, ReconcilerError) or delivery is None:
            return None
        return delivery.workload(plan, got)

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
