"""What the benchmark watches: the app from outside (a 20 Hz prober) and the engine's events.

All times are wall-clock seconds (``time.time()``), the clock that Docker's event
timestamps and rollhook's step timestamps use too, so the three can be compared.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import docker
import httpx

PROBE_HZ = 20


@dataclass(frozen=True)
class Sample:
    at: float  # when the request was sent
    ok: bool  # /api/ping answered 200
    version: str | None  # appVersion from /api/utils/metrics, when ping was 200


class Prober:
    """GET /api/ping at 20 Hz in a thread; on a 200 also asks which version answered.

    Use as a context manager; ``samples`` holds every answer, oldest first.
    """

    def __init__(self, port: int, hz: float = PROBE_HZ) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.interval = 1.0 / hz
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"prober-{port}", daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        # A request that hangs counts as down: one second is twenty missed probes.
        with httpx.Client(timeout=1.0, trust_env=False) as client:
            tick = time.time()
            while not self._stop.is_set():
                self.samples.append(self._probe(client))
                tick += self.interval
                now = time.time()
                tick = max(tick, now)  # fell behind (a slow answer): skip the missed ticks
                self._stop.wait(tick - now)

    def _probe(self, client: httpx.Client) -> Sample:
        at = time.time()
        try:
            if client.get(f"{self.base}/api/ping").status_code != 200:
                return Sample(at, False, None)
            version = client.get(f"{self.base}/api/utils/metrics").json().get("appVersion")
        except (httpx.HTTPError, ValueError):
            return Sample(at, False, None)
        return Sample(at, True, version)

    def wait_for(self, version: str, timeout: float, since: float = 0.0) -> float | None:
        """When ``version`` first answered 200 at or after ``since``; None after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            found = first_ok(self.samples, version, since)
            if found is not None or time.monotonic() > deadline:
                return found
            time.sleep(self.interval)


def first_ok(samples: list[Sample], version: str, since: float = 0.0) -> float | None:
    for sample in list(samples):
        if sample.at >= since and sample.ok and sample.version == version:
            return sample.at
    return None


@dataclass(frozen=True)
class Outage:
    start: float  # the last 200 before it
    end: float | None  # the first 200 after it; None: it never ended while we watched

    @property
    def seconds(self) -> float | None:
        return None if self.end is None else self.end - self.start


def longest_outage(samples: list[Sample]) -> Outage | None:
    """The longest run of non-200 answers, from the last 200 before it to the first after.

    Measured between successful probes, so it overstates the true gap by at most one
    probe interval (50 ms). None when every probe answered 200.
    """
    longest: Outage | None = None
    last_ok: float | None = None
    failing = False
    for sample in samples:
        if not sample.ok:
            failing = failing or last_ok is not None
            continue
        if failing and last_ok is not None:
            outage = Outage(last_ok, sample.at)
            if longest is None or (outage.seconds or 0) > (longest.seconds or 0):
                longest = outage
        failing, last_ok = False, sample.at
    if failing and last_ok is not None:
        return Outage(last_ok, None)
    return longest


@dataclass(frozen=True)
class Event:
    at: float
    action: str  # create, start, kill, die, stop, destroy, ...
    container: str
    project: str
    attributes: dict[str, str]


class EngineEvents:
    """Every container event of the engine, collected by a thread for the whole run."""

    def __init__(self, client: docker.DockerClient) -> None:
        self._client = client
        self._events: list[Event] = []
        self._stream: Any = None
        self._thread = threading.Thread(target=self._run, name="engine-events", daemon=True)

    def start(self) -> None:
        self._stream = self._client.events(decode=True, filters={"type": "container"})
        self._thread.start()

    def stop(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self._thread.join(timeout=5)
        self._client.close()

    def _run(self) -> None:
        try:
            for raw in self._stream:
                attributes = dict((raw.get("Actor") or {}).get("Attributes") or {})
                self._events.append(
                    Event(
                        at=int(raw["timeNano"]) / 1e9,
                        action=str(raw.get("Action") or raw.get("status") or ""),
                        container=str(raw.get("id") or (raw.get("Actor") or {}).get("ID") or ""),
                        project=attributes.get("com.docker.compose.project", ""),
                        attributes=attributes,
                    )
                )
        except Exception:  # the stream is closed under us at the end of the run
            return

    def of(self, project: str, since: float, until: float | None = None) -> list[Event]:
        """Events of one compose project between two moments, oldest first."""
        return [
            e
            for e in list(self._events)
            if e.project == project and e.at >= since and (until is None or e.at <= until)
        ]
