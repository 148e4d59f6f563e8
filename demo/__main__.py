"""scripts/demo [--offline] [--port N] | push SITE [--bad] | kubectl ARGS... | run ARGS..."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from demo.control import FOREIGN_ENV, DemoNotRunning, PushRefused, push, read_state

REPO = Path(__file__).resolve().parents[1]


def demo_dir() -> Path:
    """Where the running demo keeps sites.toml, its kubeconfig and demo.json."""
    return Path(os.environ.get("RECONCILER_DEMO_DIR") or REPO / ".demo").resolve()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/demo",
        description="Try reconciler on a local cluster: example sites, the status page, "
        "rollbacks and holds. Ctrl-C stops everything.",
    )
    p.add_argument(
        "--offline",
        action="store_true",
        help="follow a local GitHub stand-in (move its branches with `push`) instead of real "
        "public repositories",
    )
    p.add_argument("--port", type=int, default=8080, help="status page port (0: any free one)")
    sub = p.add_subparsers(dest="command")
    push_p = sub.add_parser("push", help="offline demo: move SITE's branch to a new commit")
    push_p.add_argument("site")
    push_p.add_argument("--bad", action="store_true", help="a commit whose image crash-loops")
    sub.add_parser("kubectl", help="kubectl ARGS...: the demo's kubectl, on the demo's cluster")
    sub.add_parser(
        "run",
        help="run ARGS...: the reconciler CLI (`run resume shop`, `run plan`, `run history blog`) "
        "with the demo's sites.toml, cluster and GitHub",
    )
    return p


def _push(site: str, bad: bool) -> int:
    try:
        answer = push(demo_dir(), site, bad=bad)
    except (DemoNotRunning, PushRefused) as e:
        print(f"scripts/demo push: {e}", file=sys.stderr)
        return 1
    kind = "a crash-looping commit" if answer["bad"] else "a new commit"
    print(
        f"{answer['repo']} {answer['branch']} is now {answer['sha'][:7]} ({kind}); "
        f"sync of {answer['site']} requested (run {answer['run'].get('id')}): "
        f"watch {read_state(demo_dir())['url']}/"
    )
    return 0


def _kubectl(args: list[str]) -> int:
    try:
        state = read_state(demo_dir())
    except DemoNotRunning as e:
        print(f"scripts/demo kubectl: {e}", file=sys.stderr)
        return 1
    kubectl = state["kubectl"]
    env = {**os.environ, "KUBECONFIG": state["kubeconfig"], "KUBERC": "off"}
    os.execve(kubectl, [kubectl, f"--kubeconfig={state['kubeconfig']}", *args], env)


def _run(args: list[str]) -> int:
    """The reconciler CLI against the running demo: its sites.toml, kubeconfig and GitHub (the
    stand-in offline), so the commands the page and the banner print work as printed."""
    try:
        state = read_state(demo_dir())
    except DemoNotRunning as e:
        print(f"scripts/demo run: {e}", file=sys.stderr)
        return 1
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV)}
    env.update(
        RECONCILER_CONFIG=state["sites_toml"],
        KUBECONFIG=state["kubeconfig"],
        GITHUB_API_URL=state["github"],
        PYTHONPATH=str(REPO),
    )
    os.execve(sys.executable, [sys.executable, "-m", "reconciler", *args], env)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["kubectl"]:  # everything after it is kubectl's, flags included
        return _kubectl(argv[1:])
    if argv[:1] == ["run"]:  # and after this, the reconciler CLI's
        return _run(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "push":
        return _push(args.site, args.bad)
    from demo.build import BuildFailed
    from demo.run import Demo, StartFailed

    try:
        state = read_state(demo_dir())
        print(
            f"a demo is already running (pid {state['pid']}, {state['url']}/): "
            "stop it with Ctrl-C first",
            file=sys.stderr,
        )
        return 1
    except DemoNotRunning:
        pass
    try:
        return Demo(demo_dir(), offline=args.offline, port=args.port).run()
    except (StartFailed, BuildFailed) as e:
        print(f"\n{e}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
