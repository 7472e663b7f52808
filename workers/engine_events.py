"""The Docker engine's event stream for containers: drift seen within seconds, not polls.

:class:`EngineEvents` ``.watch()`` yields a :class:`ContainerEvent` for each container that
is created, started, killed, dies, runs out of memory, is stopped or destroyed (optionally
only those of some compose projects), until :meth:`EngineEvents.stop` is called from any
thread. When the engine goes away (restarted, upgraded, its socket gone), the watcher
reconnects with backoff and resumes with ``since`` at the last event it saw, so that the
engine replays what happened in between; it then yields :class:`Reconnected`.

The engine keeps only a short in-memory buffer of recent events (moby: 256), and a
restarted engine has lost its old buffer: events can be missed while the watcher is away,
so a consumer should compare the whole state on :class:`Reconnected`. Times are the
engine's; the first resume point, before any event was seen, is this machine's clock
(rollhook runs beside its engine).
"""

from __future__ import annotations

import collections
import contextlib
import socket
import threading
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import docker
import docker.errors
import requests
import urllib3.exceptions

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
ROLLHOOK_PREFIX = "rollhook."
CONTAINER_ACTIONS = ("create", "start", "kill", "die", "oom", "stop", "destroy")
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
# What a lost connection or a stream closed under our feet looks like through the SDK.
_GONE = (
    docker.errors.DockerException,
    requests.exceptions.RequestException,
    urllib3.exceptions.HTTPError,
    OSError,
    ValueError,  # "I/O operation on closed file" once stop() closed the socket
    AttributeError,  # the SDK's reader after the response was torn down
)


@dataclass(frozen=True)
class ContainerEvent:
    """Something happened to a container."""

    action: str  # one of CONTAINER_ACTIONS
    container_id: str
    name: str
    project: str | None  # com.docker.compose.project
    service: str | None  # com.docker.compose.service
    labels: dict[str, str]  # the container's rollhook.* labels (deployment, commit, ...)
    time: datetime  # UTC, from the engine's nanoseconds
    time_nano: int = field(repr=False)
    exit_code: int | None = None  # for "die"

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> ContainerEvent | None:
        """An event from the engine's JSON, or None when it is not a container's."""
        actor = raw.get("Actor") or {}
        attributes = {str(k): str(v) for k, v in (actor.get("Attributes") or {}).items()}
        action = str(raw.get("Action") or raw.get("status") or "")
        container_id = str(actor.get("ID") or raw.get("id") or "")
        if raw.get("Type", "container") != "container" or not action or not container_id:
            return None
        nano = int(raw.get("timeNano") or int(raw.get("time") or 0) * 1_000_000_000)
        exit_code = attributes.get("exitCode")
        return cls(
            action=action,
            container_id=container_id,
            name=attributes.get("name", ""),
            project=attributes.get(PROJECT_LABEL),
            service=attributes.get(SERVICE_LABEL),
            labels={k: v for k, v in attributes.items() if k.startswith(ROLLHOOK_PREFIX)},
            time=datetime.fromtimestamp(nano / 1e9, UTC),
            time_nano=nano,
            exit_code=int(exit_code) if exit_code and exit_code.lstrip("-").isdigit() else None,
        )

    @property
    def key(self) -> tuple[int, str, str]:
        return (self.time_nano, self.container_id, self.action)


@dataclass(frozen=True)
class Reconnected:
    """The watcher was away from ``lost_at`` until ``time``; events may have been missed
    (a restarted engine forgets its buffer): compare the whole state now."""

    lost_at: datetime
    time: datetime
    error: str  # why the connection ended, or why reconnecting failed last


