"""A site's deploy history, read through the cluster port (the CLI's `history`, the status page)."""

from __future__ import annotations

from reconciler.core.errors import ErrorKind, ReconcilerError
from reconciler.core.model import Site
from reconciler.core.plan import planner
from reconciler.core.ports import Cluster, RevisionSource
from reconciler.core.rollout.history import Deploy, deploys


def of_site(cluster: Cluster, site: Site) -> list[Deploy]:
    """The site's deploys, newest first (the CLI's `history` and the status page alike);
    raises ReconcilerError when its Deployment or managed container cannot be found."""
    deployment = cluster.read(site.namespace, site.deployment)
    if deployment is None:
        raise ReconcilerError(
            f"deployment {site.namespace}/{site.deployment} not found",
            kind=ErrorKind.DEPLOYMENT_NOT_FOUND,
        )
    container = planner.container_of(site, deployment)
    if container is None or not isinstance(cluster, RevisionSource):
        raise ReconcilerError(
            f"cannot tell which container of {site.name} is managed",
            kind=ErrorKind.CONTAINER_NOT_FOUND,
        )
    return deploys(deployment, container, cluster.replica_sets(deployment))
