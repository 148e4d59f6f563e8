"""The pure planner: (sites, branch heads, observed Deployments) -> a Plan value. No I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from reconciler.core import annotations as ann
from reconciler.core.errors import ErrorKind
from reconciler.core.model import (
    Action,
    BranchHead,
    HeadError,
    HeadResult,
    ImageChange,
    ImageStatus,
    NamespaceError,
    NamespaceView,
    ObservedDeployment,
    Plan,
    RepoRef,
    Rollout,
    Site,
    SitePlan,
    Skip,
    VerifyRequest,
    view_key,
)
from reconciler.core.plan import release
from reconciler.core.plan.running import running_sha, same_image
from reconciler.core.plan.template import render
from reconciler.core.rollout import state as rollout

__all__ = [
    "ImageStatus",
    "VerifyRequest",
    "change_for",
    "container_of",
    "gate",
    "plan",
    "plan_site",
    "same_image",
    "verify_request",
]


def verify_request(p: SitePlan) -> VerifyRequest | None:
    """What an UPDATE verdict must have verified before rollout (None: nothing to verify; a
    release's are its parts': verify_requests)."""
    if p.action is not Action.UPDATE or p.site.verify == "none" or p.parts:
        return None
    if not (p.target_image and p.sha):
        return None
    return VerifyRequest(p.target_image, p.site.repo, p.sha, p.site.verify, p.site.required_checks)


def verify_requests(p: SitePlan) -> set[VerifyRequest]:
    """What an UPDATE verdict, or each part of a release, must have verified."""
    return {r for q in (p.parts or (p,)) if (r := verify_request(q)) is not None}


def plan(
    sites: Iterable[Site],
    heads: Mapping[RepoRef, HeadResult],
    observed: Mapping[str, NamespaceView],
    *,
    now: float = 0.0,
    troubles: Mapping[str, tuple[str, ...]] | None = None,
) -> Plan:
    """One SitePlan per site, in the order given. `troubles`: stuck new pods, by site name."""
    troubles = troubles or {}
    return Plan(
        tuple(
            plan_site(
                site,
                heads,
                observed,
                now=now,
                troubles=troubles.get(site.name, ()),
                part_troubles=troubles,
            )
            for site in sites
        )
    )


def plan_site(
    site: Site,
    heads: Mapping[RepoRef, HeadResult],
    observed: Mapping[str, NamespaceView],
    *,
    now: float = 0.0,
    troubles: tuple[str, ...] = (),
    part_troubles: Mapping[str, tuple[str, ...]] | None = None,
) -> SitePlan:
    """The verdict for one site; never raises for bad data, it becomes an error verdict. A
    site of several targets is one release (core/plan/release.py); `part_troubles`: the stuck
    pods of its parts, by release.key."""
    if release.is_release(site):
        return _release(site, heads, observed, now, part_troubles or {})
    head = heads.get(site.ref)
    found = _deployment_of(site, head, observed)
    if isinstance(found, SitePlan):
        return found
    known, deployment = found
    container, problem = _pick_container(site, deployment)
    if container is None:
        return _verdict(known, reason=problem, error_kind=ErrorKind.CONTAINER_NOT_FOUND)
    current = deployment.image_of(container) or ""
    state, progress = rollout.state(deployment)
    known.update(
        container=container,
        current_image=current,
        running_sha=running_sha(site, deployment.annotations, current, head),
        rollout=state,
        progress=progress,
        waiting=deployment.verdict is not None and not deployment.verdict.timed,
        failed_sha=deployment.annotations.get(ann.FAILED_SHA) or None,
    )

    if deployment.annotations.get(ann.PAUSED, "").lower() in ann.TRUE_VALUES:
        return _verdict(
            known,
            action=Action.SKIP,
            skip=Skip.PAUSED,
            reason=f"paused by the {ann.PAUSED} annotation on the Deployment",
        )

    head_sha = head.sha if isinstance(head, BranchHead) else None
    hold = rollout.hold_of(site, deployment, container, head_sha, now)
    if hold is not None and not hold.resumes:
        return _verdict(
            known,
            action=Action.HELD,
            reason=hold.reason,
            held_by=hold.by,
            held_at=hold.at,
            write=hold.write,
        )
    back = _failed_rollout(known, deployment, troubles, now)
    if back is not None:
        return back
    return _versus_head(known, deployment, head, hold)


# What is known of a verdict while it is planned: SitePlan's fields by name. The verdict is
# built once from it (a SitePlan has 30 fields: re-building it at each step cost a steady sync
# of 10,000 sites about a second).
Known = dict[str, Any]


def _verdict(known: Known, **more: Any) -> SitePlan:
    """The SitePlan of what is known, with `more` (which wins)."""
    return SitePlan(**(known | more))


def _release(
    site: Site,
    heads: Mapping[RepoRef, HeadResult],
    observed: Mapping[str, NamespaceView],
    now: float,
    troubles: Mapping[str, tuple[str, ...]],
) -> SitePlan:
    parts = [
        plan_site(part, heads, observed, now=now, troubles=troubles.get(release.key(part), ()))
        for part in release.parts_of(site)
    ]

    def rollback(p: SitePlan, why: str) -> SitePlan | None:
        view = observed.get(site.namespace)
        target = p.site.targets[0]
        d = (
            None
            if isinstance(view, NamespaceError) or view is None
            else view.get(view_key(target.kind, target.name))
        )
        if d is None or p.container is None:
            return None
        back = rollout.rollback_patch(p.site, d, p.container, why, now)
        if back is None:
            return None
        return replace(p, action=Action.ROLLED_BACK, target_image=back.image, write=back)

    return release.combine(site, parts, rollback)


def workload_name(site: Site) -> str:
    """How messages name the site's workload: "deployment web", "statefulset search"."""
    return f"{site.targets[0].kind.lower()} {site.namespace}/{site.deployment}"


