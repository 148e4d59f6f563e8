"""Every annotation key the reconciler reads or writes on a Deployment, in one place."""

from __future__ import annotations

import json
from collections.abc import Mapping

PREFIX = "reconciler.dev/"
PAUSED = PREFIX + "paused"  # "true" on a Deployment: report it, never change it
REPO = PREFIX + "repo"  # written on update: where the image came from ...
BRANCH = PREFIX + "branch"
SHA = PREFIX + "sha"  # ... the commit it runs (read back when planning)
UPDATED_AT = PREFIX + "updated-at"  # when the reconciler last changed it
TRIGGER = PREFIX + "trigger"  # what made it change the image (schedule, http, a person, ...)
PREVIOUS_IMAGE = PREFIX + "previous-image"  # the image an update replaced: a rollback's target
# JSON {container: image}: the image each container had before a write that set several of
# one workload's containers (a release's containers and init containers): previous-image is
# only the first's
PREVIOUS_IMAGES = PREFIX + "previous-images"
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
STAGES = PREFIX + "stages"  # JSON: when SHA was pushed, its checks and image ready (leadtime)
HEAD_STAGES = PREFIX + "head-stages"  # JSON: the same for a branch head not deployed yet
GIT_IMAGE = PREFIX + "git-image"  # git delivery: the image last committed to the config repo
GIT_COMMIT = PREFIX + "git-commit"  # ... the config repository's commit that wrote it
GIT_PROPOSED = PREFIX + "git-proposed"  # mode "pr": "<sha> <image>" of the open pull request
HOLD_KEYS = (HOLD, HOLD_BY, HOLD_AT, HELD_HEAD)
NOTIFIED = PREFIX + "notified"  # JSON: the state last notified about (core/notify/decide.py)
CHANGE_CAUSE = "kubernetes.io/change-cause"  # what `kubectl rollout history` shows

TRUE_VALUES = ("true", "1", "yes")


def previous_image(notes: Mapping[str, str], container: str) -> str | None:
    """The image `container` had before the last write that changed it: its entry of
    previous-images when that write set several containers, else previous-image."""
    several = notes.get(PREVIOUS_IMAGES)
    if several:
        try:
            images = json.loads(several)
        except ValueError:
            images = None
        if isinstance(images, dict):
            found = images.get(container)
            return found if isinstance(found, str) and found else None
    return notes.get(PREVIOUS_IMAGE) or None


def previous_images(images: Mapping[str, str | None]) -> dict[str, str | None]:
    """What a write setting these containers records of their images before it (None: none):
    previous-image (the first's) and, when it sets several, previous-images (each one's)."""
    values = list(images.values())
    first = values[0] if values else None
    kept = {c: i for c, i in images.items() if i}
    several = json.dumps(kept, sort_keys=True) if len(images) > 1 and kept else None
    return {PREVIOUS_IMAGE: first or None, PREVIOUS_IMAGES: several}
