"""From a person's `kubectl rollout undo` to serve showing the site held (issue #22): the follower
wakes on the watch-fed cache's event, no sync runs.

    .venv/bin/python -m bench.undo_latency [--runs 10] [--out bench/results/undo.json]

On the local cluster (controllers, scheduler, kwok nodes): one site, deployed twice by serve so
that the Deployment has a revision to undo to. Each run: `kubectl rollout undo`; a watch on the
Deployment notes when the undo's new image is visible on the API server; GET /status is polled
every 10 ms until the site's state is "held"; the figure is the difference (the poll adds up to
10 ms). Then `POST /sites/blog/resume`, a new commit, `POST /sync/blog` and its rollout finished
make the next run start from the same state. Prints JSON (median, max, every run) and the load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import kubernetes  # noqa: E402

from bench.rollout_figures import TOKEN, TRIGGER, _available, _image, log, serve_env  # noqa: E402
from testkit.controlplane import LocalCluster  # noqa: E402
from testkit.deployments import deployment_body  # noqa: E402
from testkit.github import GitHubStandIn, random_sha  # noqa: E402
from testkit.serve_process import ServeProcess  # noqa: E402

NS = "undo"


class ImageWatch:
    """When the Deployment's app image became `wanted` (monotonic), from a watch."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.wanted: str | None = None
        self.seen_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ImageWatch:
        self._thread.start()
        return self

    def expect(self, image: str) -> None:
        self.wanted, self.seen_at = image, None

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        apps = kubernetes.client.AppsV1Api(self.api)
        while not self._stop.is_set():
            w = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
            try:
                for event in w.stream(  # type: ignore[no-untyped-call]
                    apps.list_namespaced_deployment, NS, timeout_seconds=30, _request_timeout=60
                ):
                    containers = event["object"].spec.template.spec.containers
                    image = next(c.image for c in containers if c.name == "app")
                    if self.wanted is not None and image == self.wanted and self.seen_at is None:
                        self.seen_at = time.monotonic()
                    if self._stop.is_set():
                        w.stop()  # type: ignore[no-untyped-call]
            except Exception as exc:  # a watch cut: watch again (a change then shows as listed)
                log(f"image watch ended ({type(exc).__name__}); watching again")


def _state(proc: ServeProcess) -> str:
    return str(proc.request("GET", "/status")[1]["sites"][0]["state"])


def _deploy(proc: ServeProcess, gh: GitHubStandIn, apps: Any) -> str:
    sha = gh.set_branch("acme/blog", "main", random_sha())
    status, answer = proc.request("POST", "/sync/blog", TRIGGER)
    assert status == 200 and answer["results"][0]["applied"], answer
    proc.wait_for(lambda: _available(apps, NS), timeout=300, what="the rollout")
    proc.wait_for(lambda: _state(proc) == "in-sync", timeout=60, what="in sync")
    return f"gcr.io/p/blog:{sha}"


def measure(runs: int, workdir: Path) -> dict[str, Any]:
    values: list[float] = []
    with LocalCluster(work_dir=workdir / "cluster") as cluster, GitHubStandIn(tokens=[TOKEN]) as gh:
        api = cluster.api_client()
        core = kubernetes.client.CoreV1Api(api)
        apps = kubernetes.client.AppsV1Api(api)
        core.create_namespace(
            kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=NS))
        )
        first = random_sha()
        gh.add_repo("acme/blog", {"main": first})
        body = deployment_body("blog", f"gcr.io/p/blog:{first}", sidecar=False)
        apps.create_namespaced_deployment(NS, body)  # type: ignore[arg-type]
        sites = workdir / "sites.toml"
        sites.write_text(
            '[service]\nschedule = "0 0 1 1 *"\n\n'
            f'[sites.blog]\nrepo = "acme/blog"\nnamespace = "{NS}"\ncontainer = "app"\n'
            'image = "gcr.io/p/blog:{sha}"\nverify = "none"\n'
        )
        env = {**serve_env(gh, cluster.kubeconfig_path, NS), "RECONCILER_LEASE": "off"}
        watch = ImageWatch(api).start()
        with ServeProcess(sites, env, workdir / "serve-undo.log").start() as proc:
            proc.wait_for(lambda: proc.request("GET", "/status")[1]["last_sync"], what="start")
            previous = _deploy(proc, gh, apps)
            for i in range(runs):
                current = _deploy(proc, gh, apps)
                watch.expect(previous)
                cluster.kubectl("rollout", "undo", "deployment/blog", "-n", NS)
                while _state(proc) != "held":
                    time.sleep(0.01)
                held_at = time.monotonic()
                proc.wait_for(lambda: watch.seen_at, timeout=30, what="the undo on the watch")
                assert watch.seen_at is not None and _image(apps, NS) == previous
                values.append(held_at - watch.seen_at)
                log(f"undo -> held run {i + 1}: {values[-1] * 1000:.0f} ms")
                status, answer = proc.request("POST", "/sites/blog/resume", TRIGGER, body={})
                assert status == 200, answer
                run = answer["run"]  # the sync the resume started: done before the next deploy
                proc.wait_for(
                    lambda r=run: proc.request("GET", f"/runs/{r}")[1].get("state") == "done",
                    timeout=120,
                    what="the resume's sync",
                )
                previous = current
        watch.stop()
    return {
        "runs": len(values),
        "median_ms": round(statistics.median(values) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
        "values_ms": [round(v * 1000, 1) for v in values],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="undo-latency-") as tmp:
        result = measure(args.runs, Path(tmp))
    result["load_average_1m"] = {"start": load_before[0], "end": os.getloadavg()[0]}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
