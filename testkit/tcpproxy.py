"""A TCP proxy on loopback that a test controls: it can drop every live connection (a watch cut
mid-stream) and refuse new ones for a while (the API server out of reach), then let them through.

TLS passes through untouched (the client still talks to the real server's certificate, which is
issued for 127.0.0.1 whatever the port).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from typing import Self


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._live: set[socket.socket] = set()
        self._refusing = False
        self._closed = False
        self.accepted = 0  # connections made through the proxy
        self.refused = 0  # connections closed at once while refusing
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, name="tcpproxy", daemon=True)

    def start(self) -> Self:
        self._acceptor.start()
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def live(self) -> int:
        with self._lock:
            return len(self._live) // 2

    def sever(self) -> None:
        """Drop every connection now (both ends see the stream end mid-way)."""
        with self._lock:
            socks = list(self._live)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def refuse(self) -> None:
        """Drop every connection, and close new ones at once until admit()."""
        with self._lock:
            self._refusing = True
        self.sever()

    def admit(self) -> None:
        with self._lock:
            self._refusing = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        self.sever()
        if self._acceptor.is_alive():
            self._acceptor.join(5)
        for t in self._threads:
            t.join(5)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refusing, closed = self._refusing, self._closed
            if closed:
                client.close()
                return
            if refusing:
                self.refused += 1
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self.accepted += 1
            with self._lock:
                self._live |= {client, upstream}
            t = threading.Thread(target=self._pipe, args=(client, upstream), daemon=True)
            self._threads = [x for x in self._threads if x.is_alive()] + [t]
            t.start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [], 1.0)
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        return
                    peers[s].sendall(data)
        except OSError:
            return
        finally:
            with self._lock:
                self._live -= {a, b}
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
