"""The pure planner: (sites, branch heads, observed Deployments) -> a Plan value. No I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from reconciler.core.model import (
    Action,
    BranchHead,
    HeadError,
    HeadResult,
    ImageChange,
    NamespaceError,
    NamespaceView,
    ObservedDeployment,
    Plan,
    RepoRef,
    Site,
    SitePlan,
)
from reconciler.core.template import render

ANNOTATION_PREFIX = "reconciler.dev/"
PAUSED_ANNOTATION = ANNOTATION_PREFIX + "paused"
SHA_ANNOTATION = ANNOTATION_PREFIX + "sha"
UPDATED_ANNOTATION = ANNOTATION_PREFIX + "updated-at"
NOTIFIED_ANNOTATION = ANNOTATION_PREFIX + "notified"


@dataclass(frozen=True, slots=True)
class ImageStatus:
    """Whether a target image may be rolled out: exists True/False, or None when it is unknown."""

    exists: bool | None
    reason: str = ""


def plan(
    sites: Iterable[Site],
    heads: Mapping[RepoRef, HeadResult],
    observed: Mapping[str, NamespaceView],
) -> Plan:
    """One SitePlan per site, in the order given."""
    return Plan(tuple(plan_site(site, heads, observed) for site in sites))


def plan_site(
    site: Site, heads: Mapping[RepoRef, HeadResult], observed: Mapping[str, NamespaceView]
) -> SitePlan:
    """The verdict for one site; never raises for bad data, it becomes an error verdict."""
    base = SitePlan(site=site, action=Action.ERROR, branch=site.branch, container=site.container)
    view = observed.get(site.namespace)
    deployment: ObservedDeployment | None = None
    if isinstance(view, NamespaceError):
        return replace(base, reason=view.reason, error_kind=view.kind)
    if view is not None:
        deployment = view.get(site.deployment)

    head = heads.get(site.ref)
    if isinstance(head, BranchHead):
        base = replace(base, branch=head.branch, sha=head.sha)

    if site.paused:
        current = _current_image(site, deployment)
        return replace(
            base, action=Action.SKIP, reason="paused in sites.toml", current_image=current
        )
    if deployment is None:
        if view is None:
            return replace(
                base, reason=f"namespace {site.namespace} was not observed", error_kind="internal"
            )
        return replace(
            base,
            reason=f"deployment {site.namespace}/{site.deployment} not found",
            error_kind="deployment_not_found",
        )

    base = replace(
        base,
        resource_version=deployment.resource_version,
        running_sha=deployment.annotations.get(SHA_ANNOTATION),
        changed_at=deployment.annotations.get(UPDATED_ANNOTATION),
        notified=deployment.annotations.get(NOTIFIED_ANNOTATION),
    )
    container, problem = _pick_container(site, deployment)
    if container is None:
        return replace(base, reason=problem, error_kind="container_not_found")
    current = next(c.image for c in deployment.containers if c.name == container)
    base = replace(base, container=container, current_image=current)

    if deployment.annotations.get(PAUSED_ANNOTATION, "").lower() in ("true", "1", "yes"):
        return replace(
            base,
            action=Action.SKIP,
            reason=f"paused by the {PAUSED_ANNOTATION} annotation on the Deployment",
        )

    if head is None:
        return replace(base, reason=f"no branch head for {site.ref}", error_kind="internal")
    if isinstance(head, HeadError):
        return replace(base, reason=head.reason, error_kind=head.kind)

    target = render(
        site.image, owner=site.owner, repo=site.repo_name, branch=head.branch, sha=head.sha
    )
    base = replace(base, target_image=target)
    if current == target:
        return replace(
            base,
            action=Action.IN_SYNC,
            reason=f"runs {head.branch}@{head.sha[:7]}",
            running_sha=head.sha,
        )
    running = deployment.annotations.get(SHA_ANNOTATION)
    was = f"ran {running[:7]}" if running else f"ran {current}"
    return replace(base, action=Action.UPDATE, reason=f"{head.branch} is at {head.sha[:7]}; {was}")


def _current_image(site: Site, deployment: ObservedDeployment | None) -> str | None:
    if deployment is None:
        return None
    name, _ = _pick_container(site, deployment)
    return next((c.image for c in deployment.containers if c.name == name), None)


def _pick_container(site: Site, deployment: ObservedDeployment) -> tuple[str | None, str]:
    names = [c.name for c in deployment.containers]
    where = f"deployment {site.namespace}/{site.deployment}"
    if site.container is None:
        if len(names) == 1:
            return names[0], ""
        listed = ", ".join(names) or "none"
        return None, (
            f"{where} has {len(names)} containers ({listed}): "
            'set "container" for this site in sites.toml'
        )
    if site.container in names:
        return site.container, ""
    if any(c.name == site.container for c in deployment.init_containers):
        return None, (
            f'"{site.container}" is an init container of {where}; only containers are managed'
        )
    return None, f'{where} has no container "{site.container}" (it has: {", ".join(names)})'


def gate(plan_: Plan, statuses: Mapping[str, ImageStatus]) -> Plan:
    """Turn updates whose target image is missing or unverifiable into skips or errors."""
    out = []
    for p in plan_.sites:
        status = statuses.get(p.target_image or "") if p.action is Action.UPDATE else None
        if status is None or status.exists is True:
            out.append(p)
        elif status.exists is False:
            reason = status.reason or f"image {p.target_image} does not exist"
            out.append(replace(p, action=Action.SKIP, reason=f"{reason}; not rolled out"))
        else:
            out.append(
                replace(
                    p,
                    action=Action.ERROR,
                    reason=f"cannot verify image {p.target_image}: {status.reason}",
                    error_kind="image_unverified",
                )
            )
    return Plan(tuple(out))


def change_for(p: SitePlan) -> ImageChange:
    """The ImageChange an UPDATE verdict asks the applier to make."""
    assert p.action is Action.UPDATE
    assert p.container and p.target_image and p.sha and p.branch
    return ImageChange(
        namespace=p.site.namespace,
        deployment=p.site.deployment,
        container=p.container,
        image=p.target_image,
        previous_image=p.current_image or "",
        repo=p.site.repo,
        branch=p.branch,
        sha=p.sha,
        resource_version=p.resource_version,
    )
