"""One site ("blog") in its own namespace, a GitHub stand-in, the CLI and kubectl as a person:
the world the rollout tests act in, on the API server alone or on the local cluster."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes

from reconciler.cli.main import main
from testkit.deployments import create_deployment, get_deployment
from testkit.github import GitHubStandIn, random_sha
from testkit.github_fixtures import TOKEN


class RolloutWorld:
    """`kubectl(*args)` runs kubectl as the person in the site's namespace."""

    def __init__(
        self,
        api: Any,
        ns: str,
        github: GitHubStandIn,
        tmp: Path,
        *,
        kubeconfig: Path,
        kubectl: Callable[..., object],
        site_extra: str = "",
    ) -> None:
        self.api, self.ns, self.github, self.run_kubectl = api, ns, github, kubectl
        self.sites = tmp / "sites.toml"
        self.site_extra = site_extra
        self.write_sites()
        self.env = {
            "GITHUB_API_URL": github.url,
            "GITHUB_TOKEN": TOKEN,
            "KUBECONFIG": str(kubeconfig),
            "USER": "alice",
        }
        github.add_repo("acme/blog", {"main": random_sha()})
        create_deployment(api, ns, "blog", "gcr.io/p/blog:before")

    def write_sites(self, extra: str | None = None) -> None:
        """sites.toml with the one site; `extra` lines go into its table."""
        if extra is not None:
            self.site_extra = extra
        self.sites.write_text(
            f'[sites.blog]\nrepo = "acme/blog"\nbranch = "main"\nnamespace = "{self.ns}"\n'
            'container = "app"\nimage = "gcr.io/p/blog:{sha}"\nverify = "none"\n' + self.site_extra
        )

    def head(self, sha: str | None = None) -> str:
        sha = sha or random_sha()
        self.github.set_branch("acme/blog", "main", sha)
        return sha

    def cli(self, *argv: str) -> tuple[int, Any]:
        out, err = io.StringIO(), io.StringIO()
        code = main(
            [*argv, "--config", str(self.sites), "--output", "json"],
            env=self.env,
            stdout=out,
            stderr=err,
        )
        text = out.getvalue()
        return code, (json.loads(text) if text.strip() else err.getvalue())

    def sync(self, *args: str, code: int = 0) -> dict[str, Any]:
        got, results = self.cli("sync", *args)
        assert got == code, results
        return dict(results[0])

    def kubectl(self, *args: str) -> None:
        self.run_kubectl("-n", self.ns, *args)

    def get(self) -> dict[str, Any]:
        return get_deployment(self.api, self.ns, "blog")

    def resource_version(self) -> str:
        return str(self.get()["metadata"]["resourceVersion"])

    def image(self) -> str:
        d = self.get()
        return str(
            next(
                c["image"]
                for c in d["spec"]["template"]["spec"]["containers"]
                if c["name"] == "app"
            )
        )

    def events(self, reason: str | None = None) -> list[str]:
        core = kubernetes.client.CoreV1Api(self.api)
        return [
            str(e.reason)
            for e in core.list_namespaced_event(self.ns).items
            if e.involved_object.name == "blog" and reason in (None, e.reason)
        ]


def on_local_cluster(
    cluster: Any, api: Any, ns: str, github: GitHubStandIn, tmp: Path, *, site_extra: str = ""
) -> RolloutWorld:
    """A RolloutWorld on the local cluster (a testkit.controlplane.LocalCluster)."""
    return RolloutWorld(
        api,
        ns,
        github,
        tmp,
        kubeconfig=cluster.kubeconfig_path,
        kubectl=cluster.kubectl,
        site_extra=site_extra,
    )
