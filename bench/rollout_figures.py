"""Rollout figures: how fast serve rolls a failed rollout back, and what following rollouts
costs the API server.

    .venv/bin/python -m bench.rollout_figures [--runs 5] [--sites 1000] [--namespaces 10]
                                             [--window 60] [--out bench/results/rollout.json]

1. Latency, on the local cluster (controllers, scheduler, kwok nodes): serve deploys a
   crash-looping commit; a watch on the Deployment and its pods notes when the failure became
   visible on the API server (the Progressing condition turning ProgressDeadlineExceeded; or,
   for the crash-loop rule, the later of the first pod of the new image in CrashLoopBackOff and
   updated-at + rollout_timeout) and when the image went back. Both instants come from the same
   watch, so the figure is failure-visible -> rollback-patch-visible.
2. Cost, on an API server with an audit log: `--sites` Deployments in `--namespaces` namespaces,
   serve (as its own ServiceAccount) deploys all of them, so every one is progressing; its
   requests are counted by verb over `--window` seconds while they all progress, then over
   `--window` seconds once every rollout is over.
"""

from __future__ import annotations

import argparse
import calendar
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import kubernetes  # noqa: E402
import urllib3  # noqa: E402

from testkit.controlplane import (  # noqa: E402
    ControlPlane,
    LocalCluster,
    audit_events,
    crashloop_sha,
    kubeconfig_for_token,
    serviceaccount_token,
)
from testkit.deployments import create_deployment, deployment_body, write_status  # noqa: E402
from testkit.github import GitHubStandIn, random_sha  # noqa: E402
from testkit.serve_process import ServeProcess  # noqa: E402

TOKEN = "ghp_bench"
TRIGGER = "bench-trigger-token-of-at-least-32-bytes"
SA_NS, SA = "bench-system", "reconciler"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def serve_env(gh: GitHubStandIn, kubeconfig: Path, lease_ns: str) -> dict[str, str]:
    return {
        "GITHUB_API_URL": gh.url,
        "GITHUB_TOKEN": TOKEN,
        "KUBECONFIG": str(kubeconfig),
        "RECONCILER_TRIGGER_TOKEN": TRIGGER,
        "POD_NAMESPACE": lease_ns,
        "POD_NAME": "reconciler-bench-0",
        "LOG_FORMAT": "json",
    }


def epoch(stamp: str) -> float:
    return calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))


class Watcher:
    """Watches one Deployment and its pods; notes when things first became visible."""

    def __init__(self, api: Any, ns: str, name: str) -> None:
        self.api, self.ns, self.name = api, ns, name
        self.deadline_at: float | None = None
        self.crashloop_at: float | None = None
        self.back_at: float | None = None
        self.bad_image = ""
        self.good_image = ""
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._quietly, args=(self._deployments,), daemon=True),
            threading.Thread(target=self._quietly, args=(self._pods,), daemon=True),
        ]

    def start(self, bad_image: str, good_image: str) -> None:
        self.bad_image, self.good_image = bad_image, good_image
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()

    def _quietly(self, watch: Callable[[], None]) -> None:
        """A watch ends with the cluster (or its timeout): that is not news."""
        with contextlib.suppress(urllib3.exceptions.HTTPError, kubernetes.client.ApiException):
            watch()

    def _deployments(self) -> None:
        apps = kubernetes.client.AppsV1Api(self.api)
        w = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
        for ev in w.stream(  # type: ignore[no-untyped-call]
            apps.list_namespaced_deployment,
            self.ns,
            field_selector=f"metadata.name={self.name}",
            timeout_seconds=600,
        ):
            now = time.time()
            d = ev["object"]
            image = next(c.image for c in d.spec.template.spec.containers if c.name == "app")
            for c in (d.status.conditions or []) if d.status else []:
                if c.type == "Progressing" and c.reason == "ProgressDeadlineExceeded":
                    self.deadline_at = self.deadline_at or now
            if image == self.good_image and self.back_at is None and self._seen_bad:
                self.back_at = now
            if image == self.bad_image:
                self._seen_bad = True
            if self._stop.is_set():
                w.stop()  # type: ignore[no-untyped-call]

    _seen_bad = False

    def _pods(self) -> None:
        core = kubernetes.client.CoreV1Api(self.api)
        w = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
        stream = w.stream(  # type: ignore[no-untyped-call]
            core.list_namespaced_pod, self.ns, timeout_seconds=600
        )
        for ev in stream:
            now = time.time()
            pod = ev["object"]
            for c, s in zip(pod.spec.containers, pod.status.container_statuses or [], strict=False):
                waiting = s.state.waiting if s.state else None
                if c.image == self.bad_image and waiting and waiting.reason == "CrashLoopBackOff":
                    self.crashloop_at = self.crashloop_at or now
            if self._stop.is_set():
                w.stop()  # type: ignore[no-untyped-call]