def _deployment_of(
    site: Site, head: HeadResult | None, observed: Mapping[str, NamespaceView]
) -> SitePlan | tuple[Known, ObservedDeployment]:
    """The site's Deployment and what the verdict knows so far, or a final verdict: paused in
    sites.toml, its namespace unreadable or not observed, or the Deployment not found."""
    known: Known = {
        "site": site,
        "action": Action.ERROR,
        "branch": site.branch,
        "container": site.container,
    }
    view = observed.get(site.namespace)
    deployment: ObservedDeployment | None = None
    if isinstance(view, NamespaceError):
        return _verdict(known, reason=view.reason, error_kind=view.kind)
    if view is not None:
        deployment = view.get(view_key(site.targets[0].kind, site.deployment))
    if isinstance(head, BranchHead):
        known.update(branch=head.branch, sha=head.sha, head_sha=head.sha)

    if site.paused:
        current = _current_image(site, deployment)
        return _verdict(
            known,
            action=Action.SKIP,
            skip=Skip.PAUSED,
            reason="paused in sites.toml",
            current_image=current,
        )
    if deployment is None:
        if view is None:
            return _verdict(
                known,
                reason=f"namespace {site.namespace} was not observed",
                error_kind=ErrorKind.INTERNAL,
            )
        return _verdict(
            known,
            reason=f"{workload_name(site)} not found",
            error_kind=ErrorKind.DEPLOYMENT_NOT_FOUND,
        )
    notes = deployment.annotations
    known.update(
        resource_version=deployment.resource_version,
        running_sha=notes.get(ann.SHA),
        changed_at=notes.get(ann.UPDATED_AT),
        notified=notes.get(ann.NOTIFIED),
    )
    return known, deployment


def _failed_rollout(
    known: Known, deployment: ObservedDeployment, troubles: tuple[str, ...], now: float
) -> SitePlan | None:
    """When our rollout failed: `known` marked so, and the rollback verdict (None when there is
    nothing to go back to)."""
    container = known["container"]
    assert container is not None
    why = rollout.failure(deployment, troubles) if rollout.ours(deployment, container) else None
    if why is None:
        return None
    known["rollout"] = Rollout.FAILED
    back = rollout.rollback_patch(known["site"], deployment, container, why, now)
    if back is None:
        return None
    bad = deployment.annotations.get(ann.SHA, "")
    return _verdict(
        known,
        action=Action.ROLLED_BACK,
        reason=f"rollout of {bad[:7]} failed ({why}); back to {back.image}",
        target_image=back.image,
        failed_sha=bad,
        write=back,
    )


