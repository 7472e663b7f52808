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

Several web processes (``WEB_CONCURRENCY``) share one writer when the records are a
SQLite file: the writer listens on a unix socket beside the database (``shared_address``,
mode 0600, peers of the same user only: the frames are pickles), and a web process that
finds it there sends its events to it instead of starting its own; one writer makes
larger groups and one fsync serves them all. A writer that cannot listen serves its own
web process alone, behind the write lock, as before.

Both directions carry frames: a 4-byte length and a pickle (the peers are our own
processes, over a socketpair or the socket above, never the network).
Web -> writer: the settings first, then ``("events", [(seq, NewEvent), ...])``; EOF on
the starting web process's socket means "store what you have, then stop" (the other
web processes then lose their connection, and start or find another writer). Writer ->
web: ``("ready",)`` (or ``("refused",)`` to a peer whose settings are not its own),
``("outcomes", [(seq, wire outcome), ...])`` and ``("broker", state, sent, failed)`` for
readiness and metrics.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import selectors
import signal
import socket
import struct
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Connection, Engine, make_url
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
SEND_TIMEOUT = 10.0  # a peer that reads nothing for this long is dropped
MAX_SOCKET_PATH = 107  # bytes in sun_path, its final NUL left out


def shared_address(records_url: str) -> str | None:
    """The socket of the writer shared by the web processes of one SQLite file: a file
    beside the database, so that the data directory's permissions guard it (an abstract
    socket would be open to every process in the network namespace, containers on the
    host's network included). None for other databases, a file that does not exist yet,
    or a path too long for a unix socket.
    """
    url = make_url(records_url)
    if not url.drivername.startswith("sqlite") or not url.database:
        return None
    path = os.path.abspath(url.database) + ".writer.sock"
    if not os.path.exists(url.database) or len(path.encode()) > MAX_SOCKET_PATH:
        return None
    return path


def database_identity(records_url: str) -> tuple[int, int] | None:
    """The database file's device and inode: a writer serves only the file it opened."""
    database = make_url(records_url).database
    try:
        found = os.stat(database) if database else None
    except OSError:
        return None
    return (found.st_dev, found.st_ino) if found else None


def same_user(sock: socket.socket) -> bool:
    """Whether the peer runs as this process's user (checked before reading a byte: the
    frames are pickles)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    uid: int = struct.unpack("3i", creds)[1]
    return uid == os.geteuid()


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


class Peer:
    """One web process's connection: its socket, its partial frames, its handshake."""

    def __init__(self, sock: socket.socket, frames: Frames, *, ready: bool) -> None:
        self.sock = sock
        self.frames = frames
        self.ready = ready  # the parent is; another web process once its settings match