def latency(runs: int, workdir: Path) -> dict[str, Any]:
    """Failure visible on the API server -> image rolled back, in serve, on the local cluster."""
    out: dict[str, list[float]] = {"deadline": [], "crashloop": []}
    with LocalCluster(work_dir=workdir / "cluster") as cluster, GitHubStandIn(tokens=[TOKEN]) as gh:
        api = cluster.api_client()
        core = kubernetes.client.CoreV1Api(api)
        apps = kubernetes.client.AppsV1Api(api)
        ns = "latency"
        core.create_namespace(
            kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=ns))
        )
        good = random_sha()
        gh.add_repo("acme/blog", {"main": good})
        proc: ServeProcess
        body = deployment_body("blog", f"gcr.io/p/blog:{good}", sidecar=False)
        apps.create_namespaced_deployment(ns, body)  # type: ignore[arg-type]
        sites = workdir / "sites.toml"

        def write_sites(timeout: int) -> None:
            sites.write_text(
                f'[sites.blog]\nrepo = "acme/blog"\nnamespace = "{ns}"\ncontainer = "app"\n'
                f'image = "gcr.io/p/blog:{{sha}}"\nverify = "none"\nrollout_timeout = {timeout}\n'
            )

        write_sites(3600)
        env = serve_env(gh, cluster.kubeconfig_path, ns)
        with ServeProcess(sites, env, workdir / "serve-latency.log").start() as proc:
            proc.wait_for(lambda: proc.request("GET", "/status")[1]["last_sync"], what="start")
            for case in ("deadline", "crashloop"):
                for i in range(runs):
                    deadline = 2 if case == "deadline" else 600
                    apps.patch_namespaced_deployment(
                        "blog", ns, {"spec": {"progressDeadlineSeconds": deadline}}
                    )
                    write_sites(3600 if case == "deadline" else 1)
                    before = _image(apps, ns)
                    bad = gh.set_branch("acme/blog", "main", crashloop_sha())
                    watcher = Watcher(api, ns, "blog")
                    watcher.start(f"gcr.io/p/blog:{bad}", before)
                    status, answer = proc.request("POST", "/sync/blog", TRIGGER)
                    assert status == 200 and answer["results"][0]["applied"], answer
                    deployed_at = epoch(answer["results"][0]["changed_at"])
                    proc.wait_for(lambda w=watcher: w.back_at, timeout=300, what="rollback")
                    watcher.stop()
                    assert watcher.back_at is not None
                    if case == "deadline":
                        assert watcher.deadline_at is not None
                        visible = watcher.deadline_at
                    else:
                        assert watcher.crashloop_at is not None
                        # the rule: stuck pods, once updated-at + rollout_timeout has passed
                        visible = max(watcher.crashloop_at, deployed_at + 1)
                    out[case].append(watcher.back_at - visible)
                    log(f"latency {case} run {i + 1}: {out[case][-1]:.2f}s")
                    gh.set_branch("acme/blog", "main", random_sha())
                    proc.request("POST", "/sync/blog", TRIGGER)
                    proc.wait_for(
                        lambda: _available(apps, ns), timeout=300, what="the good rollout"
                    )
        api.close()  # type: ignore[no-untyped-call]
    return {
        case: {
            "runs": len(values),
            "median_s": round(statistics.median(values), 3),
            "max_s": round(max(values), 3),
            "values_s": [round(v, 3) for v in values],
        }
        for case, values in out.items()
    }


def _image(apps: Any, ns: str) -> str:
    d = apps.read_namespaced_deployment("blog", ns)
    return str(next(c.image for c in d.spec.template.spec.containers if c.name == "app"))


def _available(apps: Any, ns: str) -> bool:
    d = apps.read_namespaced_deployment("blog", ns)
    s = d.status
    return bool(
        s
        and (s.observed_generation or 0) >= d.metadata.generation
        and s.updated_replicas == d.spec.replicas
        and s.available_replicas == d.spec.replicas
        and (s.replicas or 0) == d.spec.replicas
    )


