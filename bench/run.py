"""What a sync costs at N sites, warm (serve) and cold (CLI), against the straightforward loop.

    .venv/bin/python -m bench.run [--sizes 30,300,1000] [--latency-ms 200]
                                  [--out bench/results/latest.json]

Starts a real kube-apiserver + etcd (with an audit log) and the GitHub stand-in (log-normal
latency), creates N Deployments across 10 namespaces and one repository per site, then for
each N measures three scenarios (cold: every site behind; steady: nothing changed; moved: 10%
of the branches moved) three ways: a warm `reconciler serve` (POST /sync), a whole
`reconciler sync` CLI run, and the baseline loop (bench/baseline.py). Prints a table and
writes JSON. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.measure import Measurement, Meter, summary
from bench.procs import ServeProcess
from bench.render import HEADER, TARGET_HEADER, render_markdown, table_rows, target_rows, text_table
from bench.report import build_report, machine_info, tree_state, write_report
from bench.setup import MODES, REPO_ROOT, SCENARIOS, TOKENS, TRIGGER_TOKEN, Options, World, log
from bench.stats import combine
from testkit.controlplane import ControlPlane
from testkit.github import GitHubStandIn

__all__ = ["Options", "main", "run_benchmark"]


def run_size(world: World, meter: Meter, n: int) -> list[Measurement]:
    """Every scenario and mode at N sites (grown first), each the combination of its repeats."""
    world.grow_to(n)
    config = world.write_config(n)
    sites = world.sites[:n]
    sample = world.baseline_sample(n)
    moved = world.rng.sample(sites, world.moved_count(n))
    moved_sample = (
        moved if len(sample) == n else world.rng.sample(sample, world.moved_count(len(sample)))
    )
    out: list[Measurement] = []
    serve = ServeProcess(
        config, world.env("serve"), world.workdir / f"serve-{n}.log", TRIGGER_TOKEN
    )
    started = time.monotonic()
    serve.start()
    log(f"N={n}: reconciler serve up, startup sync done ({time.monotonic() - started:.1f}s)")
    try:
        if not serve.wait_ready():
            raise RuntimeError("reconciler serve is not ready:\n" + serve.log_tail())
        for scenario in world.opts.scenarios:
            for mode in world.opts.modes:
                repeats = 1 if mode == "baseline" else max(1, world.opts.repeats)
                runs: list[Measurement] = []
                for _ in range(repeats):
                    # the cache has heard every write so far (the last sync's own patches)
                    heard = serve.settle_cache() if mode == "serve" else None
                    if scenario == "cold":
                        world.make_stale(sample if mode == "baseline" else sites)
                        expected = len(sample) if mode == "baseline" else n
                    elif scenario == "moved":
                        chosen = moved_sample if mode == "baseline" else moved
                        world.move(chosen)
                        expected = len(chosen)
                    else:
                        expected = 0
                    if mode == "serve":
                        written = n if scenario == "cold" else 0  # the stale images just set
                        if heard is not None:
                            serve.settle_cache(at_least=heard + written)
                        m = meter.measure_serve(serve, n, scenario, expected)
                    elif mode == "cli":
                        m = meter.measure_cli(config, n, scenario, expected)
                    else:
                        m = meter.measure_baseline(sample, n, scenario, expected)
                    runs.append(m)
                m = combine(runs)
                log(f"N={n} {scenario:6} {mode:8} {summary(m)}")
                out.append(m)
    finally:
        serve.stop()
    return out


def run_benchmark(opts: Options) -> dict[str, Any]:
    """The whole benchmark; returns (and writes to opts.out) the JSON report.

    The JSON is also written after each N (``"complete": false``), so a failure late in a long
    run keeps what was measured.
    """
    own_workdir = opts.workdir is None
    workdir = opts.workdir or Path(tempfile.mkdtemp(prefix="reconciler-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    log(f"work dir {workdir}")
    started = time.monotonic()
    machine, tree = machine_info(), tree_state()
    results: list[Measurement] = []
    with (
        ControlPlane(audit_log=workdir / "audit.log") as cp,
        GitHubStandIn(
            latency_median_ms=opts.latency_ms,
            latency_sigma=opts.latency_sigma,
            max_concurrent=100,
            validate=opts.validate,
            memo_answers=opts.memo_answers,
            tokens=TOKENS.values(),
            preload_schemas=True,
        ) as gh,
    ):
        log(f"control plane up in {cp.startup_seconds:.1f}s at {cp.host}; GitHub stand-in {gh.url}")

        def standin() -> dict[str, Any]:
            return {
                "schema_violations": gh.schema_violations[:20],
                "internal_errors": gh.internal_errors[:20],
            }

        world = World(cp, gh, workdir, opts)
        world.setup_cluster()
        meter = Meter(world)
        for n in sorted(opts.sizes):
            results += run_size(world, meter, n)
            if opts.out is not None:
                partial = build_report(
                    opts,
                    results,
                    started=started,
                    machine=machine,
                    tree=tree,
                    standin=standin(),
                    complete=False,
                )
                write_report(opts.out, partial)
        final_standin = standin()
    if own_workdir:  # kept for a look when the run failed (the exception skips this)
        shutil.rmtree(workdir, ignore_errors=True)
    report = build_report(
        opts,
        results,
        started=started,
        machine=machine,
        tree=tree,
        standin=final_standin,
        complete=True,
    )
    if opts.out is not None:
        write_report(opts.out, report)
    if opts.print_table:
        print(text_table(HEADER, table_rows(results)))
        if report["targets"]:
            print()
            print(text_table(TARGET_HEADER, target_rows(report["targets"])))
        print(f"\n{len(results)} measurements in {report['total_s']:.0f}s; JSON: {opts.out}")
    return report


def _parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--sizes", default="30,300,1000", help="comma-separated N (30,300,1000)")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="median GitHub latency")
    parser.add_argument("--latency-sigma", type=float, default=0.5, help="log-normal sigma")
    parser.add_argument(
        "--baseline-sample",
        type=int,
        default=100,
        help="sites the baseline runs on when N > --baseline-full-up-to (then extrapolated)",
    )
    parser.add_argument("--baseline-full-up-to", type=int, default=300)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench/results/latest.json")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="runs of each serve and CLI measurement (median reported; the baseline runs once)",
    )
    parser.add_argument("--validate", action="store_true", help="stand-in schema validation")
    parser.add_argument(
        "--memo-answers",
        action="store_true",
        help="the stand-in answers a GraphQL query it answered before, while nothing changed, "
        "from memory (its own CPU then weighs less on the shared cores; say so with the figures)",
    )
    parser.add_argument("--workdir", type=Path, help="keep kubeconfigs, logs, audit log here")
    parser.add_argument("--namespaces", type=int, default=10, help="sites spread over this many")
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help="a subset of cold,steady,moved"
    )
    parser.add_argument("--modes", default=",".join(MODES), help="a subset of serve,cli,baseline")
    parser.add_argument(
        "--lookback", type=int, help="RECONCILER_LOOKBACK for serve and the CLI (default: theirs)"
    )
    parser.add_argument(
        "--setup-concurrency",
        type=int,
        default=16,
        help="admin requests at once creating Deployments",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment for serve and the CLI, e.g. RECONCILER_WATCH_CACHE=off (repeatable)",
    )
    args = parser.parse_args(argv)
    return Options(
        serve_env=tuple((k, v) for k, _, v in (e.partition("=") for e in args.env)),
        sizes=tuple(int(s) for s in args.sizes.split(",") if s.strip()),
        latency_ms=args.latency_ms,
        latency_sigma=args.latency_sigma,
        baseline_sample=args.baseline_sample,
        baseline_full_up_to=args.baseline_full_up_to,
        out=args.out,
        seed=args.seed,
        repeats=args.repeats,
        validate=args.validate,
        memo_answers=args.memo_answers,
        workdir=args.workdir,
        namespaces=args.namespaces,
        scenarios=_subset(args.scenarios, SCENARIOS, "--scenarios"),
        modes=_subset(args.modes, MODES, "--modes"),
        lookback=args.lookback,
        setup_concurrency=args.setup_concurrency,
    )


def _subset(text: str, allowed: tuple[str, ...], flag: str) -> tuple[str, ...]:
    """The named members of `allowed`, in its order; exits on an unknown name."""
    names = {s.strip() for s in text.split(",") if s.strip()}
    unknown = names - set(allowed)
    if unknown or not names:
        raise SystemExit(f"{flag}: choose from {','.join(allowed)}, not {text!r}")
    return tuple(a for a in allowed if a in names)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if len(argv) == 2 and argv[0] == "--render":
        print(render_markdown(json.loads(Path(argv[1]).read_text())), end="")
        return 0
    run_benchmark(_parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
