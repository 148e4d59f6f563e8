"""What people ask for by hand: hold, resume and roll back one site (CLI and HTTP alike)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from reconciler.core import annotations as ann
from reconciler.core import gates
from reconciler.core.config.sites import Config
from reconciler.core.errors import CommandError
from reconciler.core.model import DeploymentPatch, ObservedDeployment, Site
from reconciler.core.plan import planner, release
from reconciler.core.plan.template import render
from reconciler.core.ports import VerifyRequest
from reconciler.core.rollout import state as rollout
from reconciler.sync.engine import Engine, attempts

__all__ = ["CommandError", "Done", "approve", "hold", "resume", "rollback"]

_SHA = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True, slots=True)
class Done:
    """What a command changed, in words, and the image the site runs afterwards."""

    site: str
    message: str
    image: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"site": self.site, "message": self.message, "image": self.image}


def hold(engine: Engine, site: Site, *, by: str, reason: str = "") -> Done:
    """Leave the site alone until `resume`, whatever its branch does."""
    delivery = engine.deliveries.of(site)
    if delivery is not None:
        return Done(site.name, delivery.hold(site, by=by, reason=reason, now=engine.clock()))
    _write(engine, site, lambda d, _c: rollout.hold_patch(d, by, reason, engine.clock()))
    return Done(site.name, f"{site.name} held by {by}: {reason or 'held'}")


def resume(engine: Engine, site: Site, *, by: str) -> Done:
    """Lift an explicit hold and a hold by a person's change; the next sync deploys the head."""
    delivery = engine.deliveries.of(site)
    if delivery is not None:
        return Done(site.name, delivery.resume(site, by=by, now=engine.clock()))
    for part in release.parts_of(site):  # every target: a person's change of any holds it
        _write(engine, part, lambda d, _c: rollout.resume_patch(d, by, engine.clock()))
    return Done(site.name, f"{site.name} resumed by {by}; the next sync deploys its branch head")


def rollback(engine: Engine, site: Site, *, by: str, to: str | None = None) -> Done:
    """Deploy the previous commit's image (or commit `to`'s) and hold the site there."""
    if to is not None and not _SHA.match(to):
        raise CommandError(f"--to must be a full 40-character commit SHA, not {to!r}")
    delivery = engine.deliveries.of(site)
    if delivery is not None:
        image = None
        if to is not None:
            branch = site.branch or "main"
            image = render(site.image, owner=site.owner, repo=site.repo_name, branch=branch, sha=to)
            image = _verify(engine, site, image, to)
        said, now_runs = delivery.rollback(site, by=by, to=to, image=image, now=engine.clock())
        return Done(site.name, said, now_runs)
    parts = release.parts_of(site)  # every target of the site goes back, and is held
    if to is None:
        for part in parts:
            d = engine.cluster_of(part).read(part.namespace, part.deployment, part.targets[0].kind)
            container = planner.container_of(part, d) if d is not None else None
            if container is not None and not _previous(d, container):
                raise CommandError(
                    f"{site.name}: no previous image is recorded on {planner.workload_name(part)}"
                    f" for {container}; pass --to SHA"
                )
    chosen: dict[str, str] = {}  # by part: the image it goes back to
    for group in _by_workload(parts):  # one write per workload: its containers together
        _write(engine, group[0], _rollback_to(engine, group, to, by, chosen))
    said, first = ", ".join(chosen.values()), next(iter(chosen.values()))
    return Done(site.name, f"{site.name} rolled back to {said} by {by} and held", first)


def _previous(d: ObservedDeployment | None, container: str) -> str | None:
    return rollout.previous_image(d.annotations, container) if d is not None else None


def _by_workload(parts: tuple[Site, ...]) -> list[list[Site]]:
    groups: dict[tuple[str, str], list[Site]] = {}
    for part in parts:
        groups.setdefault((part.targets[0].kind, part.deployment), []).append(part)
    return list(groups.values())