def cost(n: int, namespaces: int, window: float, workdir: Path) -> dict[str, Any]:
    """Requests serve sends while `n` rollouts progress, and once none does, by verb."""
    audit = workdir / "audit.log"
    with ControlPlane(audit_log=audit, work_dir=workdir / "plane") as cp:
        gh = GitHubStandIn(tokens=[TOKEN]).start()
        api = cp.api_client()
        core = kubernetes.client.CoreV1Api(api)
        names = [f"site-{i}" for i in range(namespaces)]
        for ns in [*names, SA_NS]:
            core.create_namespace(
                kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=ns))
            )
        token = serviceaccount_token(cp, SA_NS, SA, expiration_seconds=6 * 3600)
        kubernetes.client.RbacAuthorizationV1Api(api).create_cluster_role_binding(
            {  # type: ignore[arg-type]
                "metadata": {"name": "bench-reconciler"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "cluster-admin",
                },
                "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": SA_NS}],
            }
        )
        kubeconfig = kubeconfig_for_token(cp, token, workdir / "sa.kubeconfig")
        sites = [(names[i % namespaces], f"s{i:04d}") for i in range(n)]
        gh.add_repo("acme/site", {"main": random_sha()})
        log(f"cost: creating {n} Deployments")

        def create(site: tuple[str, str]) -> None:
            create_deployment(api, site[0], site[1], "gcr.io/p/site:old", sidecar=False)
            write_status(api, site[0], site[1], rollout="available")

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, sites))
        config = workdir / "sites-cost.toml"
        config.write_text(
            '[defaults]\nimage = "gcr.io/p/{repo}:{sha}"\nverify = "none"\n\n'
            + "".join(
                f'[sites.{name}]\nrepo = "acme/site"\nnamespace = "{ns}"\n\n' for ns, name in sites
            )
        )
        user = f"system:serviceaccount:{SA_NS}:{SA}"
        env = serve_env(gh, kubeconfig, SA_NS)
        with ServeProcess(config, env, workdir / "serve-cost.log").start(timeout=120) as proc:
            proc.wait_for(
                lambda: proc.request("GET", "/status")[1]["last_sync"], timeout=600, what="start"
            )
            t0 = time.time()
            log(f"cost: {n} rollouts progressing; counting for {window:.0f}s")
            time.sleep(window)  # a measurement window, not synchronisation
            t1 = time.time()
            log("cost: ending every rollout")
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda s: write_status(api, s[0], s[1]), sites))
            proc.wait_for(
                lambda: all(
                    s.get("rollout") != "progressing"
                    for s in proc.request("GET", "/status")[1]["sites"]
                ),
                timeout=600,
                what="every rollout seen over",
            )
            t2 = time.time()
            log(f"cost: idle; counting for {window:.0f}s")
            time.sleep(window)
            t3 = time.time()
        gh.stop()
        api.close()  # type: ignore[no-untyped-call]
    busy = _verbs(audit, user, t0, t1)
    idle = _verbs(audit, user, t2, t3)
    return {
        "sites": n,
        "namespaces": namespaces,
        "window_s": window,
        "progressing": {"requests": dict(busy), "per_hour": _per_hour(busy, t1 - t0)},
        "idle": {"requests": dict(idle), "per_hour": _per_hour(idle, t3 - t2)},
    }


def _verbs(audit: Path, user: str, start: float, end: float) -> Counter[str]:
    """Requests by verb and resource received from `user` between `start` and `end`."""
    seen: dict[str, str] = {}
    for event in audit_events(audit):
        if (event.get("user") or {}).get("username") != user or "objectRef" not in event:
            continue
        received = event.get("requestReceivedTimestamp", "")
        at = datetime.fromisoformat(received.replace("Z", "+00:00")).astimezone(UTC).timestamp()
        if start <= at < end:
            ref = event["objectRef"]
            seen[event["auditID"]] = f"{event['verb']} {ref.get('resource')}"
    return Counter(seen.values())


def _per_hour(counts: Counter[str], seconds: float) -> dict[str, int]:
    return {k: round(v * 3600 / seconds) for k, v in sorted(counts.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "rollout.json")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-cost", action="store_true")
    args = parser.parse_args()
    result: dict[str, Any] = {"measured_at": datetime.now(UTC).isoformat(timespec="seconds")}
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as tmp:
        if not args.skip_latency:
            result["rollback_latency"] = latency(args.runs, Path(tmp) / "latency")
        if not args.skip_cost:
            result["following_cost"] = cost(
                args.sites, args.namespaces, args.window, Path(tmp) / "cost"
            )
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
