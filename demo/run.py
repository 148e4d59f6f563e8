"""Start the demo (cluster, example Deployments, GitHub or its stand-in, `reconciler serve`) and
stop every process it started on Ctrl-C or SIGTERM."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType
from typing import Any

from demo import world
from demo.build import ensure_binaries
from demo.control import FOREIGN_ENV, ControlServer, PushRefused, clear_state, write_state
from testkit.controlplane import LocalCluster
from testkit.controlplane.cluster import crashloop_sha
from testkit.github import GitHubStandIn, random_sha, shared_dir
from testkit.processes import die_with_parent, free_port

REPO = Path(__file__).resolve().parents[1]
GITHUB_API = "https://api.github.com"
# Where the online demo asks GitHub (a test points it at the stand-in playing GitHub).
GITHUB_API_ENV = "RECONCILER_DEMO_GITHUB_API"


def github_api() -> str:
    return os.environ.get(GITHUB_API_ENV) or GITHUB_API


class Interrupted(BaseException):
    """SIGINT or SIGTERM: stop everything."""


class StartFailed(Exception):
    """The demo could not start; the message says why and what to do."""


def say(text: str = "") -> None:
    print(text, flush=True)


def github_unreachable(api: str) -> str | None:
    """Why GitHub's API cannot be reached from here, or None when it answers."""
    req = urllib.request.Request(api + "/rate_limit", headers={"User-Agent": "reconciler"})
    try:
        with urllib.request.urlopen(req, timeout=8) as r:
            core = json.loads(r.read())["resources"]["core"]
            say(f"GitHub answers: {core['remaining']} of {core['limit']} anonymous requests left")
            return None
    except urllib.error.HTTPError as e:
        return None if e.code in (403, 429) else f"HTTP {e.code}"  # limited, yet reachable
    except (OSError, ValueError, KeyError) as e:
        return str(getattr(e, "reason", e))


