"""A site's deploy history from what the cluster keeps (ReplicaSet revisions and the annotations
the Deployment controller copies onto them), pure; sync.history reads them through the cluster
port. No database."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reconciler.core import annotations as ann
from reconciler.core.model import ObservedDeployment
from reconciler.core.rollout import state as rollout

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"


@dataclass(frozen=True, slots=True)
class ReplicaSetRecord:
    """One ReplicaSet of a Deployment, reduced to what the history needs."""

    name: str
    created: str
    images: Mapping[str, str]  # container name -> image
    annotations: Mapping[str, str]
    replicas: int = 0

    @property
    def revision(self) -> int:
        try:
            return int(self.annotations.get(REVISION, "0"))
        except ValueError:
            return 0


@dataclass(frozen=True, slots=True)
class Deploy:
    """One revision: when, which commit (None when unknown), by whom, and how it ended."""

    revision: int
    at: str
    image: str
    sha: str | None
    by: str
    outcome: str
    cause: str = ""
    trigger: str | None = None  # what asked for it: schedule, http, a person's rollback, ...
    target: str = ""  # "CronJob/nightly": the workload of a site of several targets ("": one)

    def as_dict(self) -> dict[str, object]:
        return {
            "revision": self.revision,
            "at": self.at,
            "image": self.image,
            "sha": self.sha,
            "by": self.by,
            "outcome": self.outcome,
            "change_cause": self.cause or None,
            "trigger": self.trigger,
            "target": self.target or None,
        }


def deploys(
    deployment: ObservedDeployment, container: str, replica_sets: Sequence[ReplicaSetRecord]
) -> list[Deploy]:
    """Newest first. A ReplicaSet carries the annotations the Deployment had when it was the
    new one, so its reconciler.dev/sha names its commit only when its image was built from it."""
    current = _current_revision(deployment)
    failed = {
        sha
        for a in (deployment.annotations, *(rs.annotations for rs in replica_sets))
        if (sha := a.get(ann.FAILED_SHA))
    }
    state, progress = rollout.state(deployment)
    out = []
    for rs in sorted(replica_sets, key=lambda r: r.revision, reverse=True):
        image = rs.images.get(container, "")
        noted = rs.annotations.get(ann.SHA, "")
        ours = bool(noted) and (noted in image or noted[:7] in image)
        sha = noted if ours else None
        by = _by(rs, ours=ours)
        trigger = _trigger(rs, ours=ours)
        owner = deployment.image_owners.get(container)
        if rs.revision == current and owner is not None and owner.manager != rollout.FIELD_MANAGER:
            by = f"{owner.manager} (a person's change, {owner.time or 'time unknown'})"
            trigger = None
        if rs.revision == current:
            outcome = f"running: {state.value} {progress}".strip() if state else "running"
        elif sha and sha in failed:
            outcome = "failed, rolled back"
        else:
            outcome = "replaced"
        at = (
            rs.annotations.get(ann.UPDATED_AT)
            if ours and not rs.annotations.get(REVISION_HISTORY)
            else None
        )
        out.append(
            Deploy(
                revision=rs.revision,
                at=at or rs.created,
                image=image,
                sha=sha,
                by=by,
                outcome=outcome,
                cause=rs.annotations.get(ann.CHANGE_CAUSE, ""),
                trigger=trigger,
            )
        )
    return out


def _by(rs: ReplicaSetRecord, *, ours: bool) -> str:
    """Who made this revision: the annotations the Deployment had when it was the new one."""
    reused = bool(rs.annotations.get(REVISION_HISTORY))  # an older revision brought back
    bad = rs.annotations.get(ann.FAILED_SHA)
    person = rs.annotations.get(ann.HOLD_BY)
    if reused and bad:
        return f"reconciler (rollback from {bad[:7]})"
    if person and (reused or not ours):
        return f"{person} (the site was held)"
    if reused:
        return "a rollback (kubectl rollout undo or another tool)"
    return "reconciler" if ours else "a person or another tool"


def _trigger(rs: ReplicaSetRecord, *, ours: bool) -> str | None:
    """The trigger the reconciler recorded with this revision's image change: the Deployment's
    annotations are copied onto every new ReplicaSet, so a revision made by someone else (its
    image not from the recorded commit, or an older revision brought back by another tool)
    carries a stale one and gets none."""
    trigger = rs.annotations.get(ann.TRIGGER)
    if not trigger:
        return None
    reused = bool(rs.annotations.get(REVISION_HISTORY))
    rolled_back = bool(rs.annotations.get(ann.FAILED_SHA)) and trigger.startswith("rollback (")
    by_us = reused and (rolled_back or trigger.endswith("(rollback command)"))
    return trigger if (ours and not reused) or by_us else None


def _current_revision(d: ObservedDeployment) -> int:
    try:
        return int(d.annotations.get(REVISION, "0"))
    except ValueError:
        return 0
