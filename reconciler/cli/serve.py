"""`reconciler serve`: waitress (one process, a thread pool) around the app, scheduler, triggers.

waitress reads each request, headers and body, in its event loop and hands it to a thread only
once it is complete, so clients that send part of a request and stall hold a socket, not a
thread: /healthz, /readyz and the triggers keep answering. Idle connections are closed after
CHANNEL_TIMEOUT seconds; at most `Settings.http_connections` are open at once.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

from reconciler.core.errors import SettingsError
from reconciler.serve.process import GRACEFUL_TIMEOUT
from reconciler.settings import Settings

if TYPE_CHECKING:
    from reconciler.serve.process import Process

log = logging.getLogger(__name__)

CHANNEL_TIMEOUT = 30  # seconds a connection may sit idle (no bytes, no request running)
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 26 * 1024 * 1024  # GitHub's webhook payloads are at most 25 MB


class _Server:
    """One waitress server in this process: exactly one scheduler per pod."""

    def __init__(self, process: Process, host: str, port: int, settings: Settings) -> None:
        from waitress import create_server

        self.process = process
        self.map: dict[int, Any] = {}
        self.server: Any = create_server(
            process.app,
            map=self.map,
            host=host,
            port=port,
            threads=settings.http_threads,
            connection_limit=settings.http_connections,
            channel_timeout=CHANNEL_TIMEOUT,
            cleanup_interval=min(CHANNEL_TIMEOUT, 30),
            max_request_header_size=MAX_HEADER_BYTES,
            max_request_body_size=MAX_BODY_BYTES,
            ident="reconciler",
            expose_tracebacks=False,
        )
        self.done = threading.Event()
        self._stopping = threading.Lock()

    def run(self) -> None:
        """Serve until a SIGTERM/SIGINT shutdown has finished (see stop)."""
        from waitress import wasyncore

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self.process.start()
        try:
            while not self.done.is_set():
                wasyncore.loop(timeout=1.0, map=self.map, count=1)
        finally:
            self.server.close()
            wasyncore.close_all(self.map)
            self.server.task_dispatcher.shutdown(cancel_pending=True, timeout=2)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        if self._stopping.acquire(blocking=False):  # a second signal changes nothing
            threading.Thread(target=self.stop, name="shutdown", daemon=True).start()

    def stop(self) -> None:
        """Triggers stop (503), the patch in flight finishes, nothing new starts, Pub/Sub
        messages are nacked; requests still running get their answer; then the loop ends.
        /healthz answers (and /readyz says "shutting down") until the end."""
        deadline = time.monotonic() + GRACEFUL_TIMEOUT
        try:
            self.process.begin_shutdown()
            self.process.finish()
            dispatcher = self.server.task_dispatcher
            while (dispatcher.active_count or dispatcher.queue) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            self.done.set()
            self.server.trigger.pull_trigger()  # wake the loop now rather than within 1 s


# Blocks from this size up are mapped on their own and given back when freed (a GraphQL answer,
# a LIST page, a sync's JSON reply), and the heap is trimmed from this much free at its top.
# glibc's default raises the first threshold after each such block is freed, up to 32 MB, so
# those blocks end up in the heap, where they keep the RSS of their peak: serve at 10,000 sites
# peaked 17 MB higher in a steady sync (bench/README.md, "serve on the watch-fed cache").
MALLOC_MMAP_THRESHOLD = 128 * 1024


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread its own malloc arena; with dozens of threads that is most of the
    idle RSS. Two arenas cost nothing measurable here (MALLOC_ARENA_MAX, set in-process); large
    blocks are given back when freed (MALLOC_MMAP_THRESHOLD)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
        libc.mallopt(-3, MALLOC_MMAP_THRESHOLD)  # M_MMAP_THRESHOLD (fixed: not raised)
        libc.mallopt(-1, MALLOC_MMAP_THRESHOLD)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def serve(
    config_path: str, *, port: int | None = None, bind: str | None = None, settings: Settings
) -> int:
    """Run the service until SIGTERM/SIGINT; returns the exit code. A --port or --bind that
    cannot be used, or an address this host cannot listen on, raises SettingsError."""
    from reconciler import logs
    from reconciler.wiring import build_process

    settings = settings.listening(bind, port)
    limit_malloc_arenas(settings.malloc_arenas)
    logs.setup(settings)
    host, port = settings.bind, settings.port
    log.info("starting on %s:%s with %s", host, port, config_path, extra={"event": "starting"})
    process = build_process(config_path, settings)
    try:
        server = _Server(process, host, port, settings)
    except (OSError, ValueError) as exc:  # in use, not an address of this host, ...
        raise SettingsError(
            f"cannot listen on {host}:{port} (BIND or --bind, PORT or --port): {exc}"
        ) from exc
    server.run()
    log.info("stopped", extra={"event": "stopped"})
    return 0


if __name__ == "__main__":  # pragma: no cover
    _settings = Settings.from_env(os.environ)
    sys.exit(serve(_settings.config_path, settings=_settings))
