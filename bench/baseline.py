"""The baseline: the straightforward hourly loop, one site after the other.

For each site: PyGithub with its DEFAULT settings (so its 0.25 s pause between requests is
part of the baseline) asks ``get_repo(...).get_branch(...)``, then the kubernetes client reads
the Deployment (GET) and, when the image differs, replaces it (PUT). No batching, no
concurrency, no conditional requests: what a first script would do.

Run as a subprocess by bench/run.py, so its wall time includes interpreter start and its peak
RSS is its own::

    python -m bench.baseline --spec spec.json

``spec.json``: {"github_url", "github_token", "kube_host", "kube_ca", "kube_token",
"image_template", "field_manager" (the PUT's; the reconciler's own, so its later syncs do not
take the baseline's writes for a person's change), "sites": [{"repo", "branch", "namespace",
"deployment", "container"}]}.
Prints one JSON object: {"loop_s", "sites", "updated", "errors"}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def run_loop(spec: dict[str, Any]) -> dict[str, Any]:
    """One pass over spec["sites"]; returns the loop's own time and what it did."""
    import kubernetes
    from github import Auth, Github

    configuration = kubernetes.client.Configuration()
    configuration.host = spec["kube_host"]
    configuration.ssl_ca_cert = spec["kube_ca"]
    configuration.verify_ssl = True
    configuration.api_key = {"authorization": spec["kube_token"]}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    kube = kubernetes.client.ApiClient(configuration)
    apps = kubernetes.client.AppsV1Api(kube)
    # PyGithub defaults on purpose: seconds_between_requests=0.25, no conditional requests.
    gh = Github(auth=Auth.Token(spec["github_token"]), base_url=spec["github_url"])

    updated = 0
    errors: list[str] = []
    started = time.perf_counter()
    for site in spec["sites"]:
        try:
            repo = gh.get_repo(site["repo"])
            branch = repo.get_branch(site["branch"])
            owner, name = site["repo"].split("/", 1)
            image = spec["image_template"].format(
                owner=owner.lower(), repo=name.lower(), sha=branch.commit.sha
            )
            deployment = apps.read_namespaced_deployment(site["deployment"], site["namespace"])
            assert deployment.spec is not None and deployment.spec.template.spec is not None
            for container in deployment.spec.template.spec.containers:
                if container.name == site["container"] and container.image != image:
                    container.image = image
                    apps.replace_namespaced_deployment(
                        site["deployment"],
                        site["namespace"],
                        deployment,
                        field_manager=spec.get("field_manager"),
                    )
                    updated += 1
        except Exception as exc:  # keep going, like the hourly script would
            errors.append(f"{site['repo']}: {type(exc).__name__}: {str(exc)[:200]}")
    loop_s = time.perf_counter() - started
    kube.close()  # type: ignore[no-untyped-call]
    gh.close()
    return {"loop_s": loop_s, "sites": len(spec["sites"]), "updated": updated, "errors": errors}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, type=Path)
    args = parser.parse_args(argv)
    result = run_loop(json.loads(args.spec.read_text()))
    print(json.dumps(result))
    return 0 if not result["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
