"""GitOps delivery (pure): the verdict of a site whose [sites.NAME.git] says it is deployed by a
commit to a configuration repository, which a GitOps tool (Argo CD, Flux, ...) applies.

The planner's verdict (from the branch head and the workload the site names) is adjusted with
what the configuration repository holds (`RepoView`):

- the reconciler's own image is the one it last committed (annotation reconciler.dev/git-image),
  not the one its field manager set (the GitOps tool's manager sets every image);
- a person's commit that changed the value in the file holds the site (who and when: the
  newest commit that changed the file), until the branch moves on or `reconciler resume`;
- a failed rollout of the image it committed becomes a rollback verdict whose `target_image`
  the sync layer commits back (never a patch of the image) and whose `write` remembers the
  failed commit and holds the site;
- an update already committed (the file holds it, the workload records it) waits for the
  GitOps tool instead of committing again; one the file holds but the workload does not record
  (a merged pull request, an adopted file) is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from reconciler.core import annotations as ann
from reconciler.core.errors import ErrorKind, WriteBackError
from reconciler.core.model import (
    Action,
    DeploymentPatch,
    GitSpec,
    KubeEvent,
    ObservedDeployment,
    Rollout,
    Site,
    SitePlan,
    Skip,
)
from reconciler.core.plan.running import same_image
from reconciler.core.rollout import state as rollout
from reconciler.core.writeback import (
    GitPerson,
    HelmValues,
    ImageRef,
    KustomizeImage,
    ManifestImage,
    Target,
    set_image,
)

BOT = "reconciler"  # who a hold after a rollback names


@dataclass(frozen=True, slots=True)
class RepoFile:
    """A file as the Contents API read it at `ref`: its text and blob SHA."""

    text: str
    sha: str
    ref: str


@dataclass(frozen=True, slots=True)
class FileChange:
    """The newest commit that changed a file: who (its author) and when, and its message."""

    sha: str
    author: str
    email: str
    date: str
    message: str


@dataclass(frozen=True, slots=True)
class RepoView:
    """What a sync read of a site's configuration repository: the file at the branch, the newest
    commit that changed it (read only when the file's value is not the reconciler's), or why
    it could not be read (that site's failure)."""

    text: str | None = None
    last: FileChange | None = None
    error: str = ""
    kind: ErrorKind | None = None


def target_of(spec: GitSpec) -> Target:
    """Where in the file the image is written."""
    if spec.write == "kustomize":
        return KustomizeImage(spec.kustomize_image, digest=spec.digest)
    if spec.write == "values":
        return HelmValues(spec.values_tag, spec.values_repository, spec.values_digest)
    return ManifestImage(spec.manifest_kind, spec.manifest_name, spec.container)


def person(pair: tuple[str, str] | None) -> GitPerson | None:
    return GitPerson(*pair) if pair else None


def where(spec: GitSpec) -> str:
    return f"{spec.repo}/{spec.file}@{spec.branch}"


def holds(spec: GitSpec, text: str, image: str) -> bool:
    """Whether the file already holds `image` where the site writes it; raises WriteBackError
    (the file does not parse, the entry or key is not there)."""
    return not set_image(text, target_of(spec), ImageRef.parse(image), file=where(spec)).changed


def proposed(d: ObservedDeployment) -> tuple[str, str] | None:
    """Mode "pr": (commit, image) of the pull request the reconciler keeps open."""
    sha, _, image = d.annotations.get(ann.GIT_PROPOSED, "").partition(" ")
    return (sha, image) if sha and image else None


def ours(d: ObservedDeployment, container: str) -> bool:
    """Whether the workload runs the image the reconciler last committed (so its rollout is
    the reconciler's to follow and roll back)."""
    written = d.annotations.get(ann.GIT_IMAGE)
    current = next((c.image for c in d.containers if c.name == container), None)
    return bool(d.annotations.get(ann.SHA) and written and current and same_image(current, written))


def wants_pods(site: Site, d: ObservedDeployment, container: str, now: float) -> bool:
    """As rollout.wants_pods, for the image the reconciler committed (the clock starts at the
    commit: the GitOps tool's delay counts against rollout_timeout)."""
    state, _ = rollout.state(d)
    if state is not Rollout.PROGRESSING or not ours(d, container):
        return False
    started = rollout.parse_time(d.annotations.get(ann.UPDATED_AT))
    return started is not None and now - started >= rollout.timeout(site, d)


def foreign(spec: GitSpec, d: ObservedDeployment, text: str) -> bool:
    """Whether the file holds a value the reconciler did not commit (nor propose): a person's.
    A workload the reconciler never wrote for is adopted, not held."""
    written = d.annotations.get(ann.GIT_IMAGE)
    if not written or holds(spec, text, written):
        return False
    offer = proposed(d)
    return offer is None or not holds(spec, text, offer[1])


def adjust(
    p: SitePlan,
    d: ObservedDeployment | None,
    view: RepoView,
    *,
    troubles: tuple[str, ...] = (),
    now: float,
) -> SitePlan:
    """The planner's verdict `p` of a git-delivered site, adjusted as the module says."""
    spec = p.site.git
    if spec is None or d is None or p.container is None:
        return p
    if (p.action is Action.SKIP and p.skip is Skip.PAUSED) or p.action is Action.HELD:
        return p
    if view.error:
        return replace(p, action=Action.ERROR, reason=view.error, error_kind=view.kind)
    try:
        if view.text is not None and foreign(spec, d, view.text) and not _mine(p.site, view):
            return _held(p, d, view)
        back = _rollback(p, d, troubles, now)
        if back is not None:
            return back
        return _pending(p, d, view)
    except WriteBackError as exc:
        return replace(p, action=Action.ERROR, reason=str(exc), error_kind=exc.kind)


def _mine(site: Site, view: RepoView) -> bool:
    """Whether the newest change of the file is the reconciler's own commit for this site (its
    record on the workload did not land: a crash between the two), so no person's change."""
    return view.last is not None and view.last.message.rstrip().endswith(f"Site: {site.name}")


def _held(p: SitePlan, d: ObservedDeployment, view: RepoView) -> SitePlan:
    """A person's commit changed the value: held until the branch moves on or a resume after it."""
    spec = p.site.git
    assert spec is not None
    last = view.last or FileChange("", "someone", "", "", "")
    notes = d.annotations
    resumed = rollout.parse_time(notes.get(ann.RESUMED_AT))
    changed = rollout.parse_time(last.date)
    what = (
        f"{spec.file} in {spec.repo}@{spec.branch} changed by {last.author} at "
        f"{last.date or '?'} ({last.sha[:7] or '?'})"
    )
    resumes = resumed is not None and (changed is None or changed <= resumed)
    held_head = notes.get(ann.HELD_HEAD)
    if resumes or (held_head and p.head_sha and p.head_sha != held_head):
        if p.action is Action.UPDATE:
            return replace(p, clear=ann.HOLD_KEYS, reason=f"{p.reason}; resumes after {what}")
        return p
    write = None
    if not held_head and p.head_sha:
        event = KubeEvent(
            "Normal",
            "Held",
            f"{what}; the reconciler leaves it until {p.site.repo} moves past "
            f"{p.head_sha[:7]} or `reconciler resume {p.site.name}`",
        )
        write = DeploymentPatch(
            d.namespace,
            d.name,
            {ann.HELD_HEAD: p.head_sha},
            events=(event,),
            resource_version=d.resource_version,
        )
    since = (held_head or p.head_sha or "")[:7]
    until = f"a commit after {since} lands" if since else "the branch moves"
    return replace(
        p,
        action=Action.HELD,
        reason=f"{what}; held until {until} or `reconciler resume {p.site.name}`",
        held_by=last.author,
        held_at=last.date,
        write=write,
    )


def _rollback(
    p: SitePlan, d: ObservedDeployment, troubles: tuple[str, ...], now: float
) -> SitePlan | None:
    """The failed rollout of the committed image: commit the previous one back (target_image)
    and write the failure and a hold on the workload (no image in the write)."""
    container = p.container
    assert container is not None
    why = rollout.failure(d, troubles) if ours(d, container) else None
    if why is None:
        return None
    current = next(c.image for c in d.containers if c.name == container)
    back = rollout.rollback_of(d.annotations, p.site.repo, container, current, why=why, now=now)
    if back is None:
        return replace(p, rollout=Rollout.FAILED)
    bad = d.annotations.get(ann.SHA, "")
    hold = f"rollout of {bad[:7]} failed; its image was reverted in the config repository ({why})"[
        :400
    ]
    notes = {
        **back.annotations,
        ann.GIT_IMAGE: back.image,
        ann.GIT_PROPOSED: None,
        ann.HOLD: hold,
        ann.HOLD_BY: BOT,
        ann.HOLD_AT: rollout.stamp(now),
    }
    write = DeploymentPatch(
        d.namespace, d.name, notes, events=back.events, resource_version=d.resource_version
    )
    return replace(
        p,
        action=Action.ROLLED_BACK,
        reason=f"rollout of {bad[:7]} failed ({why}); committing {back.image} back",
        rollout=Rollout.FAILED,
        target_image=back.image,
        failed_sha=bad,
        write=write,
    )


def _pending(p: SitePlan, d: ObservedDeployment, view: RepoView) -> SitePlan:
    """An update already committed waits for the GitOps tool; a value the file holds but the
    workload does not record (a merged pull request, an adopted file) is recorded."""
    spec = p.site.git
    assert spec is not None
    target, text = p.target_image, view.text
    if not (target and p.sha and text is not None and holds(spec, text, target)):
        if p.action is Action.UPDATE and spec.mode == "pr" and _proposes(d, p.sha, target):
            why = f"pull request from {_branch(p.site)} into {spec.branch} waits for a merge"
            return replace(p, action=Action.SKIP, skip=Skip.AWAITING_APPLY, reason=why)
        return p
    recorded = d.annotations.get(ann.SHA) == p.sha
    if p.action is Action.UPDATE and recorded:
        commit = d.annotations.get(ann.GIT_COMMIT, "")[:7] or "?"
        why = (
            f"committed {p.sha[:7]} to {where(spec)} ({commit}); waiting for the GitOps tool "
            "to apply it"
        )
        # the deploy is under way: followed (serve, sync --wait) until the tool applies it
        return replace(
            p, action=Action.SKIP, skip=Skip.AWAITING_APPLY, reason=why, rollout=Rollout.PROGRESSING
        )
    if p.action is Action.IN_SYNC and not recorded:
        return replace(
            p, action=Action.UPDATE, reason=f"{where(spec)} holds {p.sha[:7]}; record it"
        )
    return p


def _proposes(d: ObservedDeployment, sha: str | None, image: str | None) -> bool:
    offer = proposed(d)
    return offer is not None and offer[0] == sha and offer[1] == image


def _branch(site: Site) -> str:
    return f"reconciler/{site.name}"


def record(
    p: SitePlan, d_notes: dict[str, str], *, commit: str | None, trigger: str, now: float
) -> dict[str, str | None]:
    """The annotations a deploy by commit leaves on the workload: where the image came from,
    what it replaced (the image committed before it, else the one running), the commit."""
    assert p.target_image and p.sha
    before = d_notes.get(ann.GIT_IMAGE) or p.current_image
    notes: dict[str, str | None] = {
        ann.REPO: p.site.repo,
        ann.BRANCH: p.branch,
        ann.SHA: p.sha,
        ann.UPDATED_AT: rollout.stamp(now),
        ann.TRIGGER: trigger[:100] or None,
        ann.PREVIOUS_IMAGE: before if before and before != p.target_image else None,
        ann.PREVIOUS_SHA: (d_notes.get(ann.SHA) if not p.clear else None) or None,
        ann.GIT_IMAGE: p.target_image,
        ann.GIT_COMMIT: commit or d_notes.get(ann.GIT_COMMIT),
        ann.GIT_PROPOSED: None,
    }
    for key in p.clear:
        notes[key] = None
    return notes
