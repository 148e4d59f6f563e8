"""A site's deploy history, read through the cluster port (the CLI's `history`, the status page)."""

from __future__ import annotations

from dataclasses import replace

from reconciler.core import workloads
from reconciler.core.errors import ErrorKind, ReconcilerError
from reconciler.core.model import DEPLOYMENT, Site
from reconciler.core.plan import planner, release
from reconciler.core.ports import Cluster, KindRevisionSource, RevisionSource
from reconciler.core.rollout.history import Deploy, deploys
from reconciler.sync.delivery import Deliveries


def of_site(cluster: Cluster, site: Site, deliveries: Deliveries | None = None) -> list[Deploy]:
    """The site's deploys, newest first (the CLI's `history` and the status page alike);
    raises ReconcilerError when its Deployment or managed container cannot be found. A site
    of another delivery answers from that delivery's records (a Helm release's history). A
    site of several targets: every target's deploys (of its first container), each row naming
    its target; target by target in sites.toml's order, each newest first (by revision: a
    Deployment's rollback re-uses an old ReplicaSet, so times alone would misorder it)."""
    delivery = (deliveries or Deliveries()).of(site)
    if delivery is not None:
        return delivery.history(site)
    if not release.is_release(site):
        return _of_workload(cluster, site)
    firsts: dict[str, Site] = {}  # each target's first part: its first container
    for part in release.parts_of(site):
        firsts.setdefault(str(part.targets[0]), part)
    out = [
        replace(d, target=name)
        for name, part in firsts.items()
        for d in _of_workload(cluster, part)
    ]
    return out


def _of_workload(cluster: Cluster, site: Site) -> list[Deploy]:
    """One workload's deploys, of the site's managed container."""
    deployment = cluster.read(site.namespace, site.deployment, site.targets[0].kind)
    if deployment is None:
        raise ReconcilerError(
            f"{planner.workload_name(site)} not found", kind=ErrorKind.DEPLOYMENT_NOT_FOUND
        )
    container = planner.container_of(site, deployment)
    if deployment.kind != DEPLOYMENT and container and isinstance(cluster, KindRevisionSource):
        return workloads.deploys(deployment, container, cluster.workload_revisions(deployment))
    if container is None or not isinstance(cluster, RevisionSource):
        raise ReconcilerError(
            f"cannot tell which container of {site.name} is managed",
            kind=ErrorKind.CONTAINER_NOT_FOUND,
        )
    return deploys(deployment, container, cluster.replica_sets(deployment))