class Writer:
    """Reads events from the web processes, commits them in groups, answers each one."""

    def __init__(
        self,
        sock: socket.socket,
        commit: GroupCommit,
        publisher: Publisher,
        frames: Frames,
        *,
        settings: WriterSettings | None = None,
        listener: socket.socket | None = None,
    ) -> None:
        self._parent = Peer(sock, frames, ready=True)  # frames may hold events already
        self._commit = commit
        self._publisher = publisher
        self._settings = settings
        self._listener = listener
        self._identity = database_identity(settings.records_url) if settings else None
        self._peers: list[Peer] = [self._parent]
        self._selector = selectors.DefaultSelector()
        self._selector.register(sock, selectors.EVENT_READ, self._parent)
        if listener is not None:
            self._selector.register(listener, selectors.EVENT_READ, None)
        self._eof = False  # the parent's EOF: store what was received, then stop
        self._send_lock = threading.Lock()  # the publisher's thread reports here too

    def send(self, message: Any) -> None:
        """To every web process (the broker's state and counts)."""
        data = frame(message)
        with self._send_lock:
            peers = [peer for peer in self._peers if peer.ready]
        for peer in peers:
            self._send_to(peer, data)

    def _send_to(self, peer: Peer, data: bytes) -> None:
        with self._send_lock:
            try:
                peer.sock.sendall(data)
            except OSError:
                if peer is self._parent:
                    self._eof = True  # the web process is gone; nothing waits for this
                else:
                    # Gone, or stuck with half a frame sent: the committing loop sees its
                    # end at the next read and forgets it (this may be the publisher's
                    # thread, which must not touch the selector).
                    with contextlib.suppress(OSError):
                        peer.sock.shutdown(socket.SHUT_RDWR)

    def _drop(self, peer: Peer) -> None:
        """Forget another web process (called with the send lock held or from the loop)."""
        if peer in self._peers:
            self._peers.remove(peer)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(peer.sock)
            peer.sock.close()

    def run(self) -> None:
        self._send_to(self._parent, frame(("ready",)))
        try:
            while not self._eof:
                for start in range(0, len(batch := self._receive()), MAX_BATCH):
                    self._store(batch[start : start + MAX_BATCH])
        finally:
            # What other web processes sent and this writer did not read is answered by
            # their connection's end: 503, and the sender delivers it again.
            with self._send_lock:
                for peer in self._peers[1:]:
                    self._drop(peer)
            if self._listener is not None:
                self._listener.close()
            self._selector.close()

    def _store(self, items: list[tuple[Peer, int, NewEvent]]) -> None:
        outcomes = self._commit.write([event for _, _, event in items])
        answers: dict[Peer, list[tuple[int, tuple[Any, ...]]]] = {}
        for (peer, seq, _), outcome in zip(items, outcomes, strict=True):
            answers.setdefault(peer, []).append((seq, to_wire(outcome)))
        for peer, answered in answers.items():
            self._send_to(peer, frame(("outcomes", answered)))
        jobs = [job for o in outcomes if isinstance(o, Queued) for job in o.jobs]
        if jobs:
            self._publisher.submit(jobs)

    def _receive(self) -> list[tuple[Peer, int, NewEvent]]:
        """Wait for events; then take, without waiting, whatever else has arrived."""
        items: list[tuple[Peer, int, NewEvent]] = []
        block = True
        while not self._eof:
            ready = self._selector.select(None if block else 0)
            if not ready:
                break
            for key, _ in ready:
                if key.data is None:
                    self._accept(cast(socket.socket, key.fileobj))
                else:
                    self._read(key.data, items)
            block = not items
        return items

    def _accept(self, listener: socket.socket) -> None:
        try:
            sock, _ = listener.accept()
        except OSError:
            return
        if not same_user(sock):
            sock.close()
            return
        sock.settimeout(SEND_TIMEOUT)
        peer = Peer(sock, Frames(), ready=False)
        with self._send_lock:
            self._peers.append(peer)
        self._selector.register(sock, selectors.EVENT_READ, peer)

    def _read(self, peer: Peer, items: list[tuple[Peer, int, NewEvent]]) -> None:
        try:
            data = peer.sock.recv(1 << 20)
        except OSError:
            data = b""
        if not data:
            if peer is self._parent:
                self._eof = True
            else:
                with self._send_lock:
                    self._drop(peer)
            return
        for message in peer.frames.feed(data):
            if peer.ready and message[0] == "events":
                items.extend((peer, seq, event) for seq, event in message[1])
            elif not peer.ready:
                self._greet(peer, message)

    def _greet(self, peer: Peer, settings: Any) -> None:
        """Serve another web process only for the same records (and the same file still)."""
        # Equal settings are WriterSettings (this module's, as the parent's were; the
        # running module is __main__, so no isinstance here).
        same = (
            settings == self._settings and database_identity(settings.records_url) == self._identity
        )
        if same:
            peer.ready = True
            self._send_to(peer, frame(("ready",)))
        else:
            self._send_to(peer, frame(("refused",)))
            with self._send_lock:
                self._drop(peer)
            log.warning("a web process with other records settings was refused")


def start_lock_path(records_url: str) -> Path | None:
    """Where web processes queue to find or start the shared writer (beside the file)."""
    database = make_url(records_url).database
    return Path(database + ".writer-start.lock") if database else None


def listen(path: str | None) -> socket.socket | None:
    """The shared writer's socket. Web processes start writers one at a time (under the
    start lock) and only when none answered here: a socket file left by one that died is
    replaced."""
    if path is None:
        return None
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        listener.bind(path)
        os.chmod(path, 0o600)
        listener.listen(64)
    except OSError as exc:
        log.warning("the records writer serves this web process alone: %s", exc)
        listener.close()
        return None
    return listener


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
    address = shared_address(settings.records_url)
    listener = listen(address)
    bound = os.stat(address).st_ino if listener is not None and address else None
    writer = Writer(sock, commit, publisher, frames, settings=settings, listener=listener)
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
        if bound is not None and address is not None:
            with contextlib.suppress(OSError):
                if os.stat(address).st_ino == bound:  # not a successor's
                    os.unlink(address)


if __name__ == "__main__":
    main()
