"""What the watch-fed cache (reconciler/adapters/kubecache.py) costs, on a real control plane.

    .venv/bin/python -m bench.watch_cache [--sizes 1000,10000] [--namespaces 10]
        [--idle-seconds 200] [--idle-watch 65] [--changes 20]

Prints:
- API requests per hour with nothing changing: the cache watches every namespace with a short
  server-side timeout (--idle-watch seconds) for --idle-seconds, counts the requests it sent
  (LIST pages and WATCHes) and the bookmarks it heard, and scales the rate to the default
  timeoutSeconds (300-600 s, 450 s on average): per namespace, then for 100 namespaces.
- Memory per cached Deployment at each size: what the cache's objects hold (tracemalloc: the
  bytes still allocated after the LIST, over N), next to what the same Deployments hold as the
  parsed JSON of a LIST (what a cache of whole objects would keep).
- The time from a change to the cache seeing it: --changes image patches, each timed from
  sending the PATCH to the cache's condition firing with the new image (median, max).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import tracemalloc
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kubernetes

from bench.setup import log
from reconciler.adapters.kube import request
from reconciler.adapters.kubecache import deployment_cache
from testkit.controlplane import ControlPlane
from testkit.deployments import create_from_body, deployment_body

DEFAULT_WATCH_MEAN = 450.0  # the cache's default timeoutSeconds are drawn from 300-600


def _ns(name: str) -> kubernetes.client.V1Namespace:
    return kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=name))


def _namespaces(api: Any, count: int) -> list[str]:
    names = [f"watch-{i:03d}" for i in range(count)]
    core = kubernetes.client.CoreV1Api(api)
    for name in names:
        core.create_namespace(_ns(name))
    return names


def _grow(api: Any, namespaces: Sequence[str], start: int, stop: int) -> None:
    def create(i: int) -> None:
        body = deployment_body(f"site-{i:06d}", f"registry.bench.local/org/site-{i}:{i:040x}")
        create_from_body(api, namespaces[i % len(namespaces)], body)

    with ThreadPoolExecutor(16, thread_name_prefix="grow") as pool:
        list(pool.map(create, range(start, stop)))


def idle_requests(
    api: Any, namespaces: Sequence[str], seconds: float, watch: int
) -> dict[str, Any]:
    cache = deployment_cache(api, namespaces, watch_seconds=(watch, watch))
    with cache:
        if not cache.wait_until(lambda: cache.synced, 300):
            raise SystemExit("the cache did not sync")
        lists, watches = cache.stats.lists, cache.stats.watches
        t0 = time.monotonic()
        cache.wait_for_change(cache.version, seconds)  # nothing changes: this waits it out
        elapsed = time.monotonic() - t0
        requests = cache.stats.lists - lists + cache.stats.watches - watches
        bookmarks, relists = cache.stats.bookmarks, cache.stats.relists
        reconnects = cache.stats.reconnects
    per_ns_hour = requests / len(namespaces) * 3600 / elapsed
    scaled = per_ns_hour * watch / DEFAULT_WATCH_MEAN
    return {
        "namespaces": len(namespaces),
        "seconds": round(elapsed, 1),
        "watch_timeout_seconds": watch,
        "requests": requests,
        "bookmarks": bookmarks,
        "bookmarks_per_namespace_hour": round(bookmarks / len(namespaces) * 3600 / elapsed, 1),
        "relists": relists,
        "reconnects": reconnects,
        "per_namespace_hour_at_this_timeout": round(per_ns_hour, 1),
        "per_namespace_hour_at_default_timeout": round(scaled, 1),
        "per_hour_100_namespaces_at_default_timeout": round(scaled * 100),
    }


def memory(api: Any, namespaces: Sequence[str], n: int) -> dict[str, Any]:
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    cache = deployment_cache(api, namespaces)
    with cache:
        if not cache.wait_until(lambda: cache.synced, 900):
            raise SystemExit("the cache did not sync")
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
        views = cache.observe(namespaces)
    tracemalloc.stop()
    cached = sum(len(v) for v in views.values() if isinstance(v, dict))
    raw = _raw_bytes(api, namespaces[0])
    return {
        "deployments": n,
        "cached": cached,
        "bytes_per_deployment": round(held / max(cached, 1)),
        "raw_json_bytes_per_deployment": raw,
    }


def _raw_bytes(api: Any, namespace: str) -> int:
    """Bytes one Deployment holds as parsed JSON (a LIST's item), from 50 of them."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    page = request(
        api,
        "GET",
        f"/apis/apps/v1/namespaces/{namespace}/deployments",
        action="list",
        query={"limit": 50},
    )
    items = page["items"]
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return round(held / max(len(items), 1))


def latency(api: Any, namespace: str, changes: int) -> dict[str, Any]:
    apps = kubernetes.client.AppsV1Api(api)
    name = "latency"
    create_from_body(api, namespace, deployment_body(name, "img/latency:0"))
    seconds = []
    cache = deployment_cache(api, [namespace])
    with cache:
        cache.wait_until(lambda: cache.synced, 300)
        for i in range(1, changes + 1):
            image = f"img/latency:{i}"

            def seen(image: str = image) -> bool:
                d = cache.get(namespace, name)
                return d is not None and d.containers[0].image == image

            t0 = time.perf_counter()
            body = {
                "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}
            }
            apps.patch_namespaced_deployment(name, namespace, body)
            if not cache.wait_until(seen, 30):
                raise SystemExit(f"the cache did not see change {i}")
            seconds.append(time.perf_counter() - t0)
    return {
        "changes": changes,
        "median_ms": round(statistics.median(seconds) * 1000, 1),
        "max_ms": round(max(seconds) * 1000, 1),
    }


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="1000,10000")
    p.add_argument("--namespaces", type=int, default=10)
    p.add_argument("--idle-seconds", type=float, default=200.0)
    p.add_argument("--idle-watch", type=int, default=65)
    p.add_argument("--changes", type=int, default=20)
    a = p.parse_args(argv)
    sizes = sorted(int(s) for s in a.sizes.split(",") if s)
    out: dict[str, Any] = {"memory": []}
    with ControlPlane() as plane, plane.api_client() as api:
        namespaces = _namespaces(api, a.namespaces)
        log(f"idle: {a.namespaces} namespaces for {a.idle_seconds:.0f}s")
        out["idle"] = idle_requests(api, namespaces, a.idle_seconds, a.idle_watch)
        out["latency"] = latency(api, namespaces[0], a.changes)
        have = 0
        for n in sizes:
            log(f"creating Deployments up to {n}")
            _grow(api, namespaces, have, n)
            have = n
            out["memory"].append(memory(api, namespaces, n))
            log(json.dumps(out["memory"][-1]))
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
