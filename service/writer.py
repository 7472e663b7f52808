"""The records writer: a process beside the web process that commits events in groups.

A webhook is answered 202 only once its event and jobs are committed. Committing each
request on its own would cost one fsync per request; the writer takes everything that
arrived while the previous commit ran, stores it in one transaction and sends each
request its own outcome. Paused and held targets are read in that same transaction, so
a pause is never read stale and costs one query per batch. The outbox's fast path (the
publisher) runs here too, on a thread of its own, so that a slow broker delays nothing.

Why a process and not a thread of the web process: the event loop spends its time in
Python (parsing, verifying, answering); a writer thread contended with it for the
interpreter lock at every SQLite call and every hand-over, which more than doubled the
loop's CPU time per request (see bench/ingress.py). Over a socket, the loop only writes
and reads bytes, a batch at a time.

Both directions carry frames: a 4-byte length and a pickle (the peer is our own child
over a socketpair, never the network). Web -> writer: the settings first, then
``("events", [(seq, NewEvent), ...])``; EOF means "store what you have, then stop".
Writer -> web: ``("ready",)``, ``("outcomes", [(seq, wire outcome), ...])`` and
``("broker", state, sent, failed)`` for readiness and metrics.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

from rollhook.broker import make_celery
from rollhook.events import NewEvent
from rollhook.jobs import Job
from rollhook.records import db
from rollhook.records import targets as target_records
from rollhook.records.events import store_batch
from service import logs
from service.publisher import Publisher
from service.writelock import WriteLock, lock_path

log = logging.getLogger("rollhook.writer")

MAX_BATCH = 500  # events per transaction


# -- outcomes -----------------------------------------------------------------------------


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
class Failed:
    error: str


Recorded = Queued | Duplicate | Paused  # what storing an event came to


def to_wire(outcome: Recorded | Failed) -> tuple[Any, ...]:
    """A small tuple for the web process, which still holds the event and its jobs."""
    if isinstance(outcome, Queued):
        return ("queued", outcome.event_id, tuple(job.id for job in outcome.jobs))
    if isinstance(outcome, Duplicate):
        return ("duplicate", outcome.event_id)
    if isinstance(outcome, Paused):
        return ("paused", outcome.targets)
    return ("failed", outcome.error)


def from_wire(wire: tuple[Any, ...], event: NewEvent) -> Recorded | Failed:
    kind = wire[0]
    if kind == "queued":
        stored = set(wire[2])
        return Queued(wire[1], tuple(job for job in event.jobs if job.id in stored))
    if kind == "duplicate":
        return Duplicate(wire[1])
    if kind == "paused":
        return Paused(tuple(wire[1]))
    return Failed(str(wire[1]))


# -- frames ---------------------------------------------------------------------------------


def frame(message: Any) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return len(body).to_bytes(4, "big") + body


class Frames:
    """Bytes in, whole messages out."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        buffer = self._buffer
        buffer += data
        messages = []
        start = 0
        while len(buffer) - start >= 4:
            size = int.from_bytes(buffer[start : start + 4], "big")
            end = start + 4 + size
            if end > len(buffer):
                break
            # Only our own child process is at the other end of this socketpair.
            messages.append(pickle.loads(buffer[start + 4 : end]))  # noqa: S301
            start = end
        del buffer[:start]
        return messages


# -- group commit ---------------------------------------------------------------------------


class GroupCommit:
    """Stores a batch of events in one transaction; one bad event fails only itself."""

    def __init__(self, engine: Engine, lock: Path | None = None) -> None:
        self._engine = engine
        self._lock = WriteLock(lock)  # shared with other web processes' writers
        # One connection for as long as it works: a check-out from the pool and back
        # costs as much as storing a dozen events.
        self._conn: Connection | None = None

    def close(self) -> None:
        self._drop_connection()
        self._lock.close()

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # it may be broken: that is why it goes
                self._conn.close()
            self._conn = None

    def write(self, events: Sequence[NewEvent]) -> list[Recorded | Failed]:
        try:
            return self._commit(events)
        except OperationalError as exc:
            self._drop_connection()
            # One line: the driver's own message says what is wrong (locked, gone, full).
            log.error(  # noqa: TRY400
                "records database unavailable; %d event(s) not stored: %s", len(events), exc.orig
            )
            return [Failed("records database unavailable")] * len(events)
        except Exception:  # noqa: BLE001 - isolate the bad event, whatever it raised
            # One bad event must not fail the others that happened to share its commit.
            return [self._commit_alone(event) for event in events]

    def _commit_alone(self, event: NewEvent) -> Recorded | Failed:
        try:
            return self._commit([event])[0]
        except Exception:  # the writer must outlive any one bad event
            delivery = logs.printable(event.delivery_id or "-")
            log.exception("event for delivery %s not stored", delivery)
            return Failed("the event could not be stored")

    def _commit(self, events: Sequence[NewEvent]) -> list[Recorded | Failed]:
        outcomes: list[Recorded | Failed] = []
        if self._conn is None:
            self._conn = self._engine.connect()
        conn = self._conn
        with self._lock.held(), conn.begin():
            paused, held = target_records.paused_and_held(conn)
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
            for name in sorted(held & _deploy_targets(outcomes) if held else ()):
                target_records.set_held(conn, name, False)
        return outcomes


