"""A running deployment's journal: its steps and log, written to the record as they happen.

Every write is fenced by the lease token the deployment runs under. When a write finds
the token gone, another worker has taken the target over: :class:`LeaseLost` stops this
run at once, before it can touch the app again. The journal is also what recovery reads
to decide how far a dead worker got.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from rollhook.records import deployments
from rollhook.records.deployments import DeploymentRecord
from rollhook.records.schema import utcnow
from workers import logs
from workers.errors import LeaseLost
from workers.procs import ProcessGroup

LOG_TAIL_CHARS = 64_000
_FLUSH_EVERY = 1.0

logger = logging.getLogger("rollhook.deploy")


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


class Journal:
    def __init__(self, records: Engine, record: DeploymentRecord, token: int) -> None:
        self.records = records
        self.deployment_id = record.id
        self.target = record.target
        self.token = token
        self.delivery_id = (record.trigger or {}).get("delivery_id") or "-"
        self.steps: list[dict[str, Any]] = list(record.steps or [])
        self._log = record.log or ""
        self._children: list[dict[str, Any]] = list(record.children or [])
        self._lock = threading.Lock()
        self._dirty = False
        self._last_flush = time.monotonic()

    # -- writing ---------------------------------------------------------------------

    def update(self, **values: Any) -> None:
        """Write fields of the record now; LeaseLost if the target was taken over."""
        with self.records.begin() as conn:
            if not deployments.update_fenced(conn, self.deployment_id, self.token, **values):
                raise LeaseLost(f"{self.deployment_id}: lease lost, another worker took over")

    def flush(self) -> None:
        with self._lock:
            values = {"steps": list(self.steps), "log": self._log}
            self._dirty = False
            self._last_flush = time.monotonic()
        self.update(**values)

    def log(self, message: str, *, level: int = logging.INFO) -> None:
        stamp = utcnow().strftime("%H:%M:%S")
        line = f"{stamp} {message}"
        with logs.about(self.target, self.deployment_id, self.delivery_id):
            logger.log(level, "%s", message)
        with self._lock:
            self._log = (self._log + line + "\n")[-LOG_TAIL_CHARS:]
            self._dirty = True
            due = time.monotonic() - self._last_flush > _FLUSH_EVERY
        if due:
            self.flush()

    @contextmanager
    def step(self, name: str) -> Iterator[dict[str, Any]]:
        """Journal one step: running, then ok or failed (with the error's message)."""
        step: dict[str, Any] = {
            "name": name,
            "outcome": "running",
            "started_at": _iso(utcnow()),
            "finished_at": None,
            "detail": None,
        }
        with self._lock:
            self.steps.append(step)
        self.flush()
        try:
            yield step
        except LeaseLost:
            raise
        except BaseException as exc:
            step.update(
                outcome="failed",
                finished_at=_iso(utcnow()),
                detail=step.get("detail") or str(exc) or type(exc).__name__,
            )
            self._safe_flush()
            raise
        step.update(
            outcome="ok" if step["outcome"] == "running" else step["outcome"],
            finished_at=_iso(utcnow()),
        )
        self.flush()

    def skip(self, name: str, detail: str) -> None:
        now = _iso(utcnow())
        with self._lock:
            self.steps.append(
                {
                    "name": name,
                    "outcome": "skipped",
                    "started_at": now,
                    "finished_at": now,
                    "detail": detail,
                }
            )
        self.flush()

    def _safe_flush(self) -> None:
        with suppress(LeaseLost):
            self.flush()

    # -- child processes -------------------------------------------------------------

    def add_child(self, group: ProcessGroup, what: str) -> None:
        """Remember a child's process group so recovery can end it if we die."""
        with self._lock:
            self._children.append({**group.to_dict(), "what": what, "at": _iso(utcnow())})
            children = list(self._children)
        self.update(children=children)

    # -- reading ---------------------------------------------------------------------

    def reached(self, *names: str) -> bool:
        """Whether any of these steps was started (by this run or a dead one)."""
        return any(step["name"] in names for step in self.steps)

    def left_running(self, name: str) -> bool:
        """Whether the last step of this name never finished: a dead worker was inside it
        (a step this run is in is never asked about: its outcome is written on the way out)."""
        last = next((step for step in reversed(self.steps) if step["name"] == name), None)
        return last is not None and last["outcome"] == "running"

    @property
    def text(self) -> str:
        return self._log
