"""Every annotation key the reconciler reads or writes on a Deployment, in one place."""

from __future__ import annotations

import hashlib

PREFIX = "reconciler.dev/"
PAUSED = PREFIX + "paused"  # "true" on a Deployment: report it, never change it
REPO = PREFIX + "repo"  # written on update: where the image came from ...
BRANCH = PREFIX + "branch"
SHA = PREFIX + "sha"  # ... the commit it runs (read back when planning)
UPDATED_AT = PREFIX + "updated-at"  # when the reconciler last changed it
TRIGGER = PREFIX + "trigger"  # what made it change the image (schedule, http, a person, ...)
PREVIOUS_IMAGE = PREFIX + "previous-image"  # the image an update replaced: a rollback's target
PREVIOUS_SHA = PREFIX + "previous-sha"  # ... and the commit it was built from, when known
FAILED_SHA = PREFIX + "failed-sha"  # a commit whose rollout failed: never deployed again
FAILED_REASON = PREFIX + "failed-reason"
FAILED_AT = PREFIX + "failed-at"
HOLD = PREFIX + "hold"  # an explicit hold (`reconciler hold|rollback`); the value is the reason
HOLD_BY = PREFIX + "hold-by"
HOLD_AT = PREFIX + "hold-at"
HELD_HEAD = PREFIX + "held-head"  # branch head when a person's image change was first seen
RESUMED_AT = PREFIX + "resumed-at"  # `reconciler resume`: image changes before it do not hold
AVAILABLE_AT = PREFIX + "available-at"  # when the rollout of SHA became available
APPLIED_AT = PREFIX + "applied-at"  # git delivery: when the workload first ran SHA's commit
STAGES = PREFIX + "stages"  # JSON: when SHA was pushed, its checks and image ready (leadtime)
HEAD_STAGES = PREFIX + "head-stages"  # JSON: the same for a branch head not deployed yet
GIT_IMAGE = PREFIX + "git-image"  # git delivery: the image last committed to the config repo
GIT_COMMIT = PREFIX + "git-commit"  # ... the config repository's commit that wrote it
GIT_PROPOSED = PREFIX + "git-proposed"  # mode "pr": "<sha> <image>" of the open pull request
HOLD_KEYS = (HOLD, HOLD_BY, HOLD_AT, HELD_HEAD)
NOTIFIED = PREFIX + "notified"  # JSON: the state last notified about (core/notify/decide.py)
CHANGE_CAUSE = "kubernetes.io/change-cause"  # what `kubectl rollout history` shows

TRUE_VALUES = ("true", "1", "yes")


def previous_image_of(container: str) -> str:
    """The key of one container's image before the reconciler's last change of it
    (PREVIOUS_IMAGE is the last change's one container: several containers of one workload,
    each a target's, need one each). A key's name is at most 63 characters: a long container
    name is cut and told apart by a hash."""
    name = f"previous-image.{container}"
    if len(name) > 63:
        digest = hashlib.sha256(container.encode()).hexdigest()[:8]
        name = f"{name[:54]}-{digest}"
    return PREFIX + name
