"""Holding a target: the records lease (across processes and hosts) plus a host flock.

The lease is renewed by a heartbeat thread while a deployment runs. If renewal fails the
lease is lost: the heartbeat raises the flag the pipeline checks between steps, and the
journal's fenced writes refuse to change the record. The flock is released by the kernel
when a worker dies, so two processes on this host never drive compose for one project at
once, even in the seconds around a lease expiry.
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from rollhook.records import targets as target_records

logger = logging.getLogger("rollhook.lease")


class Heartbeat:
    def __init__(self, records: Engine, target: str, token: int, ttl: float) -> None:
        self.records, self.target, self.token, self.ttl = records, target, token, ttl
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{target}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.ttl)

    def _run(self) -> None:
        renewed_at = time.monotonic()
        while not self._stop.wait(self.ttl / 3):
            try:
                with self.records.begin() as conn:
                    renewed = target_records.renew_lease(conn, self.target, self.token, self.ttl)
            except SQLAlchemyError:  # a database hiccup; the next beat tries again...
                if time.monotonic() - renewed_at < self.ttl:
                    logger.warning("lease renewal for %s failed; retrying", self.target)
                    continue
                # ...but past a whole lease period another worker may have taken over.
                logger.exception(
                    "lease on %s not renewed for %.0fs; stopping", self.target, self.ttl
                )
                self.lost.set()
                return
            renewed_at = time.monotonic()
            if not renewed:
                logger.error("lease on %s lost (token %s)", self.target, self.token)
                self.lost.set()
                return

    def cancelled(self) -> bool:
        return self.lost.is_set()


@contextmanager
def host_lock(path: Path, timeout: float) -> Iterator[bool]:
    """Take an exclusive flock, waiting up to `timeout`; yields whether it was taken."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    yield False
                    return
                time.sleep(0.1)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
