"""One SQLite writer at a time across the web processes, queued by the kernel.

SQLite lets one connection write at a time. One that finds the database locked sleeps
and tries again (after 1, 2, 5, 10 ms and more), which under load adds tens of
milliseconds to a webhook's answer and stops the group commit from growing its batches.
The web processes' writers (each process's recorder and publisher) take this lock around
their transactions instead: ``flock`` queues them in the kernel and hands the lock on the
moment it is released. Workers and beat write rarely and still rely on SQLite's busy
timeout; PostgreSQL needs none of this (no lock = ``WriteLock(None)``).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine


class WriteLock:
    """An exclusive lock on a file, for one thread (each writer thread has its own).

    flock belongs to an open file description: two threads sharing one would both "hold"
    the lock at once, so each WriteLock opens the file for itself.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fd: int | None = None

    @contextmanager
    def held(self) -> Iterator[None]:
        if self.path is None:
            yield
            return
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)  # waits in the kernel, without the GIL
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def lock_path(engine: Engine) -> Path | None:
    """The lock file beside a SQLite database; None for other databases."""
    if engine.dialect.name != "sqlite" or not engine.url.database:
        return None
    database = Path(engine.url.database)
    return database.with_name(database.name + ".writers.lock")