def _deploy_targets(outcomes: Sequence[Recorded | Failed]) -> set[str]:
    return {
        job.target
        for o in outcomes
        if isinstance(o, Queued)
        for job in o.jobs
        if job.action == "deploy"
    }


# -- the process ----------------------------------------------------------------------------


@dataclass(frozen=True)
class WriterSettings:
    """What the writer needs, sent over the socket (URLs may hold passwords: never argv)."""

    records_url: str
    broker_url: str


class Writer:
    """Reads events from the web process, commits them in groups, answers each one."""

    def __init__(
        self, sock: socket.socket, commit: GroupCommit, publisher: Publisher, frames: Frames
    ) -> None:
        self._sock = sock
        self._commit = commit
        self._publisher = publisher
        self._frames = frames  # may hold bytes that came after the settings
        self._eof = False
        self._send_lock = threading.Lock()  # the publisher's thread reports here too

    def send(self, message: Any) -> None:
        with self._send_lock:
            try:
                self._sock.sendall(frame(message))
            except OSError:
                self._eof = True  # the web process is gone; nothing waits for this

    def run(self) -> None:
        self.send(("ready",))
        while not self._eof:
            for start in range(0, len(batch := self._receive()), MAX_BATCH):
                self._store(batch[start : start + MAX_BATCH])

    def _store(self, items: list[tuple[int, NewEvent]]) -> None:
        outcomes = self._commit.write([event for _, event in items])
        self.send(
            ("outcomes", [(seq, to_wire(o)) for (seq, _), o in zip(items, outcomes, strict=True)])
        )
        jobs = [job for o in outcomes if isinstance(o, Queued) for job in o.jobs]
        if jobs:
            self._publisher.submit(jobs)

    def _receive(self) -> list[tuple[int, NewEvent]]:
        """Wait for events; then take, without waiting, whatever else has arrived."""
        items: list[tuple[int, NewEvent]] = []
        block = True
        while not self._eof:
            try:
                data = self._sock.recv(1 << 20, 0 if block else socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self._eof = True
                break
            for message in self._frames.feed(data):
                if message[0] == "events":
                    items.extend(message[1])
            block = not items
        return items


def main() -> None:
    """``python -m service.writer FD``: started by the web process, ends at EOF on FD."""
    # The web process decides when this process ends (EOF on the socket): a Ctrl-C or a
    # SIGTERM sent to the whole group must not drop events that the web process has
    # handed over and is waiting for.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The publisher's thread holds the interpreter lock for a while per message; the
    # committing thread, whose commits the webhooks' answers wait for, takes it back
    # after at most 1 ms instead of 5.
    sys.setswitchinterval(0.001)
    logs.configure()
    sock = socket.socket(fileno=int(sys.argv[1]))
    frames = Frames()
    received: list[Any] = []
    while not received:  # the first message is the settings; events wait for "ready"
        data = sock.recv(1 << 16)
        if not data:
            return
        received = frames.feed(data)
    settings: WriterSettings = received[0]
    engine = db.make_engine(settings.records_url)
    celery = make_celery(settings.broker_url)
    lock = lock_path(engine)
    writer: Writer | None = None

    def tell_web(sent: int, failed: int) -> None:
        if writer is not None:
            writer.send(("broker", publisher.broker_state, sent, failed))

    publisher = Publisher(
        celery,
        engine,
        on_result=tell_web,
        on_state=lambda state: tell_web(0, 0),
        lock=lock,
    )
    commit = GroupCommit(engine, lock)
    writer = Writer(sock, commit, publisher, frames)
    publisher.start()
    publisher.drain_outbox()
    try:
        writer.run()
    finally:
        publisher.stop()  # sends what is queued, unless the broker is down
        commit.close()
        celery.close()
        engine.dispose()
        sock.close()


if __name__ == "__main__":
    main()