def _rollback_to(
    engine: Engine, parts: list[Site], to: str | None, by: str, chosen: dict[str, str]
) -> Callable[[ObservedDeployment, str], DeploymentPatch]:
    """The rollback write of one workload: each of its parts' container back to its previous
    image, or to commit `to`'s (its template)."""

    def one(d: ObservedDeployment, site: Site, container: str) -> DeploymentPatch:
        if to is None:
            image = _previous(d, container)
            sha = d.annotations.get(ann.PREVIOUS_SHA) or None
            if not image:
                raise CommandError(
                    f"{site.name}: no previous image is recorded for {container} on "
                    f"{planner.workload_name(site)}; pass --to SHA"
                )
        else:
            branch = d.annotations.get(ann.BRANCH) or site.branch or "main"
            image = render(site.image, owner=site.owner, repo=site.repo_name, branch=branch, sha=to)
            sha = to
            image = _verify(engine, site, image, to)
        chosen[release.key(site)] = image
        return rollout.manual_rollback_patch(
            site, d, container=container, image=image, sha=sha, by=by, now=engine.clock()
        )

    def make(d: ObservedDeployment, container: str) -> DeploymentPatch:
        rest = [(q, planner.container_of(q, d)) for q in parts[1:]]
        missing = next((q for q, c in rest if c is None), None)
        if missing is not None:
            raise CommandError(f"{missing.name}: cannot tell which container it manages")
        return rollout.merge(
            [one(d, parts[0], container), *(one(d, q, c) for q, c in rest if c is not None)]
        )

    return make


def approve(engine: Engine, config: Config, site: Site, *, by: str, sha: str | None = None) -> Done:
    """Approve one commit for a site with approval = "manual": the one it waits for, or `sha`
    (a full SHA, or the start of the one it waits for). It is recorded on the workload (who,
    when, an Event); the next sync deploys it (approving it approves no later commit)."""
    if site.approval != "manual":
        raise CommandError(f'{site.name} has approval = "auto": it waits for no approval')
    if sha is None or not _SHA.match(sha):
        (p,) = engine.plan(config, [site.name]).sites
        waiting = gates.waiting_sha(p)
        if waiting is None or (sha is not None and not waiting.startswith(sha.lower())):
            what = f"--sha {sha} is not the commit it waits for" if sha else "pass --sha SHA"
            raise CommandError(f"{site.name} waits for no approval ({p.reason}); {what}")
        sha = waiting
    chosen = sha
    _write(engine, site, lambda d, _c: gates.approve_patch(d, chosen, by, engine.clock()))
    return Done(site.name, f"{site.name}: {sha[:7]} approved by {by}; the next sync deploys it")


def _verify(engine: Engine, site: Site, image: str, sha: str) -> str:
    """The image to deploy for `sha`, verified like a sync would (pinned to its digest)."""
    if site.verify == "none":
        return image
    request = VerifyRequest(image, site.repo, sha, site.verify, site.required_checks)
    status = engine.verifier.verify([request]).get(request)
    if status is not None and status.exists is not True:
        raise CommandError(f"{site.name}: {status.reason or f'image {image} does not exist'}")
    if status is not None and status.digest and site.pin_digest:
        return f"{image}@{status.digest}"
    return image


def _write(
    engine: Engine,
    site: Site,
    make: Callable[[ObservedDeployment, str], DeploymentPatch],
) -> None:
    """Read, build the patch, send it guarded by resourceVersion; re-read on a conflict."""
    for _ in attempts(engine):
        cluster = engine.cluster_of(site)
        d, container = _workload(engine, site)
        result = cluster.patch(make(d, container), dry_run=False)
        if result.ok:
            cluster.settle()  # its Event is written before the command reports
            return
        if not result.conflict:
            raise CommandError(f"{site.name}: {result.reason}")
    raise CommandError(f"{site.name}: the Deployment kept changing under us (409 conflicts)")


def _workload(engine: Engine, site: Site) -> tuple[ObservedDeployment, str]:
    """The workload a command writes on and the container it manages. A Helm or git site's is
    the one its delivery rolls, where its records (an approval) are read; its delivery sets the
    image, so no container is named ("")."""
    if engine.deliveries.of(site) is not None:
        seen = engine.deliveries.observe([site])
        p = engine.deliveries.verdict(site, None, seen, engine.clock())
        at = engine.deliveries.workload(p, seen)
        if at is None:
            raise CommandError(f"{site.name}: {p.reason or 'its delivery rolls no workload'}")
        return at, ""
    d = engine.cluster_of(site).read(site.namespace, site.deployment, site.targets[0].kind)
    if d is None:
        raise CommandError(f"{planner.workload_name(site)} not found")
    container = planner.container_of(site, d)
    if container is None:
        raise CommandError(f"{site.name}: cannot tell which container it manages")
    return d, container
