"""Every annotation key the reconciler reads or writes on a Deployment, in one place."""

from __future__ import annotations

PREFIX = "reconciler.dev/"
PAUSED = PREFIX + "paused"  # "true" on a Deployment: report it, never change it
REPO = PREFIX + "repo"  # written on update: where the image came from ...
BRANCH = PREFIX + "branch"
SHA = PREFIX + "sha"  # ... the commit it runs (read back when planning)
UPDATED_AT = PREFIX + "updated-at"  # when the reconciler last changed it
CHANGE_CAUSE = "kubernetes.io/change-cause"  # what `kubectl rollout history` shows

TRUE_VALUES = ("true", "1", "yes")
