"""The `reconciler` command: validate, plan, sync, hold, resume, rollback, approve, sites,
serve."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TextIO

from reconciler.core.config import sites as config_mod
from reconciler.core.errors import ConfigError, ReconcilerError
from reconciler.settings import Settings
from reconciler.version import version_line

if TYPE_CHECKING:  # the clients are imported only by the commands that use them
    from reconciler.core.model import Site, SiteResult, SyncReport
    from reconciler.sync.behind import Behind
    from reconciler.sync.engine import Engine
    from reconciler.wiring import Parts

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
NOTIFY_WAIT = 30.0  # seconds a CLI sync waits for its notifications (retries included)
DEFAULT_WAIT = 900.0


class _Version(argparse.Action):
    """--version: the version and the commit it was built from (git is asked only then)."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        print(version_line(), file=sys.stdout)
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        help="sites.toml to use (default: $RECONCILER_CONFIG, else ./sites.toml)",
    )
    selecting = argparse.ArgumentParser(add_help=False)
    selecting.add_argument(
        "--site", action="append", metavar="NAME", help="only this site (repeatable)"
    )
    selecting.add_argument("--output", "-o", choices=("text", "json"), default="text")
    selecting.add_argument("--context", help="kubeconfig context (default: the current one)")

    parser = argparse.ArgumentParser(
        prog="reconciler",
        description="Keep every site's Deployment on the image built from its GitHub branch head.",
    )
    parser.add_argument("--version", action=_Version, help="print the version and commit, exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("validate", parents=[common], help="check sites.toml and exit")
    sub.add_parser("schema", help="print the JSON Schema of sites.toml (for editors)")
    sub.add_parser(
        "plan", parents=[common, selecting], help="show what a sync would do (reads only)"
    )
    sync = sub.add_parser("sync", parents=[common, selecting], help="update what is behind")
    sync.add_argument(
        "--dry-run",
        action="store_true",
        help="send every patch with dryRun=All: the API server validates, nothing changes",
    )
    sync.add_argument(
        "--wait",
        action="store_true",
        help="wait for the rollouts this sync started, roll back failed ones; exit 1 if any failed",
    )
    sync.add_argument(
        "--wait-timeout",
        type=float,
        default=DEFAULT_WAIT,
        metavar="SECONDS",
        help=f"how long --wait waits for rollouts (default {DEFAULT_WAIT:.0f})",
    )
    _override_args(sync)
    one = argparse.ArgumentParser(add_help=False)
    one.add_argument("site", metavar="SITE")
    one.add_argument("--context", help="kubeconfig context (default: the current one)")
    one.add_argument("--output", "-o", choices=("text", "json"), default="text")
    hold = sub.add_parser("hold", parents=[common, one], help="leave a site alone until `resume`")
    hold.add_argument("--reason", default="", help="shown on the status page and in the Event")
    sub.add_parser(
        "resume",
        parents=[common, one],
        help="lift a hold (explicit or by a person's change), then sync the site",
    )
    back = sub.add_parser(
        "rollback",
        parents=[common, one],
        help="deploy the previous commit's image (or --to SHA's) and hold the site there",
    )
    back.add_argument("--to", metavar="SHA", help="the commit whose image to deploy")
    approve = sub.add_parser(
        "approve",
        parents=[common, one],
        help='approve the commit a site with approval = "manual" waits for, then sync it',
    )
    approve.add_argument("--sha", metavar="SHA", help="the commit to approve (default: waiting)")
    sub.add_parser(
        "history",
        parents=[common, one],
        help="the site's last deploys (from its ReplicaSets): when, which commit, by whom",
    )
    serve = sub.add_parser("serve", parents=[common], help="run the long-lived service")
    serve.add_argument("--port", type=int, help="HTTP port (default: $PORT, else 8080)")
    serve.add_argument("--bind", default=None, help="address to bind (default 0.0.0.0)")
    _sites_parser(sub, common)
    return parser


def _override_args(sync: argparse.ArgumentParser) -> None:
    sync.add_argument(
        "--override-window",
        action="store_true",
        help="deploy through a closed deploy window (needs one --site and --reason); recorded",
    )
    sync.add_argument("--reason", default="", help="why the override cannot wait (one line)")


def _sites_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """`sites list | add`."""
    sites = sub.add_parser("sites", help="list or add sites in sites.toml")
    sites_sub = sites.add_subparsers(dest="sites_command", required=True, metavar="ACTION")
    listing = sites_sub.add_parser("list", parents=[common], help="effective settings per site")
    listing.add_argument("--output", "-o", choices=("text", "json"), default="text")
    add = sites_sub.add_parser("add", parents=[common], help="append a validated site")
    add.add_argument("name")
    add.add_argument("--repo", required=True, help="owner/name on GitHub")
    for key in ("branch", "namespace", "deployment", "container", "image"):
        add.add_argument(f"--{key}")
    add.add_argument("--verify", choices=config_mod.VERIFY_MODES)


def config_path(args: argparse.Namespace, settings: Settings) -> str:
    return str(args.config or settings.config_path)


def main(
    argv: Sequence[str] | None = None,
    *,
    parts: Parts | None = None,
    env: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run one command; returns the exit code. Tests inject parts, env and streams here."""
    env = os.environ if env is None else env
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if exc.code in (0, None) else EXIT_USAGE
    if args.command != "serve":
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
            stream=err,
        )
    if args.command == "schema":
        from reconciler.core.config.schema import json_schema

        print(json.dumps(json_schema(), indent=2), file=out)
        return EXIT_OK
    try:
        settings = Settings.from_env(env)
        path = config_path(args, settings)
        if args.command == "serve":
            from reconciler.cli.serve import serve

            return serve(path, port=args.port, bind=args.bind, settings=settings)
        if args.command == "sites":
            return _sites(args, path, out)
        config = _load(path)
        if args.command == "validate":
            print(f"{path}: ok, {len(config.sites)} site(s)", file=out)
            return EXIT_OK
        if args.command == "history":
            return _history(args, config, parts=parts, settings=settings, out=out, err=err)
        if args.command in ("hold", "resume", "rollback", "approve"):
            return _command(args, config, parts=parts, settings=settings, out=out, err=err)
        return _plan_or_sync(args, config, parts=parts, settings=settings, out=out, err=err)
    except ConfigError as exc:
        print(str(exc), file=err)
        return EXIT_USAGE
    except ReconcilerError as exc:
        print(f"reconciler: {exc}", file=err)
        return EXIT_USAGE


def _plan_or_sync(
    args: argparse.Namespace,
    config: config_mod.Config,
    *,
    parts: Parts | None,
    settings: Settings,
    out: TextIO,
    err: TextIO,
) -> int:
    from reconciler.cli import output
    from reconciler.core.model import SyncRequest
    from reconciler.wiring import Parts, build_engine

    names = frozenset(args.site) if args.site else None
    if names is not None:
        unknown = sorted(names - set(config.names))
        if unknown:
            known = ", ".join(config.names)
            print(f"reconciler: unknown site(s) {', '.join(unknown)}; known: {known}", file=err)
            return EXIT_USAGE
    override = None
    if getattr(args, "override_window", False):
        override = " ".join(args.reason.split())
        if names is None or len(names) != 1 or not override:
            print('reconciler: --override-window needs one --site and --reason "why"', file=err)
            return EXIT_USAGE
    parts = parts or Parts()
    if args.context:
        parts.kube_context = args.context
    engine = build_engine(parts, settings)
    request = SyncRequest(
        sites=names,
        dry_run=bool(getattr(args, "dry_run", False)),
        plan_only=args.command == "plan",
        trigger="cli",
        override_window=override,
        by=f"{settings.user or 'someone'} (cli)",
    )
    report = engine.run(config, request)
    failed = False
    if getattr(args, "wait", False) and not request.dry_run:
        report, failed = _wait(engine, config, report, args.wait_timeout)
    behind = _behind(engine, report, settings) if request.plan_only else None
    if args.output == "json":
        print(output.report_json(report, behind), file=out)
    else:
        print(output.report_text(report, behind), file=out)
    wanted = any(s.channels for s in (config.notify.defaults, *config.notify.sites.values()))
    if wanted and not (request.plan_only or request.dry_run):
        _notify(engine, config, report, settings, err)
    return EXIT_OK if report.ok and not failed else EXIT_FAILED


def _behind(engine: Engine, report: SyncReport, settings: Settings) -> Mapping[str, Behind]:
    """For `plan`: how many commits each site is behind (one compare request per such site)."""
    from reconciler.core.ports import CommitLog
    from reconciler.sync import behind

    if not isinstance(engine.heads, CommitLog):
        return behind.wanted(report.results, settings.github.web_url)
    return behind.measure(report.results, engine.heads, settings.github.web_url)


def _notify(
    engine: Engine, config: config_mod.Config, report: SyncReport, settings: Settings, err: TextIO
) -> None:
    """After a CLI sync (already printed): send what changed, waiting a bounded time."""
    from reconciler.wiring import build_notifier

    notifier = build_notifier(engine, settings)
    notifier.observe(config, report)
    notifier.outbox.close(NOTIFY_WAIT)
    if notifier.outbox.undelivered:
        print(f"reconciler: {notifier.outbox.undelivered} notification(s) undelivered", file=err)


def _wait(
    engine: Engine, config: config_mod.Config, report: SyncReport, timeout: float
) -> tuple[SyncReport, bool]:
    """Follow the rollouts this sync started; True when one failed or did not finish."""
    from dataclasses import replace

    from reconciler.core.model import Action, Rollout

    started = [r.plan.site.name for r in report.results if r.applied]
    followed = engine.wait(config, started, timeout=timeout) if started else {}
    results = [_merged(r, followed.get(r.plan.site.name), timeout) for r in report.results]
    failed = any(
        r.action is Action.ROLLED_BACK
        or (
            r.plan.site.name in followed
            and r.plan.rollout in (Rollout.FAILED, Rollout.PROGRESSING)
            and not r.plan.waiting
        )
        for r in results
    )
    return replace(report, results=tuple(results)), failed


def _merged(r: SiteResult, w: SiteResult | None, timeout: float) -> SiteResult:
    """A sync's result for a site, updated with what waiting for its rollout saw."""
    from dataclasses import replace

    from reconciler.core import leadtime
    from reconciler.core.model import Rollout

    if w is None:
        return r
    if w.applied:
        return w  # rolled back while we waited
    plan = replace(r.plan, rollout=w.plan.rollout, progress=w.plan.progress, waiting=w.plan.waiting)
    plan = replace(plan, lead=leadtime.followed(r.plan.lead, w.plan.lead))  # available, recorded
    if plan.rollout is Rollout.PROGRESSING and not plan.waiting:
        plan = replace(
            plan, reason=f"{plan.reason}; still progressing after {timeout:.0f}s ({plan.progress})"
        )
    return replace(r, plan=plan)


def _one_site(
    args: argparse.Namespace,
    config: config_mod.Config,
    parts: Parts | None,
    settings: Settings,
    err: TextIO,
) -> tuple[Site, Engine] | None:
    """The site a one-site command names (None after saying it is unknown), and an engine."""
    from reconciler.wiring import Parts, build_engine

    if args.site not in config.names:
        known = ", ".join(config.names)
        print(f"reconciler: unknown site {args.site}; known: {known}", file=err)
        return None
    parts = parts or Parts()
    if args.context:
        parts.kube_context = args.context
    return config.select([args.site])[0], build_engine(parts, settings)


def _command(
    args: argparse.Namespace,
    config: config_mod.Config,
    *,
    parts: Parts | None,
    settings: Settings,
    out: TextIO,
    err: TextIO,
) -> int:
    from reconciler.cli import output
    from reconciler.core.model import SyncRequest
    from reconciler.sync import commands

    found = _one_site(args, config, parts, settings, err)
    if found is None:
        return EXIT_USAGE
    site, engine = found
    by = f"{settings.user or 'someone'} (cli)"
    try:
        if args.command == "hold":
            done = commands.hold(engine, site, by=by, reason=args.reason)
        elif args.command == "resume":
            done = commands.resume(engine, site, by=by)
        elif args.command == "approve":
            done = commands.approve(engine, config, site, by=by, sha=args.sha)
        else:
            done = commands.rollback(engine, site, by=by, to=args.to)
    except commands.CommandError as exc:
        print(f"reconciler: {exc}", file=err)
        return EXIT_FAILED
    report = None
    if args.command in ("resume", "approve"):
        report = engine.run(config, SyncRequest(sites=frozenset({site.name}), trigger="cli"))
    if args.output == "json":
        body: dict[str, object] = dict(done.as_dict())
        if report is not None:
            body["sync"] = [r.as_dict() for r in report.results]
        print(json.dumps(body, indent=2), file=out)
    else:
        print(done.message, file=out)
        if report is not None:
            print(output.report_text(report), file=out)
    return EXIT_OK if report is None or report.ok else EXIT_FAILED


def _history(
    args: argparse.Namespace,
    config: config_mod.Config,
    *,
    parts: Parts | None,
    settings: Settings,
    out: TextIO,
    err: TextIO,
) -> int:
    """`reconciler history SITE`: what the cluster remembers of the site's deploys."""
    from reconciler.cli import output
    from reconciler.sync import history

    found = _one_site(args, config, parts, settings, err)
    if found is None:
        return EXIT_USAGE
    site, engine = found
    try:
        deploys = history.of_site(engine.cluster_of(site), site, engine.deliveries)
    except ReconcilerError as exc:
        print(f"reconciler: {exc}", file=err)
        return EXIT_FAILED
    if args.output == "json":
        print(json.dumps([d.as_dict() for d in deploys], indent=2), file=out)
        return EXIT_OK
    rows = [
        [str(d.revision), d.at, (d.sha or "?")[:7], d.by, d.trigger or "-", d.outcome, d.image]
        for d in deploys
    ]
    header = ["revision", "when", "commit", "by", "trigger", "outcome", "image"]
    if any(d.target for d in deploys):  # a site of several targets: which workload
        rows = [[d.target, *row] for d, row in zip(deploys, rows, strict=True)]
        header = ["target", *header]
    print(output.table(rows, header) if rows else f"{site.name}: no ReplicaSets yet", file=out)
    return EXIT_OK


def _load(path: str) -> config_mod.Config:
    from reconciler.serve.triggers.schedule import cron_problem
    from reconciler.sync import config_file

    return config_file.load(path, schedule_problem=cron_problem)


def _sites(args: argparse.Namespace, path: str, out: TextIO) -> int:
    from pathlib import Path

    from reconciler.cli import output, sitesfile

    if args.sites_command == "list":
        rows = sitesfile.list_rows(_load(path))
        if args.output == "json":
            print(json.dumps(rows, indent=2), file=out)
        elif rows:
            header = list(rows[0])
            print(output.table([[r[h] for h in header] for r in rows], header), file=out)
        return EXIT_OK
    fields: dict[str, str | bool] = {"repo": args.repo}
    for key in ("branch", "namespace", "deployment", "container", "image", "verify"):
        value = getattr(args, key)
        if value is not None:
            fields[key] = value
    added = sitesfile.add_site(Path(path), args.name, fields)
    print(f"added to {path}:\n{added}", file=out)
    return EXIT_OK


def run() -> None:
    sys.exit(main())
