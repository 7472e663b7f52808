"""The request side of group commit: hand an event to the writer process, await its outcome.

A webhook's answer waits for its event's commit (``service.writer`` does the committing,
in groups). Events go to the writer a loop turn at a time: everything that the requests of
one turn of the event loop produced travels in one frame, and each answer frame wakes the
requests of a whole commit. If the writer process dies, waiting requests are answered 503
(their events may or may not be stored: the sender delivers again and a stored one is
then a duplicate) and a new writer is started.
"""

from __future__ import annotations

import asyncio
import contextlib
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
        """Start the writer process and wait until it is ready."""
        loop = asyncio.get_running_loop()
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
        self._loop = loop
        self._ready = loop.create_future()
        self._closed = loop.create_future()
        ours.setblocking(False)
        _, channel = await loop.create_unix_connection(lambda: _Channel(self), sock=ours)
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

    def received(self, message: tuple[Any, ...]) -> None:
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

    def lost(self) -> None:
        """The writer's socket closed: it ended (as asked, or by dying)."""
        self._up = False
        gone = Failed("the records writer stopped")
        for _, future in self._waiting.values():
            if not future.done():
                future.set_result(gone)
        self._waiting.clear()
        self._outgoing = []
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(RuntimeError("the records writer ended at start"))
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        if not self._stopping:
            log.error("the records writer ended; starting another in %.0f s", RESTART_AFTER)
            self._restart = asyncio.get_running_loop().create_task(self._start_again())

    async def _start_again(self) -> None:
        await asyncio.to_thread(self._reap, 10.0)
        while not self._stopping:
            await asyncio.sleep(RESTART_AFTER)
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
            self._recorder.received(message)

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self._recorder.lost()

    def send(self, data: bytes) -> None:
        if self._transport is not None and self.open:
            self._transport.write(data)

    def close_writing(self) -> None:
        if self._transport is not None and self.open and self._transport.can_write_eof():
            self._transport.write_eof()
