"""Hands committed jobs to the broker from a background thread: the outbox's fast path.

The thread runs in the records writer's process (service/writer.py), which submits the
jobs of each commit; jobs that wait meanwhile share one broker message. A job is already
stored in the outbox when it reaches this thread, so a broker outage costs nothing but
latency: jobs that could not be sent stay undispatched, beat re-publishes them, and this
thread drains the outbox itself once the broker answers again. Nothing here can delay or
fail a webhook's answer.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from rollhook.broker import publish_jobs
from rollhook.jobs import Job
from rollhook.records.jobs import mark_dispatched, note_dispatch_failure, undispatched
from service.writelock import WriteLock

log = logging.getLogger("rollhook.publisher")

_DRAIN = object()  # "read the outbox": at start, and when the broker comes back
_STOP = object()


# Batches waiting in memory beyond this are left to the outbox (read back once caught up).
MAX_PENDING = 1_000
# Under sustained load the thread publishes at most this share of the time (with pauses of
# up to MAX_PAUSE seconds): the writer process's first duty is committing the events that
# webhooks wait for, publishing contends for the same interpreter lock, and jobs are
# already safe in the outbox.
PUBLISH_DUTY = 0.1
MAX_PAUSE = 2.0
BATCH = 500  # jobs per broker message, about (and per outbox read)


def _take_id(ids: set[str], job_id: str) -> bool:
    """Whether ``job_id`` was in ``ids`` (and remove it: each is matched once)."""
    if job_id in ids:
        ids.discard(job_id)
        return True
    return False


def probe_broker(celery: Any) -> None:
    """Raise unless the broker accepts a connection now."""
    with celery.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=3)


class Publisher:
    def __init__(
        self,
        celery: Any,
        engine: Engine,
        *,
        publish: Callable[[Any, list[str]], None] = publish_jobs,
        probe: Callable[[Any], None] = probe_broker,
        backoff: float = 5.0,
        on_result: Callable[[int, int], None] | None = None,
        on_state: Callable[[str], None] | None = None,
        lock: Path | None = None,
    ) -> None:
        self._lock = WriteLock(lock)  # shared with the other web processes' writers
        self._celery = celery
        self._engine = engine
        self._publish = publish
        self._probe = probe
        self._backoff = backoff  # after a failure, leave new jobs to the outbox this long
        self._on_result = on_result or (lambda sent, failed: None)
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="rollhook-publisher", daemon=True)
        self._stopping = threading.Event()
        self._down_until = 0.0
        self._skipped = False  # jobs were left in the outbox: read it once caught up
        self._drained: set[str] = set()  # sent by the last drain, not yet seen submitted
        self._on_state = on_state or (lambda state: None)
        self._broker_state = "unknown"

    @property
    def broker_state(self) -> str:
        """ "up", "down" or "unknown" (not tried yet), for /readyz."""
        return self._broker_state

    @broker_state.setter
    def broker_state(self, state: str) -> None:
        if state != self._broker_state:
            self._broker_state = state
            self._on_state(state)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Send what is queued (unless the broker is down), then end the thread."""
        if self._thread.is_alive():
            self._stopping.set()
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def submit(self, jobs: Sequence[Job]) -> None:
        """Queue committed jobs for the broker; never blocks, never grows without bound."""
        if self._queue.qsize() > MAX_PENDING:
            self._skipped = True
            return
        if jobs:
            self._queue.put(list(jobs))  # one item (and one wake-up) per commit

    def drain_outbox(self) -> None:
        """Send every job the outbox holds (at start, and when the broker is back)."""
        self._queue.put(_DRAIN)

    # -- the publisher thread ---------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            # Jobs left in the outbox are retried once the back-off after a failure ends.
            wait = max(0.0, self._down_until - time.monotonic()) + 0.05 if self._skipped else None
            jobs, drain, stopping = self._take(wait)
            started = time.monotonic()
            pause = 0.0
            try:
                if drain:
                    self._drained = self._drain()
                if self._drained:
                    # A drain reads jobs committed just now too: they need no second message.
                    jobs = [job for job in jobs if not _take_id(self._drained, job.id)]
                if jobs and self._send(jobs) and not self._queue.empty():
                    # Sustained load: give the event loop the interpreter most of the time.
                    busy = time.monotonic() - started
                    pause = min(MAX_PAUSE, busy * (1 - PUBLISH_DUTY) / PUBLISH_DUTY)
                if self._skipped and self._queue.empty() and started >= self._down_until:
                    self._skipped = False
                    self._drained = self._drain()
            except Exception:  # the thread must survive; the outbox still holds the jobs
                log.exception("publishing jobs failed; they stay in the outbox")
            if pause and not stopping:
                self._stopping.wait(pause)
        self._lock.close()

    def _take(self, wait: float | None) -> tuple[list[Job], bool, bool]:
        """Wait for work, then take what else is queued: (jobs, drain?, stop?)."""
        jobs: list[Job] = []
        drain = stop = False
        try:
            item = self._queue.get(timeout=wait)
        except queue.Empty:
            return jobs, drain, stop
        while True:
            if item is _STOP:
                stop = True
            elif item is _DRAIN:
                drain = True
            elif isinstance(item, list):
                jobs.extend(item)
            if stop or len(jobs) >= BATCH:
                return jobs, drain, stop
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return jobs, drain, stop

    def _drain(self) -> set[str]:
        """Send what the outbox holds; returns the ids it sent."""
        seen: set[str] = set()
        sent: set[str] = set()
        while not self._stopping.is_set():
            with self._lock.held(), self._engine.connect() as conn:
                jobs = [j for j in undispatched(conn, timedelta(0), BATCH) if j.id not in seen]
            if not jobs:
                if self.broker_state == "unknown":
                    self._check_broker()
                break
            seen.update(j.id for j in jobs)
            if not self._send(jobs, force=True):
                break
            sent.update(j.id for j in jobs)
        return sent

    def _check_broker(self) -> None:
        try:
            self._probe(self._celery)
        except Exception as exc:  # noqa: BLE001 - kombu, redis and socket errors alike
            log.warning("broker not reachable (%s); jobs wait in the outbox", type(exc).__name__)
            self.broker_state = "down"
        else:
            self.broker_state = "up"

    def _send(self, jobs: list[Job], *, force: bool = False) -> bool:
        """Publish jobs (one message) and mark them; False when the broker refused them."""
        if not force and time.monotonic() < self._down_until:
            self._skipped = True
            return False  # known to be down: these wait in the outbox
        ids = [job.id for job in jobs]
        try:
            self._publish(self._celery, [job.to_json() for job in jobs])
        except Exception as exc:  # noqa: BLE001 - kombu, redis and socket errors alike
            log.warning(
                "broker refused %d job(s) (%s); they stay in the outbox",
                len(jobs),
                type(exc).__name__,
            )
            self.broker_state = "down"
            self._down_until = time.monotonic() + self._backoff
            self._skipped = True
            with self._lock.held(), self._engine.begin() as conn:
                note_dispatch_failure(conn, ids)
            self._on_result(0, len(ids))
            return False
        self.broker_state = "up"
        with self._lock.held(), self._engine.begin() as conn:
            mark_dispatched(conn, ids)
        self._on_result(len(ids), 0)
        return True