def _port_free(port: int) -> bool:
    """Whether serve can listen on `port`: like serve's own socket, the probe allows reuse, so
    connections of a demo stopped a moment ago (TIME_WAIT) do not count as taking it."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def command_name() -> str:
    """How to name scripts/demo in the printed commands (relative when run from the repo)."""
    rel = os.path.relpath(REPO / "scripts" / "demo")
    return rel if not rel.startswith("..") else str(REPO / "scripts" / "demo")


class Demo:
    """One run of the demo; run() returns the exit code."""

    def __init__(self, demo_dir: Path, *, offline: bool, port: int) -> None:
        self.demo_dir = demo_dir
        self.offline = offline
        self.port = port
        self.trigger_token = secrets.token_urlsafe(32)  # serve refuses under 32 bytes
        self.control_token = secrets.token_urlsafe(18)
        self.started = time.monotonic()
        self.github: GitHubStandIn | None = None
        self.serve: subprocess.Popen[bytes] | None = None
        self.url = ""
        self._stop = threading.Event()

    # -- signals ----------------------------------------------------------------------------

    def _interrupt(self, signum: int, frame: FrameType | None) -> None:
        self._stop.set()
        raise Interrupted

    def _while_stopping(self, signum: int, frame: FrameType | None) -> None:
        say("\nstill stopping (waiting for serve's graceful shutdown) ...")

    def _install(self, handler: Any) -> None:
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> int:
        self._install(self._interrupt)
        with contextlib.ExitStack() as stack:
            try:
                self._start(stack)
                self._wait()
            except Interrupted:
                pass
            finally:
                self._install(self._while_stopping)
                if self.serve is not None or sys.exc_info()[0] in (None, Interrupted):
                    say("\nstopping the demo: everything it started ...")
        clear_state(self.demo_dir)
        say("stopped; nothing the demo started is running.")
        return 0

    def _start(self, stack: contextlib.ExitStack) -> None:
        self.demo_dir.mkdir(parents=True, exist_ok=True)
        api_url = github_api()
        if self.offline:
            self.github = self._standin()
            stack.callback(self.github.stop)
            api_url = self.github.url
        else:
            reason = github_unreachable(api_url)
            if reason is not None:
                raise StartFailed(
                    f"GitHub cannot be reached from this machine ({api_url}: {reason}).\n"
                    "The demo follows real public repositories through GitHub's anonymous REST\n"
                    "API. Without GitHub, run it offline: a local GitHub stand-in whose branches\n"
                    "you move yourself, with `push`:\n\n"
                    f"    {command_name()} --offline"
                )
        cp_bin, cluster_bin = ensure_binaries()
        say("starting the local cluster (kube-apiserver, etcd, controllers, scheduler, kwok) ...")
        cluster = LocalCluster(bin_dir=cp_bin, cluster_bin_dir=cluster_bin, nodes=1)
        stack.callback(cluster.stop)
        cluster.start()
        self._install(self._interrupt)  # the cluster chained its own SIGTERM hook before ours
        with cluster.api_client() as api:
            world.create_deployments(api)
        kubeconfig = self.demo_dir / "kubeconfig"
        shutil.copyfile(cluster.kubeconfig_path, kubeconfig)
        kubeconfig.chmod(0o600)
        stack.callback(kubeconfig.unlink, missing_ok=True)
        config = self.demo_dir / "sites.toml"
        config.write_text(world.sites_toml(offline=self.offline))
        control = ControlServer(self.control_token, self._push).start()
        stack.callback(control.stop)
        self._start_serve(stack, config, kubeconfig, api_url)
        if self.offline:
            self._second_deploy()
        write_state(
            self.demo_dir,
            {
                "pid": os.getpid(),
                "mode": "offline" if self.offline else "online",
                "url": self.url,
                "trigger_token": self.trigger_token,
                "control_url": control.url,
                "control_token": self.control_token,
                "kubeconfig": str(kubeconfig),
                "kubectl": str(cluster.kubectl_path),
                "namespace": world.NAMESPACE,
                "sites_toml": str(config),
                "api_server": cluster.host,
                "github": api_url,
                "serve_pid": self.serve.pid if self.serve else None,
            },
        )
        self._banner(cluster, config, kubeconfig)

    def _standin(self) -> GitHubStandIn:
        # Validate every answer against GitHub's published schemas where the project's shared
        # copy of them is at hand (it is beside the repository in development and CI).
        validate = (shared_dir() / "github" / "rest-openapi-subset.json").is_file()
        gh = GitHubStandIn(validate=validate, anonymous_limit=5000)
        for name in (*(site.name for site in world.SITES), world.RELEASE):
            gh.add_repo(world.offline_repo(name), {"main": random_sha()})
        return gh.start()

    def _start_serve(
        self, stack: contextlib.ExitStack, config: Path, kubeconfig: Path, api_url: str
    ) -> None:
        port = self.port if self.port and _port_free(self.port) else free_port()
        if self.port and port != self.port:
            say(f"port {self.port} is taken: serving on {port} instead")
        env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV)}
        env.update(
            GITHUB_API_URL=api_url,
            KUBECONFIG=str(kubeconfig),
            RECONCILER_TRIGGER_TOKEN=self.trigger_token,
            RECONCILER_READ_TOKEN="open",  # on loopback only: the page opens without a token
            RECONCILER_LEASE="off",
            RECONCILER_CLI_NAME=f"{command_name()} run",  # the page's hints, as they work here
            LOG_FORMAT="text",
        )
        say(f"starting reconciler serve on 127.0.0.1:{port} ...")
        self.serve = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "reconciler",
                "serve",
                "--config",
                str(config),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
            ],
            env=env,
            cwd=self.demo_dir,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the demo, which stops serve in order
            preexec_fn=functools.partial(die_with_parent, os.getpid()),  # noqa: PLW1509
        )
        stack.callback(self._stop_serve)
        self.url = f"http://127.0.0.1:{port}"
        # Up when the page shows the sites: after serve's startup sync.
        while not (self._get("/status") or {}).get("last_sync"):
            if self.serve.poll() is not None:
                raise StartFailed(f"reconciler serve exited with code {self.serve.returncode}")
            time.sleep(0.1)

    def _stop_serve(self) -> None:
        proc = self.serve
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(40)  # gunicorn's graceful timeout is 25 s
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # a worker left in its group

    def _get(self, path: str) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as r:
                answer: dict[str, Any] = json.loads(r.read())
                return answer
        except (OSError, ValueError):
            return None

    def _wait(self) -> None:
        while not self._stop.wait(0.5):
            if self.serve is not None and self.serve.poll() is not None:
                say(f"reconciler serve exited with code {self.serve.returncode}: stopping")
                return

    # -- push -------------------------------------------------------------------------------

    def _second_deploy(self) -> None:
        """Deploy a second commit of the undo site, so that `kubectl rollout undo` goes back to
        a commit the reconciler deployed (undoing to the hand-made first revision would give
        a Deployment the reconciler never managed: it adopts those rather than hold them)."""
        self._push({"site": world.UNDO_SITE}, wait=True)

    def _push(self, body: dict[str, Any], *, wait: bool = False) -> dict[str, Any]:
        if self.github is None:
            raise PushRefused(
                "push moves the branches of the offline demo's GitHub stand-in; this demo "
                "follows real repositories (start it with --offline to push)"
            )
        site = str(body.get("site"))
        names = [*(s.name for s in world.SITES), world.RELEASE]
        if site not in names:
            raise PushRefused(f"no site {site!r}: one of {', '.join(names)}")
        bad = bool(body.get("bad"))
        sha = crashloop_sha() if bad else random_sha()
        message = "A change whose image crash-loops" if bad else f"A change to {site}"
        repo = world.offline_repo(site)
        self.github.set_branch(repo, "main", sha, message)
        req = urllib.request.Request(
            f"{self.url}/sync/{site}?wait={str(wait).lower()}",
            method="POST",
            headers={"Authorization": f"Bearer {self.trigger_token}"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            run = json.loads(r.read())
        return {"site": site, "repo": repo, "branch": "main", "sha": sha, "bad": bad, "run": run}

    # -- the banner -------------------------------------------------------------------------

    def _banner(self, cluster: LocalCluster, config: Path, kubeconfig: Path) -> None:
        demo = command_name()
        took = time.monotonic() - self.started
        ns = world.NAMESPACE
        if self.offline:
            source = "offline: a local GitHub stand-in; you move its branches with `push`"
        else:
            source = (
                "online: real public repositories, read through GitHub's anonymous REST API\n"
                "                 (no token; GitHub allows 60 requests an hour per address)"
            )
        say()
        say(f"reconciler demo is up ({took:.1f} s)")
        say(f"  status page:   {self.url}/")
        say(f"  trigger token: {self.trigger_token}   (for 'sync now' and POST /sync)")
        say(f"  GitHub:        {source}")
        say(f'  sites.toml:    {config}   (verify = "none": the demo has no registry to ask,')
        say('                 and its kwok nodes "run" any image tag without pulling it)')
        say(f"  cluster:       {cluster.host} (kube-apiserver, etcd, kube-controller-manager,")
        say(f"                 kube-scheduler, kwok); namespace {ns}; kubeconfig {kubeconfig}")
        say()
        say("Try:")
        if self.offline:
            say(f"  {demo} push blog              # a new commit on demo/blog: watch it deploy")
            say(f"  {demo} push {world.RELEASE}           # its worker and CronJob move together")
            say(
                f"  {demo} push checkout --bad    # its image crash-loops: rolled back "
                f"~{world.ROLLOUT_TIMEOUT} s later"
            )
        else:
            say(
                "  # checkout's image crash-loops on every commit: watch it roll back "
                f"~{world.ROLLOUT_TIMEOUT} s after it deploys"
            )
        say(
            f"  {demo} kubectl -n {ns} rollout undo deployment/{world.UNDO_SITE}"
            "   # a person's rollback: the site is held"
        )
        say(f"  {demo} run resume {world.UNDO_SITE}   # lift the hold (the reconciler CLI, here)")
        say(
            f"  {demo} run approve {world.PRODUCTION}   # promote what {world.PRODUCTION_SOURCE} "
            f"ran for {world.SOAK} (or the page's Approve button)"
        )
        if not self.offline:
            say(
                "    (once the reconciler has deployed a second commit of it: undoing its first"
                " deploy\n     gives back a Deployment it never managed, which it adopts)"
            )
        say(
            f"  {demo} kubectl -n {ns} rollout history deployment/blog   # commits, by change-cause"
        )
        say(f"  {demo} kubectl -n {ns} get deployments,pods")
        say(f"  {demo} run plan   # or: run history blog, run hold blog, run rollback blog")
        say(f"  curl -X POST -H 'Authorization: Bearer {self.trigger_token}' {self.url}/sync")
        say(f"  (the kubectl is {cluster.kubectl_path} with KUBECONFIG={kubeconfig})")
        say()
        say("Ctrl-C stops everything the demo started. reconciler serve's log follows.")
        say()
