"""`reconciler serve`: gunicorn (one worker, threads) around the app, scheduler and triggers."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

from gunicorn.app.base import BaseApplication

log = logging.getLogger(__name__)

GRACEFUL_TIMEOUT = 25  # the pod's terminationGracePeriodSeconds (60) leaves room for this
LEASE_NAME = "reconciler"  # k8s/lease-rbac.yaml grants get/update on this name only


class Process:
    """What runs inside the gunicorn worker: the Service, its triggers and the WSGI app."""

    def __init__(self, config_path: str, env: Mapping[str, str]) -> None:
        from reconciler.adapters import kube
        from reconciler.adapters.github import GitHubSettings
        from reconciler.serve.app import create_app
        from reconciler.serve.service import Service, web_url_for
        from reconciler.wiring import Parts, build_engine, build_notifier

        self.env = env
        api = kube.api_client()
        cluster = kube.KubeCluster(api)
        engine = build_engine(Parts(cluster=cluster), env)
        lease = None
        lease_ns = env.get("RECONCILER_LEASE_NAMESPACE") or env.get("POD_NAMESPACE")
        if lease_ns and env.get("RECONCILER_LEASE", "on") != "off":
            identity = env.get("POD_NAME") or socket.gethostname()
            lease = kube.KubeLease(api, lease_ns, LEASE_NAME, identity)
        web_url = web_url_for(GitHubSettings.from_env(env).api_url)
        self.service = Service(
            config_path,
            engine,
            lease=lease,
            web_url=web_url,
            notifier=build_notifier(engine, env, web_url=web_url),
        )
        self.service.extra_health["kubernetes"] = _cached(lambda: kube.ping(api), 10.0)
        self.pubsub: Any = None
        subscription = env.get("PUBSUB_SUBSCRIPTION")
        if subscription:
            from reconciler.adapters.pubsub import PubSubTrigger

            self.pubsub = PubSubTrigger(
                subscription, self.service.submit_future, self.service.site_names
            )
            self.service.extra_health["pubsub"] = lambda: (
                None if self.pubsub.running else f"Pub/Sub: {self.pubsub.last_error}"
            )
        self.app = create_app(self.service, trigger_token=env.get("RECONCILER_TRIGGER_TOKEN"))

    def start(self) -> None:
        from reconciler.core.engine import SyncRequest

        self.service.start_schedule()
        if self.pubsub is not None:
            self.pubsub.start()
        self.service.submit(SyncRequest(trigger="startup"))
        log.info("reconciler serving", extra={"event": "started", "pid": os.getpid()})

    def begin_shutdown(self) -> None:
        """On SIGTERM: no new triggers; the patch in flight finishes, nothing new starts."""
        log.info("shutting down", extra={"event": "shutdown"})
        if self.pubsub is not None:
            self.pubsub.stop(timeout=5.0)
        self.service.shutdown(timeout=0)

    def finish(self) -> None:
        if not self.service.shutdown(timeout=GRACEFUL_TIMEOUT - 5):
            log.warning("exiting with a sync still running", extra={"event": "shutdown_late"})


def _cached(check: Callable[[], str | None], ttl: float) -> Callable[[], str | None]:
    state: dict[str, Any] = {"at": 0.0, "value": None}

    def run() -> str | None:
        now = time.monotonic()
        if now - state["at"] > ttl:
            state["value"], state["at"] = check(), now
        return state["value"]  # type: ignore[no-any-return]

    return run


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: dict[str, Any], build: Callable[[], Process]) -> None:
        self.options = options
        self.build = build
        self.process: Process | None = None
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        self.cfg.set("post_worker_init", self._post_worker_init)
        self.cfg.set("worker_exit", self._worker_exit)

    def load(self) -> Any:
        self.process = self.build()
        return self.process.app

    def _post_worker_init(self, worker: Any) -> None:
        process = self.process
        assert process is not None
        original = worker.handle_exit

        def on_term(sig: int, frame: FrameType | None) -> None:
            process.begin_shutdown()
            original(sig, frame)

        signal.signal(signal.SIGTERM, on_term)
        process.start()

    def _worker_exit(self, server: Any, worker: Any) -> None:
        if self.process is not None:
            self.process.finish()


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread its own malloc arena; with dozens of threads that is most of the
    idle RSS. Two arenas cost nothing measurable here (MALLOC_ARENA_MAX, set in-process)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def serve(
    config_path: str, *, port: int | None = None, bind: str | None = None, env: Mapping[str, str]
) -> int:
    """Run the service until SIGTERM/SIGINT; returns the exit code."""
    from reconciler import logs

    limit_malloc_arenas(int(env.get("RECONCILER_MALLOC_ARENAS", "2")))
    logs.setup(env)
    port = port or int(env.get("PORT", "8080"))
    address = f"{bind or env.get('BIND', '0.0.0.0')}:{port}"
    options = {
        "bind": address,
        "workers": 1,  # exactly one scheduler per pod
        "worker_class": "gthread",
        "threads": int(env.get("RECONCILER_HTTP_THREADS", "64")),
        "timeout": 120,
        "graceful_timeout": GRACEFUL_TIMEOUT,
        "keepalive": 5,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "proc_name": "reconciler",
        "logger_class": "gunicorn.glogging.Logger",
    }
    log.info("starting on %s with %s", address, config_path, extra={"event": "starting"})
    _Gunicorn(options, lambda: Process(config_path, env)).run()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(serve(os.environ.get("RECONCILER_CONFIG", "sites.toml"), env=os.environ))
