"""Clients that send part of an HTTP request and then stall (for serve tests and the benchmark)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

PARTIAL_REQUESTS = (
    b"GET /healthz HTTP/1.1\r\nHost: reconciler\r\nX-Slow: ",  # stops inside the headers
    b"POST /sync HTTP/1.1\r\nHost: reconciler\r\nContent-Length: 4096\r\n\r\n{",  # in the body
)


@contextlib.contextmanager
def stalled_clients(
    port: int, count: int, host: str = "127.0.0.1"
) -> Iterator[list[socket.socket]]:
    """`count` open connections to host:port, each having sent part of a request (half stop
    inside the headers, half inside a declared body) and nothing since; closed on exit."""
    held: list[socket.socket] = []
    try:
        for i in range(count):
            conn = socket.create_connection((host, port), timeout=30)
            conn.sendall(PARTIAL_REQUESTS[i % 2])
            held.append(conn)
        yield held
    finally:
        for conn in held:
            conn.close()
