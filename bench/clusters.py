"""What a sync costs per extra cluster (#20): the same sites spread over 1, 2, 3 clusters.

Each cluster is a real control plane (etcd + kube-apiserver, audit log on); GitHub is the
stand-in. The sites (N, default 60, over 3 namespaces per cluster) are split evenly across the
clusters; the first holds the reconciler's home, the others are [clusters.NAME] of sites.toml,
reached through their own kubeconfig files. For each layout it measures, through the real engine
(wiring.build_engine, as the CLI builds it):

- cold: every site behind, one sync that patches them all (first use of the named clusters
  included: their clients are built then);
- steady: nothing to do, the median of `--repeats` syncs;

and prints per layout the wall time, GitHub requests and API-server requests per cluster
(reads, writes; from each audit log).

    .venv/bin/python -m bench.clusters [--sites 60] [--clusters 3] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import kubernetes

from reconciler.core.config.sites import parse
from reconciler.core.model import ClusterRef, SyncReport, SyncRequest
from reconciler.settings import Settings
from reconciler.wiring import Parts, build_engine, kube_connect
from testkit.controlplane import ControlPlane, audit_events, find_binaries
from testkit.deployments import create_deployment
from testkit.github import GitHubStandIn, random_sha

TOKEN = "bench-token"
NAMESPACES = 3
READS = {"get", "list", "watch"}


def counts(log: Path, since: int) -> tuple[int, int, int]:
    """(reads, writes, events now in the log) of admin requests after the first `since`."""
    events = audit_events(log)
    seen: dict[str, str] = {}
    for e in events[since:]:
        user = (e.get("user") or {}).get("username", "")
        if user.startswith("system:") or "objectRef" not in e:
            continue
        seen[e["auditID"]] = e["verb"]
    reads = sum(1 for v in seen.values() if v in READS)
    return reads, len(seen) - reads, len(events)


def setup(planes: list[ControlPlane], gh: GitHubStandIn, n: int, work: Path) -> Path:
    """n sites over the clusters, each behind; the sites.toml naming them."""
    per = n // len(planes)
    lines = ['[defaults]\nimage = "gcr.io/p/{repo}:{sha}"\nverify = "none"\ncontainer = "app"\n\n']
    for c, plane in enumerate(planes):
        name = f"c{c}"
        if c:
            lines.append(f'[clusters.{name}]\nkubeconfig = "{plane.kubeconfig_path}"\n\n')
        with plane.api_client() as api:
            core = kubernetes.client.CoreV1Api(api)
            for k in range(NAMESPACES):
                core.create_namespace(
                    kubernetes.client.V1Namespace(
                        metadata=kubernetes.client.V1ObjectMeta(name=f"ns{k}")
                    )
                )
            for i in range(per):
                site = f"{name}-site{i}"
                gh.add_repo(f"acme/{site}", {"main": random_sha()})
                create_deployment(api, f"ns{i % NAMESPACES}", site, f"gcr.io/p/{site}:old")
                cluster = f'cluster = "{name}"\n' if c else ""
                lines.append(
                    f'[sites.{site}]\nrepo = "acme/{site}"\nnamespace = "ns{i % NAMESPACES}"\n'
                    + cluster
                    + "\n"
                )
    path = work / "sites.toml"
    path.write_text("".join(lines))
    return path


def sync(engine: object, config_path: Path) -> tuple[float, SyncReport]:
    cfg = parse(config_path.read_text(), str(config_path))
    t0 = time.perf_counter()
    report = engine.run(cfg, SyncRequest(trigger="bench"))  # type: ignore[attr-defined]
    return time.perf_counter() - t0, report


def layout(k: int, n: int, repeats: int, work: Path) -> dict[str, object]:
    """One layout: n sites over k clusters; cold and steady figures."""
    with ExitStack() as stack:
        planes = [
            stack.enter_context(
                ControlPlane(bin_dir=find_binaries(), audit_log=work / f"k{k}-c{c}-audit.log")
            )
            for c in range(k)
        ]
        gh = stack.enter_context(GitHubStandIn(tokens=[TOKEN]))
        config_path = setup(planes, gh, n, work / f"k{k}")
        env = {
            "GITHUB_API_URL": gh.url,
            "GITHUB_TOKEN": TOKEN,
            "KUBECONFIG": str(planes[0].kubeconfig_path),
            "PATH": os.environ.get("PATH", ""),
        }
        engine = build_engine(Parts(), Settings.from_env(env))
        marks = [counts(p.audit_log, 0)[2] for p in planes if p.audit_log]
        gh.reset_stats()
        cold_s, report = sync(engine, config_path)
        assert report.updated == n, [r.plan.reason for r in report.results][:3]
        cold_gh = gh.stats()["requests"]
        cold = [counts(p.audit_log, m) for p, m in zip(planes, marks, strict=True) if p.audit_log]
        steady_times, steady_gh = [], []
        marks = [c[2] for c in cold]
        for _ in range(repeats):
            gh.reset_stats()
            seconds, report = sync(engine, config_path)
            assert report.updated == 0, report.summary()
            steady_times.append(seconds)
            steady_gh.append(gh.stats()["requests"])
        steady = [counts(p.audit_log, m) for p, m in zip(planes, marks, strict=True) if p.audit_log]
        connect_ms = []  # what the first use of a named cluster adds: its client, from its file
        for _ in range(repeats):
            t0 = time.perf_counter()
            kube_connect(Settings.from_env(env))(ClusterRef("x", str(planes[0].kubeconfig_path)))
            connect_ms.append((time.perf_counter() - t0) * 1000)
        return {
            "clusters": k,
            "cold_s": cold_s,
            "cold_github": cold_gh,
            "cold_kube": [(r, w) for r, w, _ in cold],
            "steady_s": statistics.median(steady_times),
            "steady_github": statistics.median(steady_gh),
            "steady_kube": [(r // repeats, w // repeats) for r, w, _ in steady],
            "connect_ms": statistics.median(connect_ms),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=60)
    parser.add_argument("--clusters", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"{args.sites} sites, {NAMESPACES} namespaces per cluster, load {os.getloadavg()}")
    print(
        "clusters  cold s  cold GH  cold kube (reads/writes per cluster)"
        "   steady s  steady GH  steady kube  connect ms"
    )
    with tempfile.TemporaryDirectory(prefix="bench-clusters-") as tmp:
        for k in range(1, args.clusters + 1):
            work = Path(tmp)
            (work / f"k{k}").mkdir()
            row = layout(k, args.sites - args.sites % k, args.repeats, work)
            cold = " ".join(f"{r}/{w}" for r, w in row["cold_kube"])  # type: ignore[attr-defined]
            steady = " ".join(f"{r}/{w}" for r, w in row["steady_kube"])  # type: ignore[attr-defined]
            print(
                f"{k:8}  {row['cold_s']:6.2f}  {row['cold_github']:7}  {cold:38}"
                f"  {row['steady_s']:8.3f}  {row['steady_github']:9}  {steady:11}"
                f"  {row['connect_ms']:10.1f}"
            )
    print(f"load after {os.getloadavg()}")


if __name__ == "__main__":
    main()
