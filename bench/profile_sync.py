"""One sync in this process under cProfile: where a steady or cold sync at N sites spends its time.

    .venv/bin/python -m bench.profile_sync [--sites 1000] [--namespaces 10]
        [--scenario cold|steady] [--latency-ms 200] [--lookback 20] [--top 25] [--no-events]
        [--cache]

Sets up the benchmark's world (real kube-apiserver + etcd, GitHub stand-in, N Deployments; see
bench/setup.py), builds the engine as `reconciler serve` does (reconciler.wiring, the serve
identity's kubeconfig and token), runs one sync to warm it, makes the scenario's state, then
profiles one sync (with --cache: reading the watch-fed cache, as serve does) and prints its
time, CPU seconds, the engine's phase timings and the top functions by cumulative time. The
stand-in runs in this process too: its CPU shows in the profile under testkit.github (threads
other than the sync's are not profiled, so only their waits show).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import resource
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from bench.procs import children, comm, cpu_seconds
from bench.setup import TOKENS, Options, World, log
from reconciler.adapters.kube import KubeCluster, api_client
from reconciler.adapters.kubecache import CachedCluster, deployment_cache
from reconciler.core.model import SyncRequest
from reconciler.settings import Settings
from reconciler.sync import config_file
from reconciler.wiring import Parts, build_engine
from testkit.controlplane import ControlPlane
from testkit.github import GitHubStandIn


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_sync", description=__doc__)
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--scenario", choices=("cold", "steady"), default="cold")
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--cache", action="store_true", help="read the watch-fed cache (serve)")
    parser.add_argument("--lookback", type=int)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--no-events", action="store_true", help="write no Events (what they cost a cold sync)"
    )
    args = parser.parse_args(argv)
    opts = Options(
        sizes=(args.sites,),
        latency_ms=args.latency_ms,
        namespaces=args.namespaces,
        lookback=args.lookback,
        setup_concurrency=32,
        out=None,
    )
    workdir = Path(tempfile.mkdtemp(prefix="reconciler-profile-"))
    with (
        ControlPlane() as cp,
        GitHubStandIn(
            latency_median_ms=opts.latency_ms,
            latency_sigma=opts.latency_sigma,
            max_concurrent=100,
            tokens=TOKENS.values(),
        ) as gh,
    ):
        world = World(cp, gh, workdir, opts)
        world.setup_cluster()
        world.grow_to(args.sites)
        cfg = config_file.load(world.write_config(args.sites))
        env = world.env("serve")
        settings = Settings.from_env(env)
        cache = None
        if args.cache:
            api = api_client(env["KUBECONFIG"])
            cache = deployment_cache(api, {site.namespace for site in cfg.sites})
            cache.start()
            assert cache.wait_until(lambda: cache.synced, 300), "the cache did not list in time"
            listing = KubeCluster(api, writes=settings.apply_concurrency)
            parts = Parts(cluster=CachedCluster(cache, listing))
        else:
            parts = Parts(kubeconfig=env["KUBECONFIG"])
        engine = build_engine(parts, settings)
        if args.no_events:
            cluster = engine.cluster
            target = cluster.cluster if isinstance(cluster, CachedCluster) else cluster
            assert isinstance(target, KubeCluster)
            target.events = False
        servers = {
            name: pid
            for pid in children(os.getpid())
            if (name := comm(pid)) in ("kube-apiserver", "etcd")
        }
        engine.run(cfg, SyncRequest(trigger="warm-up"))
        if args.scenario == "cold":
            world.make_stale(world.sites)
        if cache is not None:  # the cache has heard the writes so far (warm-up's, stale ones)
            heard = -1
            while heard != cache.stats.events:
                heard = cache.stats.events
                cache.wait_for_change(cache.version, 1.0)
        profiler = cProfile.Profile()
        cpu, started = _cpu(), time.monotonic()
        server_cpu = {name: cpu_seconds(pid) or 0.0 for name, pid in servers.items()}
        profiler.enable()
        report = engine.run(cfg, SyncRequest(trigger="profile"))
        profiler.disable()
        wall, cpu = time.monotonic() - started, _cpu() - cpu
        used = {n: (cpu_seconds(pid) or 0.0) - server_cpu[n] for n, pid in servers.items()}
        log(
            f"{args.scenario} N={args.sites}: {report.summary()} in {wall:.2f}s, "
            f"{cpu:.2f} CPU s (this process, stand-in included), "
            + ", ".join(f"{n} {v:.2f} CPU s" for n, v in used.items())
            + "; phases "
            + ", ".join(f"{k} {v:.2f}s" for k, v in report.timings.items())
        )
        errors = Counter(r.plan.reason for r in report.results if not r.plan.ok)
        for reason, n in errors.most_common(3):
            log(f"{n} errors: {reason}")
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(args.top)
        print(out.getvalue())
        if cache is not None:
            cache.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
