"""A TCP proxy on 127.0.0.1 in front of a local server, to make a dependency slow or absent.

``latency`` (seconds) delays each chunk a client sends before it is passed on (roughly:
each request of a kept-alive HTTP connection); ``chunks`` counts them, which tells a test
that a client is talking to the server right now. ``stop()`` drops every open connection
and refuses new ones until ``start()`` binds the same port again. Nothing is parsed:
what goes through is the server's own protocol.

Each connection's fate is logged (logger ``tests.harness.tcpproxy``, DEBUG; a client
dropped because the server could not be reached, WARNING), with the ports, so that a
failed pull shows in pytest's captured log whether it went through the proxy at all.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Self

from tests.harness.ports import stop_listening

log = logging.getLogger(__name__)


class TcpProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.port = 0  # chosen by the kernel at the first start, kept after
        self.latency = 0.0
        self.chunks = 0
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Self:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        log.debug("proxy :%d -> :%d listening", self.port, self.upstream[1])
        self._acceptor = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._acceptor.start()
        return self

    def stop(self) -> None:
        """Go down: open connections are cut, new ones refused."""
        listener, self._listener = self._listener, None
        log.debug("proxy :%d stopping (%d open sockets cut)", self.port, len(self._open))
        if listener is not None and self._acceptor is not None:
            stop_listening(listener, self._acceptor, timeout=15)
        with self._lock:
            cut, self._open = self._open, set()
        for sock in cut:
            _close(sock)

    @contextmanager
    def down(self) -> Iterator[None]:
        self.stop()
        try:
            yield
        finally:
            self.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, peer = listener.accept()
            except OSError as exc:
                log.debug("proxy :%d accept ended: %r", self.port, exc)
                return  # stopped
            log.debug("proxy :%d accepted client :%d", self.port, peer[1])
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError as exc:
                log.warning(
                    "proxy :%d client :%d closed: upstream :%d unreachable: %r",
                    self.port,
                    peer[1],
                    self.upstream[1],
                    exc,
                )
                _close(client)
                continue
            log.debug(
                "proxy :%d client :%d via :%d -> upstream :%d",
                self.port,
                peer[1],
                server.getsockname()[1],
                self.upstream[1],
            )
            server.settimeout(None)
            with self._lock:
                self._open |= {client, server}
            for src, dst, upstream in ((client, server, True), (server, client, False)):
                pump = threading.Thread(
                    target=self._pump, args=(src, dst, upstream, peer[1]), daemon=True
                )
                pump.start()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool, client: int) -> None:
        why = "EOF"
        try:
            while data := src.recv(65536):
                if upstream:
                    self.chunks += 1
                    if self.latency:
                        time.sleep(self.latency)
                dst.sendall(data)
        except OSError as exc:
            why = repr(exc)
        finally:
            log.debug(
                "proxy :%d client :%d %s ended: %s (chunks %d)",
                self.port,
                client,
                "client->upstream" if upstream else "upstream->client",
                why,
                self.chunks,
            )
            with self._lock:
                self._open -= {src, dst}
            _close(src)
            _close(dst)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
