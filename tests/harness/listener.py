"""A loopback HTTP listener that records what is POSTed to it (registry notifications,
webhook senders' stand-ins)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from tests.harness.ports import free_port


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Listener:
    """Answers every request with ``status`` (200 by default) and keeps it in ``received``.

    Use as a context manager; ``url`` is ``http://127.0.0.1:<port>/``.
    """

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.received: list[Received] = []
        self._changed = threading.Condition()
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self._record()

            def do_GET(self) -> None:
                self._record()

            def do_PUT(self) -> None:
                self._record()

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                self.send_response(listener.status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with listener._changed:
                    listener.received.append(
                        Received(self.command, self.path, dict(self.headers.items()), body)
                    )
                    listener._changed.notify_all()

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> Listener:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def wait_for(self, matches: Callable[[Received], bool], timeout: float = 30.0) -> Received:
        """The first recorded request that ``matches``; waits for it up to ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for request in self.received:
                    if matches(request):
                        return request
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"no matching request after {timeout:.0f}s; got {len(self.received)}"
                    )
                self._changed.wait(remaining)
