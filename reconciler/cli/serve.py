"""`reconciler serve`: gunicorn (one worker, threads) around the app, scheduler and triggers."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

from gunicorn.app.base import BaseApplication

from reconciler.serve.process import GRACEFUL_TIMEOUT
from reconciler.settings import Settings

if TYPE_CHECKING:
    from reconciler.serve.process import Process

log = logging.getLogger(__name__)


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
    config_path: str, *, port: int | None = None, bind: str | None = None, settings: Settings
) -> int:
    """Run the service until SIGTERM/SIGINT; returns the exit code."""
    from reconciler import logs
    from reconciler.wiring import build_process

    limit_malloc_arenas(settings.malloc_arenas)
    logs.setup(settings)
    address = f"{bind or settings.bind}:{port or settings.port}"
    options = {
        "bind": address,
        "workers": 1,  # exactly one scheduler per pod
        "worker_class": "gthread",
        "threads": settings.http_threads,
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
    _Gunicorn(options, lambda: build_process(config_path, settings)).run()
    return 0


if __name__ == "__main__":  # pragma: no cover
    _settings = Settings.from_env(os.environ)
    sys.exit(serve(_settings.config_path, settings=_settings))
