"""Group commit: concurrent requests' events are stored in one transaction.

A webhook is answered 202 only once its event and jobs are committed. Committing each
request on its own would cost one fsync per request; here a single writer thread takes
everything that queued up while the previous commit ran and stores it at once, then
wakes each waiting request with its own outcome. Paused and held targets are read in
that same transaction, so a pause is never read stale and costs one query per batch.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from sqlalchemy import Connection, Engine, or_, select
from sqlalchemy.exc import OperationalError

from rollhook.jobs import Job
from rollhook.records import targets as target_records
from rollhook.records.events import NewEvent, store_batch
from rollhook.records.schema import targets

log = logging.getLogger("rollhook.recorder")


@dataclass(frozen=True)
class Queued:
    event_id: str
    jobs: tuple[Job, ...]


@dataclass(frozen=True)
class Duplicate:
    event_id: str


@dataclass(frozen=True)
class Paused:
    targets: tuple[str, ...]


@dataclass(frozen=True)
class _Failed:
    error: str


Outcome = Queued | Duplicate | Paused


class StoreFailed(Exception):
    """The event could not be committed (answer 503); the sender will deliver it again."""


@dataclass
class _Pending:
    event: NewEvent
    future: asyncio.Future[Outcome | _Failed]


class Recorder:
    def __init__(
        self,
        engine: Engine,
        on_commit: Callable[[list[Job]], None],
        *,
        max_batch: int = 500,
        timeout: float = 8.0,
    ) -> None:
        self._engine = engine
        self._on_commit = on_commit
        self._max_batch = max_batch
        self._timeout = timeout  # under GitHub's 10 s, after which it gives up anyway
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="rollhook-recorder", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread.start()

    def stop(self) -> None:
        """Store everything already submitted, then end the writer thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    async def record(self, event: NewEvent) -> Outcome:
        """Store one event with its jobs; returns once committed (or raises StoreFailed)."""
        if self._loop is None or not self._thread.is_alive():
            raise StoreFailed("the recorder is not running")
        future: asyncio.Future[Outcome | _Failed] = self._loop.create_future()
        self._queue.put(_Pending(event, future))
        try:
            outcome = await asyncio.wait_for(future, self._timeout)
        except TimeoutError:
            raise StoreFailed("the records database did not answer in time") from None
        if isinstance(outcome, _Failed):
            raise StoreFailed(outcome.error)
        return outcome

    # -- the writer thread ------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self._write(batch)

    def _write(self, batch: list[_Pending]) -> None:
        try:
            outcomes = self._commit([p.event for p in batch])
        except OperationalError as exc:
            # One line: the driver's own message says what is wrong (locked, gone, full).
            log.error(  # noqa: TRY400
                "records database unavailable; %d event(s) not stored: %s", len(batch), exc.orig
            )
            outcomes = [_Failed("records database unavailable")] * len(batch)
        except Exception:  # noqa: BLE001 - isolate the bad event, whatever it raised
            # One bad event must not fail the others that happened to share its commit.
            outcomes = [self._commit_alone(p.event) for p in batch]
        if self._loop is not None:
            self._loop.call_soon_threadsafe(_resolve, batch, outcomes)
        jobs = [job for o in outcomes if isinstance(o, Queued) for job in o.jobs]
        if jobs:
            self._on_commit(jobs)

    def _commit_alone(self, event: NewEvent) -> Outcome | _Failed:
        try:
            return self._commit([event])[0]
        except Exception:  # the writer thread must outlive any one bad event
            log.exception("event for delivery %s not stored", event.delivery_id)
            return _Failed("the event could not be stored")

    def _commit(self, events: Sequence[NewEvent]) -> list[Outcome | _Failed]:
        outcomes: list[Outcome | _Failed] = []
        with self._engine.begin() as conn:
            paused, held = _paused_and_held(conn)
            keep: list[NewEvent] = []
            for event in events:
                # Pausing freezes automatic deployments; what a person asks for on the
                # API (a rollback during the incident, say) still goes through.
                stopped = [j.target for j in event.jobs if j.target in paused and not j.manual]
                if stopped and len(stopped) == len(event.jobs):
                    outcomes.append(Paused(tuple(sorted(stopped))))
                    continue
                keep.append(
                    replace(
                        event,
                        jobs=[j for j in event.jobs if j.target not in stopped],
                        summary={**event.summary, "paused": sorted(stopped)},
                    )
                    if stopped
                    else event
                )
                outcomes.append(Queued(event.id, ()))  # placeholder, replaced below
            stored = iter(store_batch(conn, keep))
            for i, outcome in enumerate(outcomes):
                if isinstance(outcome, Queued):
                    result = next(stored)
                    outcomes[i] = (
                        Duplicate(result.event_id)
                        if result.duplicate
                        else Queued(result.event_id, result.jobs)
                    )
            # A new event for a target held after a manual rollback lets it deploy again.
            for name in sorted(held & _deploy_targets(outcomes)):
                target_records.set_held(conn, name, False)
        return outcomes


def _paused_and_held(conn: Connection) -> tuple[set[str], set[str]]:
    rows = conn.execute(
        select(targets.c.name, targets.c.paused, targets.c.held).where(
            or_(targets.c.paused, targets.c.held)
        )
    )
    paused: set[str] = set()
    held: set[str] = set()
    for name, is_paused, is_held in rows:
        if is_paused:
            paused.add(name)
        if is_held:
            held.add(name)
    return paused, held


def _deploy_targets(outcomes: Sequence[Outcome | _Failed]) -> set[str]:
    return {
        job.target
        for o in outcomes
        if isinstance(o, Queued)
        for job in o.jobs
        if job.action == "deploy"
    }


def _resolve(batch: list[_Pending], outcomes: Sequence[Outcome | _Failed]) -> None:
    for pending, outcome in zip(batch, outcomes, strict=True):
        if not pending.future.done():  # the request may have timed out or gone away
            pending.future.set_result(outcome)
