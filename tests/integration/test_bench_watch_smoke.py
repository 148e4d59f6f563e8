"""bench/watch_cache.py in small, on the session's API server: its three measurements run and
keep the invariants that do not depend on the machine (never timings)."""

from __future__ import annotations

from typing import Any

from bench.watch_cache import _grow, idle_requests, latency, memory


def test_the_watch_cache_benchmark_measures_in_small(
    kube_api_client: Any, k8s_namespace: str
) -> None:
    ns = [k8s_namespace]
    idle = idle_requests(kube_api_client, ns, seconds=3, watch=1)
    assert idle["requests"] >= 1 and idle["relists"] == 0
    changed = latency(kube_api_client, k8s_namespace, 3)
    assert changed["changes"] == 3 and changed["max_ms"] >= changed["median_ms"] > 0
    _grow(kube_api_client, ns, 0, 20)
    held = memory(kube_api_client, ns, 20)
    assert held["cached"] == 21  # with the latency Deployment
    assert 0 < held["bytes_per_deployment"] < held["raw_json_bytes_per_deployment"]
