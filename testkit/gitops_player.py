"""A GitOps tool played for tests (what Argo CD or Flux does with a kustomization): read the file
committed on the configuration repository's branch from the GitHub stand-in, and apply the image
its `images:` entry sets to the Deployment, as its own field manager. The reconciler never
patches the image of a git-delivered site; only this does."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML

from testkit.github import GitHubStandIn

FIELD_MANAGER = "gitops-player"  # as argocd-controller or kustomize-controller would be


@dataclass
class GitOpsPlayer:
    """One application: `path` (a kustomization) of `repo`@`branch` → container `container` of
    Deployment `deployment` in `namespace`. `kubectl(*args)` runs the built kubectl."""

    github: GitHubStandIn
    kubectl: Callable[..., Any]
    repo: str
    path: str
    namespace: str
    deployment: str
    container: str
    branch: str = "main"
    applied: str | None = None  # the config repository's commit applied last

    def desired(self) -> str:
        """The image the committed kustomization says (newName/newTag, or newName@digest)."""
        text = self.github.file_at(self.repo, self.branch, self.path)
        assert text is not None, f"{self.path} is not on {self.repo}@{self.branch}"
        doc = YAML(typ="safe").load(text)
        entry = doc["images"][0]
        name = entry.get("newName") or entry["name"]
        if entry.get("digest"):
            return f"{name}@{entry['digest']}"
        return f"{name}:{entry['newTag']}"

    def sync(self) -> str:
        """One reconcile of the application: apply the branch head's image; returns it."""
        image = self.desired()
        self.kubectl(
            "-n",
            self.namespace,
            "set",
            "image",
            f"deployment/{self.deployment}",
            f"{self.container}={image}",
            f"--field-manager={FIELD_MANAGER}",
        )
        self.applied = self.github.log(self.repo, self.branch, limit=1)[0].sha
        return image