def _versus_head(
    known: Known,
    deployment: ObservedDeployment,
    head: HeadResult | None,
    hold: rollout.Hold | None,
) -> SitePlan:
    """The verdict against the branch head: in sync, an update (lifting a resumed hold), the
    failed commit waited out, or why the head is unknown."""
    site, current = known["site"], known["current_image"] or ""
    if head is None:
        return _verdict(
            known, reason=f"no branch head for {site.ref}", error_kind=ErrorKind.INTERNAL
        )
    if isinstance(head, HeadError):
        return _verdict(known, reason=head.reason, error_kind=head.kind)

    target = render(
        site.image, owner=site.owner, repo=site.repo_name, branch=head.branch, sha=head.sha
    )
    known["target_image"] = target
    failed = known["failed_sha"]
    if failed and head.sha == failed:
        why = deployment.annotations.get(ann.FAILED_REASON, "")
        return _verdict(
            known,
            action=Action.SKIP,
            skip=Skip.FAILED_COMMIT,
            reason=(
                f"{head.branch}@{head.sha[:7]} failed to roll out"
                f"{f' ({why})' if why else ''}; rolled back, waiting for a new commit"
            ),
        )
    if same_image(current, target):
        return _verdict(
            known,
            action=Action.IN_SYNC,
            reason=f"runs {head.branch}@{head.sha[:7]}",
            running_sha=head.sha,
        )
    running = known["running_sha"]
    was = f"ran {running[:7]}" if running else f"ran {current}"
    reason = f"{head.branch} is at {head.sha[:7]}; {was}"
    clear: tuple[str, ...] = ()
    if hold is not None:
        reason += f"; resumes after {hold.reason}"
        clear = ann.HOLD_KEYS
    return _verdict(known, action=Action.UPDATE, reason=reason, clear=clear)


def _current_image(site: Site, deployment: ObservedDeployment | None) -> str | None:
    if deployment is None:
        return None
    name, _ = _pick_container(site, deployment)
    return deployment.image_of(name) if name else None


def container_of(site: Site, deployment: ObservedDeployment) -> str | None:
    """The managed container's name, or None when the site's setting does not pick one."""
    return _pick_container(site, deployment)[0]


def _pick_container(site: Site, deployment: ObservedDeployment) -> tuple[str | None, str]:
    names = [c.name for c in deployment.containers]
    where = workload_name(site)
    if release.is_init(site):
        inits = [c.name for c in deployment.init_containers]
        if site.container in inits:
            return site.container, ""
        return None, (
            f'{where} has no init container "{site.container}" '
            f"(it has: {', '.join(inits) or 'none'})"
        )
    if site.container is None:
        if len(names) == 1:
            return names[0], ""
        listed = ", ".join(names) or "none"
        return None, (
            f"{where} has {len(names)} containers ({listed}): "
            'set "container" for this site in sites.toml (in a [[targets]] table: "containers")'
        )
    if site.container in names:
        return site.container, ""
    if deployment.is_init(site.container):
        return None, (
            f'"{site.container}" is an init container of {where}: name it in the target\'s '
            '"init_containers"'
        )
    return None, f'{where} has no container "{site.container}" (it has: {", ".join(names)})'


def gate(plan_: Plan, statuses: Mapping[VerifyRequest, ImageStatus]) -> Plan:
    """Turn updates whose target image is missing or unverifiable into skips or errors.

    A verified update whose site pins digests gets `image:tag@digest` as its target.
    """
    out = []
    for p in plan_.sites:
        if p.parts:
            out.append(release.gated(p, gate(Plan(p.parts), statuses).sites))
            continue
        request = verify_request(p)
        status = statuses.get(request) if request else None
        if status is None:
            out.append(p)
        elif status.exists is True:
            pin = status.digest and p.site.pin_digest and p.target_image
            out.append(replace(p, target_image=f"{p.target_image}@{status.digest}") if pin else p)
        elif status.exists is False:
            reason = status.reason or f"image {p.target_image} does not exist"
            waiting = request is not None and request.mode == "checks"
            out.append(
                replace(
                    p,
                    action=Action.SKIP,
                    skip=Skip.CHECKS_PENDING if waiting else Skip.IMAGE_MISSING,
                    reason=f"{reason}; not rolled out",
                )
            )
        else:
            out.append(
                replace(
                    p,
                    action=Action.ERROR,
                    reason=f"cannot verify image {p.target_image}: {status.reason}",
                    error_kind=status.kind or ErrorKind.IMAGE_UNVERIFIED,
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
        previous_sha="" if p.clear else (p.running_sha or ""),
        clear=p.clear,
        kind=p.site.targets[0].kind,
        init=release.is_init(p.site),
    )