class EngineEvents:
    """Watches one engine's container events; ``watch()`` in one thread, ``stop()`` from any.

    ``projects`` limits the events to those compose projects (None: every container).
    ``timeout`` bounds each connection attempt; ``backoff`` is the first and the longest
    wait between attempts.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        projects: Collection[str] | None = None,
        actions: Collection[str] = CONTAINER_ACTIONS,
        timeout: float = 10.0,
        backoff: tuple[float, float] = (0.2, 10.0),
    ) -> None:
        self.base_url = base_url or DEFAULT_SOCKET
        self.projects = frozenset(projects) if projects is not None else None
        self.actions = tuple(actions)
        self.timeout = timeout
        self.backoff = backoff
        self.last_error: str | None = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._stream: Any = None
        self._seen: collections.OrderedDict[tuple[int, str, str], None] = collections.OrderedDict()

    def stop(self) -> None:
        """End ``watch()`` soon (within a connection attempt's timeout at worst)."""
        self._stopped.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            with contextlib.suppress(*_GONE):
                stream.close()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def watch(self) -> Iterator[ContainerEvent | Reconnected]:
        """Container events as they happen, until :meth:`stop`; never raises for a lost
        engine (it reconnects, and ``last_error`` says why it had to)."""
        since = time.time_ns()
        lost_at: float | None = None
        delay = self.backoff[0]
        while not self._stopped.is_set():
            try:
                client, stream = self._connect(since)
            except _GONE as exc:
                self.last_error = f"connecting to the Docker engine at {self.base_url}: {exc}"
                lost_at = lost_at or time.time()
                if self._stopped.wait(delay):
                    break
                delay = min(delay * 2, self.backoff[1])
                continue
            delay = self.backoff[0]
            try:
                if lost_at is not None:
                    yield Reconnected(_utc(lost_at), _utc(time.time()), self.last_error or "")
                    lost_at = None
                for event in self._events(stream):
                    since = event.time_nano
                    yield event
                self.last_error = f"the Docker engine at {self.base_url} closed the event stream"
            except _GONE as exc:
                self.last_error = f"reading events from the Docker engine at {self.base_url}: {exc}"
            finally:
                self._disconnect(client, stream)
            lost_at = time.time()

    # -- plumbing ---------------------------------------------------------------------

    def _connect(self, since: int) -> tuple[Any, Any]:
        filters: dict[str, Any] = {"type": ["container"], "event": list(self.actions)}
        if self.projects is not None and len(self.projects) == 1:
            filters["label"] = [f"{PROJECT_LABEL}={next(iter(self.projects))}"]
        elif self.projects is not None:
            # The engine ANDs label filters: ask for compose containers, pick projects here.
            filters["label"] = [PROJECT_LABEL]
        # "auto": as old an engine as 20.10 refuses newer API versions, and new engines
        # refuse old ones. The stream itself has no read timeout: it waits for events.
        self._probe()
        client = docker.APIClient(base_url=self.base_url, version="auto", timeout=self.timeout)
        try:
            # Inclusive, nanoseconds: the last event seen comes again and is skipped.
            stream = client.events(
                since=f"{since // 10**9}.{since % 10**9:09d}", filters=filters, decode=True
            )
        except BaseException:
            client.close()
            raise
        with self._lock:
            self._stream = stream
        if self._stopped.is_set():  # stop() came while we connected
            stream.close()
        return client, stream

    def _probe(self) -> None:
        """Connect once with a plain socket: the SDK leaks its socket when a connect fails,
        and a watcher that retries for an hour would leak one per attempt."""
        parts = urlsplit(self.base_url)
        address: str | tuple[str, int]
        if parts.scheme in {"unix", "http+unix"}:
            family, address = socket.AF_UNIX, parts.path
        elif parts.scheme in {"tcp", "http", "https"} and parts.hostname:
            host, port = parts.hostname, parts.port or (2376 if parts.scheme == "https" else 2375)
            family, address = socket.AF_INET6 if ":" in host else socket.AF_INET, (host, port)
        else:
            return
        with socket.socket(family) as probe:
            probe.settimeout(self.timeout)
            probe.connect(address)

    def _disconnect(self, client: Any, stream: Any) -> None:
        with self._lock:
            self._stream = None
        with contextlib.suppress(*_GONE):
            stream.close()
        with contextlib.suppress(*_GONE):
            client.close()

    def _events(self, stream: Any) -> Iterator[ContainerEvent]:
        for raw in stream:
            if self._stopped.is_set():
                return
            event = ContainerEvent.parse(raw) if isinstance(raw, dict) else None
            if event is None or event.key in self._seen:
                continue
            self._seen[event.key] = None
            while len(self._seen) > 1024:
                self._seen.popitem(last=False)
            if self.projects is not None and event.project not in self.projects:
                continue
            yield event


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)
