"""Message spacing per Slack channel, shared by every rollhook process through the records.

Slack allows about one message per second per channel and answers bursts with 429; an
app that keeps going after that risks being disabled. The web, worker and beat processes
are separate and Redis may not exist, so the shared clock is a row in ``notify_state``:
``slot:<key>`` holds the earliest time the next message may leave. Taking a turn reads
and advances it in one write transaction (SQLite takes its write lock at BEGIN; on
PostgreSQL the row is locked ``FOR UPDATE``), so two processes never get the same slot.
Turns are handed out in order, and each caller then sleeps until its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from rollhook.records import notify_state
from workers.notify.errors import TransientError


@dataclass(frozen=True)
class SlotLimiter:
    engine: Engine
    interval: float = 1.0
    max_wait: float = 10.0
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep

    def wait_turn(self, key: str) -> float:
        """Take the next free slot for ``key`` and sleep until it; return the slot time.

        A slot further away than ``max_wait`` is not taken: TransientError tells the
        delivery to go back to the queue rather than hold a worker that long.
        """
        slot = self._reserve(key)
        delay = slot - self.clock()
        if delay > 0:
            self.sleep(delay)
        return slot

    def back_off(self, key: str, seconds: float) -> None:
        """Slack said 429: nobody posts to ``key`` before ``seconds`` from now."""
        until = self.clock() + seconds
        self._write(key, lambda current: max(current, until), limit=None)

    def _reserve(self, key: str) -> float:
        now = self.clock()
        return self._write(key, lambda current: max(current, now), limit=now + self.max_wait)

    def _write(self, key: str, pick: Callable[[float], float], limit: float | None) -> float:
        name = f"slot:{key}"[:120]
        for _ in range(3):
            try:
                with self.engine.begin() as conn:
                    held = notify_state.read(conn, name, lock=True)
                    slot = pick(float((held or {}).get("next_at", 0.0)))
                    if limit is not None and slot > limit:
                        raise TransientError(
                            f"slack: channel busy for {slot - self.clock():.0f}s",
                            slot - self.clock(),
                        )
                    following = slot + self.interval if limit is not None else slot
                    notify_state.write(conn, name, {"next_at": following}, create=held is None)
                    return slot
            except IntegrityError:
                continue  # another process created the row first (PostgreSQL): read it again
        raise TransientError("slack: could not take a rate-limit slot")
