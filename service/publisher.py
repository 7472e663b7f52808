"""Hands committed jobs to the broker from a background thread: the outbox's fast path.

A job is already stored in the outbox when it reaches this thread, so a broker outage
costs nothing but latency: jobs that could not be sent stay undispatched, beat
re-publishes them, and this thread drains the outbox itself once the broker answers
again. Nothing here can delay or fail a webhook's answer.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine

from rollhook.broker import publish_job
from rollhook.jobs import Job
from rollhook.records.events import mark_dispatched, note_dispatch_failure, undispatched

log = logging.getLogger("rollhook.publisher")

_DRAIN = object()  # "read the outbox": at start, and when the broker comes back
_STOP = object()


# Jobs waiting in memory beyond this are left to the outbox (read back once caught up).
MAX_PENDING = 10_000
# Under sustained load the thread publishes at most this share of the time (with pauses of
# up to MAX_PAUSE seconds): the process's first duty is answering webhooks, publishing
# contends for the same interpreter lock, and jobs are already safe in the outbox.
PUBLISH_DUTY = 0.1
MAX_PAUSE = 2.0
BATCH = 500


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
        publish: Callable[[Any, str], None] = publish_job,
        probe: Callable[[Any], None] = probe_broker,
        backoff: float = 5.0,
        on_result: Callable[[int, int], None] | None = None,
    ) -> None:
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
        self.broker_state = "unknown"  # "up" | "down" | "unknown", for /readyz

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
        for job in jobs:
            self._queue.put(job)

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
                    self._drain()
                if jobs and self._send(jobs) and not self._queue.empty():
                    # Sustained load: give the event loop the interpreter most of the time.
                    busy = time.monotonic() - started
                    pause = min(MAX_PAUSE, busy * (1 - PUBLISH_DUTY) / PUBLISH_DUTY)
                if self._skipped and self._queue.empty() and started >= self._down_until:
                    self._skipped = False
                    self._drain()
            except Exception:  # the thread must survive; the outbox still holds the jobs
                log.exception("publishing jobs failed; they stay in the outbox")
            if pause and not stopping:
                self._stopping.wait(pause)

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
            elif isinstance(item, Job):
                jobs.append(item)
            if stop or len(jobs) >= BATCH:
                return jobs, drain, stop
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return jobs, drain, stop

    def _drain(self) -> None:
        seen: set[str] = set()
        while not self._stopping.is_set():
            with self._engine.connect() as conn:
                jobs = [j for j in undispatched(conn, timedelta(0), BATCH) if j.id not in seen]
            if not jobs:
                if self.broker_state == "unknown":
                    self._check_broker()
                return
            seen.update(j.id for j in jobs)
            if not self._send(jobs, force=True):
                return

    def _check_broker(self) -> None:
        try:
            self._probe(self._celery)
        except Exception as exc:  # noqa: BLE001 - kombu, redis and socket errors alike
            log.warning("broker not reachable (%s); jobs wait in the outbox", type(exc).__name__)
            self.broker_state = "down"
        else:
            self.broker_state = "up"

    def _send(self, jobs: list[Job], *, force: bool = False) -> bool:
        """Publish jobs and mark the sent ones; False when the broker refused them."""
        if not force and time.monotonic() < self._down_until:
            self._skipped = True
            return False  # known to be down: these wait in the outbox
        sent: list[str] = []
        failed: list[str] = []
        for job in jobs:
            if failed:
                failed.append(job.id)  # one refusal is enough: do not wait on each
                continue
            try:
                self._publish(self._celery, job.to_json())
                sent.append(job.id)
            except Exception as exc:  # noqa: BLE001 - kombu, redis and socket errors alike
                log.warning(
                    "broker refused job %s (%s); it stays in the outbox", job.id, type(exc).__name__
                )
                failed.append(job.id)
        if failed:
            self.broker_state = "down"
            self._down_until = time.monotonic() + self._backoff
            self._skipped = True
        elif sent:
            self.broker_state = "up"
        with self._engine.begin() as conn:
            mark_dispatched(conn, sent)
            note_dispatch_failure(conn, failed)
        self._on_result(len(sent), len(failed))
        return not failed
