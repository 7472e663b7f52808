"""A tiny loopback app to put behind the proxy, and a steady client to send through it.

``WebApp`` says who answered: ``GET`` -> ``"<name> <path>"`` (``?sleep=S`` first waits S
seconds), ``POST`` -> ``"<name> <length> <sha256 of the body>"``. It can be stopped and
started again on the same port, as an app is during an upgrade.
``SteadyClient`` sends a GET and a POST with a body in turn, at a steady rate, and keeps
one ``Sent`` per request: what came back, or the error.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.harness.ports import free_port


def digest(body: bytes) -> str:
    return f"{len(body)} {hashlib.sha256(body).hexdigest()}"


class WebApp:
    """``address`` is ``127.0.0.1:<port>``; ``in_flight`` counts requests being answered."""

    def __init__(self, name: str, port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.in_flight = 0
        self.finished: list[str] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    def start(self) -> WebApp:
        app = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                app._begin(self)
                time.sleep(float(query.get("sleep", ["0"])[0]))
                self._answer(f"{app.name} {self.path}")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                app._begin(self)
                self._answer(f"{app.name} {digest(body)}")

            def _answer(self, text: str) -> None:
                data = text.encode()
                # Recorded before the last byte leaves: once the proxy has the whole
                # answer, the app has already counted the request as finished.
                with app._lock:
                    app.finished.append(self.path)
                    app.in_flight -= 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def _begin(self, request: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.in_flight += 1
            self.headers.append(dict(request.headers.items()))

    def stop(self) -> None:
        """Stop listening (connections are refused); requests being answered finish."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


@dataclass(frozen=True)
class Sent:
    method: str
    sent: float  # time.monotonic() when sent
    done: float
    status: int | None  # None: no answer (the error says why)
    text: str
    expected: str  # for a POST, the digest the app must answer with
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.expected in self.text


class SteadyClient:
    """Requests at ``rate`` per second, GET and POST in turn, until the block ends."""

    def __init__(self, url: str, rate: float = 20.0, body_size: int = 64 * 1024) -> None:
        self.url = url
        self.interval = 1.0 / rate
        self.body_size = body_size
        self.sent: list[Sent] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._workers: list[threading.Thread] = []
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=20)
        self._client = httpx.Client(timeout=120, limits=limits)

    def __enter__(self) -> SteadyClient:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        # Every request sent gets its answer (or its error) before the client closes.
        for worker in self._workers:
            worker.join(120)
        self._client.close()

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            worker = threading.Thread(target=self._one, args=(self._client, n), daemon=True)
            worker.start()
            self._workers.append(worker)
            n += 1
            self._stop.wait(self.interval)

    def body(self, n: int) -> bytes:
        """Every other request is a POST with a body of its own."""
        return f"{n:08d}".encode() * (self.body_size // 8) if n % 2 else b""

    def send(self, client: httpx.Client, n: int, body: bytes) -> tuple[httpx.Response, str]:
        """Send request ``n``; return the answer and what its text must contain."""
        if body:
            return client.post(self.url, content=body), digest(body)
        return client.get(f"{self.url}/steady/{n}"), f" /steady/{n}"

    def _one(self, client: httpx.Client, n: int) -> None:
        body = self.body(n)
        method = "POST" if body else "GET"
        sent = time.monotonic()
        expected = digest(body) if body else ""
        try:
            response, expected = self.send(client, n, body)
            result = Sent(
                method, sent, time.monotonic(), response.status_code, response.text, expected
            )
        except httpx.HTTPError as exc:
            result = Sent(method, sent, time.monotonic(), None, "", expected, repr(exc))
        self.sent.append(result)

    @property
    def failed(self) -> list[Sent]:
        return [s for s in list(self.sent) if not s.ok]

    def versions(self) -> list[str]:
        """Who answered each request (the first word of its answer), in the order sent."""
        return [s.text.split(" ", 1)[0] for s in sorted(self.sent, key=lambda s: s.sent) if s.ok]

    def changes(self) -> list[tuple[str, str]]:
        """Each time the version the client saw changed, in the order requests were sent."""
        seen = self.versions()
        return [(a, b) for a, b in itertools.pairwise(seen) if a != b]

    def latencies(self) -> list[float]:
        return sorted(s.done - s.sent for s in list(self.sent))

    def wait_for(self, count: int, after: float = 0.0, timeout: float = 60.0) -> None:
        """Wait until ``count`` requests sent after ``after`` have their answer."""
        deadline = time.monotonic() + timeout
        while sum(1 for s in list(self.sent) if s.sent > after) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {count} answers after {timeout:.0f}s")
            time.sleep(0.05)


class StandInClient(SteadyClient):
    """A steady client for the anything-llm stand-in: its ``/cgi-bin/echo`` answers
    ``"<appVersion> <length> <sha256>"`` for GET and POST alike."""

    def send(self, client: httpx.Client, n: int, body: bytes) -> tuple[httpx.Response, str]:
        url = f"{self.url}/cgi-bin/echo"
        if body:
            return client.post(url, content=body), digest(body)
        return client.get(f"{url}?n={n}"), digest(b"")
