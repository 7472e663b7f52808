"""The request side of group commit: hand an event to the writer process, await its outcome.

A webhook's answer waits for its event's commit (``service.writer`` does the committing,
in groups). Events go to the writer a loop turn at a time: everything that the requests of
one turn of the event loop produced travels in one frame, and each answer frame wakes the
requests of a whole commit. If the writer process dies, waiting requests are answered 503
(their events may or may not be stored: the sender delivers again and a stored one is
then a duplicate) and a new writer is started.

With SQLite records, the web processes share one writer: each looks for it first (on its
socket beside the database, ``service.writer.shared_address``) and starts one only when there is
none; a lock file beside the database makes them look one at a time, so that processes
started together find the first one's writer rather than each starting their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from rollhook.events import NewEvent
from service.writer import (
    Duplicate,
    Failed,
    Frames,
    Paused,
    Queued,
    Recorded,
    WriterSettings,
    frame,
    from_wire,
    shared_address,
    start_lock_path,
)

__all__ = ["Duplicate", "Paused", "Queued", "Recorded", "Recorder", "StoreFailed"]

log = logging.getLogger("rollhook.recorder")

RESTART_AFTER = 1.0  # seconds between a writer's death and its successor
START_TIMEOUT = 60.0


class StoreFailed(Exception):
    """The event could not be committed (answer 503); the sender will deliver it again."""


class Recorder:
    def __init__(
        self,
        settings: WriterSettings,
        *,
        on_dispatch: Callable[[int, int], None] | None = None,
        on_commit: Callable[[int], None] | None = None,
        timeout: float = 8.0,
    ) -> None:
        self._settings = settings
        self._on_dispatch = on_dispatch or (lambda sent, failed: None)  # (sent, refused)
        self._on_commit = on_commit or (lambda events: None)  # events per commit
        self._timeout = timeout  # under GitHub's 10 s, after which it gives up anyway
        self._seq = itertools.count()
        self._waiting: dict[int, tuple[NewEvent, asyncio.Future[Recorded | Failed]]] = {}
        self._outgoing: list[tuple[int, NewEvent]] = []
        self._channel: _Channel | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[None] | None = None
        self._stopping = False
        self._up = False  # the writer said it is ready, and its socket is open
        self._restart: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.broker_state = "unknown"  # "up" | "down" | "unknown", for /readyz

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Find the shared writer, or start a writer process; wait until it is ready."""
        self._loop = asyncio.get_running_loop()
        address = shared_address(self._settings.records_url)
        lock = start_lock_path(self._settings.records_url) if address is not None else None
        fd = None
        if lock is not None:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        try:
            if address is not None and await self._join(address):
                return
            await self._spawn()
        finally:
            if fd is not None:
                os.close(fd)  # and with it the lock

    async def _join(self, address: str) -> bool:
        """Connect to another web process's writer; False when there is none to use."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError:
            sock.close()
            return False
        self._process = None
        try:
            await self._open(sock)
        except RuntimeError as exc:
            log.warning("not using the shared records writer: %s", exc)
            channel, self._channel = self._channel, None  # its end is no writer's loss
            if channel is not None:
                channel.abort()
            return False
        return True

    async def _spawn(self) -> None:
        ours, theirs = socket.socketpair()
        # The child imports service.writer from wherever this process found it.
        paths = [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]
        env = os.environ | {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}
        with theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "service.writer", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        ours.setblocking(False)
        await self._open(ours)

    async def _open(self, sock: socket.socket) -> None:
        """Hand the settings over the socket and wait for the writer's ready."""
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._closed = loop.create_future()
        _, channel = await loop.create_unix_connection(lambda: _Channel(self), sock=sock)
        self._channel = channel
        channel.send(frame(self._settings))
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), START_TIMEOUT)
        except TimeoutError:
            raise RuntimeError("the records writer did not start") from None

    async def stop(self) -> None:
        """Let the writer store what it was given, then wait for it to end."""
        self._stopping = True
        if self._restart is not None:
            self._restart.cancel()
        self._flush()
        if self._channel is not None and self._closed is not None:
            self._channel.close_writing()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._closed), 60)
        await asyncio.to_thread(self._reap, 60.0)

    def _reap(self, timeout: float) -> None:
        process = self._process
        if process is None:
            return
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("the records writer did not stop; killing it")  # noqa: TRY400
            process.kill()
            process.wait()

    # -- requests -----------------------------------------------------------------------

    async def record(self, event: NewEvent) -> Recorded:
        """Store one event with its jobs; returns once committed (or raises StoreFailed)."""
        loop = self._loop
        if not self._up or self._stopping or loop is None:
            raise StoreFailed("the records writer is not running")
        future: asyncio.Future[Recorded | Failed] = loop.create_future()
        seq = next(self._seq)
        self._waiting[seq] = (event, future)
        if not self._outgoing:
            loop.call_soon(self._flush)  # once this turn of the loop is over
        self._outgoing.append((seq, event))
        timer = loop.call_later(self._timeout, self._give_up, seq)
        try:
            outcome = await future
        finally:
            timer.cancel()
        if isinstance(outcome, Failed):
            raise StoreFailed(outcome.error)
        return outcome

    def _flush(self) -> None:
        if self._outgoing and self._channel is not None and self._channel.open:
            self._channel.send(frame(("events", self._outgoing)))
        self._outgoing = []

    def _give_up(self, seq: int) -> None:
        waiting = self._waiting.pop(seq, None)
        if waiting is not None and not waiting[1].done():
            waiting[1].set_result(Failed("the records database did not answer in time"))

    # -- the writer's messages ----------------------------------------------------------

    def received(self, message: tuple[Any, ...], channel: _Channel) -> None:
        if channel is not self._channel:  # an earlier writer's last words
            return
        kind = message[0]
        if kind == "outcomes":
            self._on_commit(len(message[1]))
            waiting = self._waiting
            for seq, wire in message[1]:
                entry = waiting.pop(seq, None)
                if entry is not None and not entry[1].done():
                    entry[1].set_result(from_wire(wire, entry[0]))
        elif kind == "broker":
            _, self.broker_state, sent, failed = message
            if sent or failed:
                self._on_dispatch(sent, failed)
        elif kind == "ready" and self._ready is not None and not self._ready.done():
            self._up = True
            self._ready.set_result(None)
        elif kind == "refused" and self._ready is not None and not self._ready.done():
            self._ready.set_exception(RuntimeError("it serves other records settings"))

    def lost(self, channel: _Channel) -> None:
        """The writer's socket closed: it ended (as asked, or by dying)."""
        if channel is not self._channel:  # one given up on at start (refused)
            return
        self._up = False
        gone = Failed("the records writer stopped")
        for _, future in self._waiting.values():
            if not future.done():
                future.set_result(gone)
        self._waiting.clear()
        self._outgoing = []
        starting = self._ready is not None and not self._ready.done()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(RuntimeError("the records writer ended at start"))
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        if not self._stopping and not starting:  # a start in progress tells its caller
            log.error("the records writer ended; finding or starting another")
            self._restart = asyncio.get_running_loop().create_task(self._start_again())

    async def _start_again(self) -> None:
        # Another web process's writer ends with that process (a restart, say): find or
        # start the next one at once, as the others do. Our own child's death waits a
        # moment, so that a writer that cannot start is not started in a tight loop.
        pause = RESTART_AFTER if self._process is not None else 0.0
        await asyncio.to_thread(self._reap, 10.0)
        while not self._stopping:
            await asyncio.sleep(pause)
            pause = RESTART_AFTER
            try:
                await self.start()
            except (OSError, RuntimeError) as exc:
                log.error("starting the records writer failed: %s", exc)  # noqa: TRY400
            else:
                log.info("records writer started again")
                return


class _Channel(asyncio.Protocol):
    """The web process's end of the socket to the writer."""

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder
        self._frames = Frames()
        self._transport: asyncio.WriteTransport | None = None
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.WriteTransport, transport)
        self.open = True

    def data_received(self, data: bytes) -> None:
        for message in self._frames.feed(data):
            self._recorder.received(message, self)

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self._recorder.lost(self)

    def send(self, data: bytes) -> None:
        if self._transport is not None and self.open:
            self._transport.write(data)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def close_writing(self) -> None:
        if self._transport is not None and self.open and self._transport.can_write_eof():
            self._transport.write_eof()
