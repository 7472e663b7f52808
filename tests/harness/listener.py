"""A loopback HTTP listener that records what is sent to it (registry notifications,
webhook senders' stand-ins)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tests.harness.loopback import Answer, LoopbackServer


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Listener(LoopbackServer):
    """Answers every request with ``status`` (200 by default) and keeps it in ``received``.

    Use as a context manager; ``url`` is ``http://127.0.0.1:<port>/``.
    """

    def __init__(self, status: int = 200) -> None:
        super().__init__()
        self.status = status
        self.received: list[Received] = []
        self._changed = threading.Condition()

    @property
    def url(self) -> str:
        return super().url + "/"

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        with self._changed:
            self.received.append(Received(method, path, headers, body))
            self._changed.notify_all()
        return self.status, {}, b""

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
