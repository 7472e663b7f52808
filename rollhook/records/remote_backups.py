"""Off-host backups per target: the schedule's next run, the last snapshot and drill.

A snapshot is *claimed* before it runs (``running_since``), so a second copy of the task
(beat's next tick, a retried message) finds it taken; a claim older than ``stale`` is a
dead worker's and may be taken again. Every outcome, scheduled or not (a deployment's
backup sent off-host, ``rollhook backup --remote``), lands in the same columns: they say
when the target's data last left the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from rollhook.records.schema import remote_backups, utcnow


@dataclass(frozen=True)
class RemoteBackupState:
    target: str
    schedule: str | None = None
    scheduled_since: datetime | None = None
    next_due_at: datetime | None = None
    running_since: datetime | None = None
    last_attempt_at: datetime | None = None
    last_success_at: datetime | None = None
    last_snapshot_id: str | None = None
    last_duration: float | None = None
    last_size: int | None = None
    last_added: int | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    failures: int = 0
    stale_told_at: datetime | None = None
    drill_schedule: str | None = None
    drill_due_at: datetime | None = None
    drill_at: datetime | None = None
    drill_ok: bool | None = None
    drill_snapshot_id: str | None = None
    drill_detail: str | None = None
    updated_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Any) -> RemoteBackupState:
        return cls(**row._mapping)


def ensure(conn: Connection, target: str) -> None:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(
        dialect.insert(remote_backups)
        .values(target=target, failures=0)
        .on_conflict_do_nothing(index_elements=["target"])
    )


def get(conn: Connection, target: str) -> RemoteBackupState | None:
    row = conn.execute(select(remote_backups).where(remote_backups.c.target == target)).first()
    return None if row is None else RemoteBackupState.from_row(row)


def all_states(conn: Connection) -> dict[str, RemoteBackupState]:
    return {r.target: RemoteBackupState.from_row(r) for r in conn.execute(select(remote_backups))}


def _set(conn: Connection, target: str, **values: Any) -> int:
    query = update(remote_backups).where(remote_backups.c.target == target)
    return conn.execute(query.values(**values, updated_at=utcnow())).rowcount


def set_schedule(
    conn: Connection, target: str, schedule: str | None, next_due: datetime | None, now: datetime
) -> None:
    """A new (or removed) snapshot schedule; staleness counts from ``now`` until a success."""
    ensure(conn, target)
    _set(conn, target, schedule=schedule, next_due_at=next_due, scheduled_since=now)


def set_drill_schedule(
    conn: Connection, target: str, schedule: str | None, due: datetime | None
) -> None:
    ensure(conn, target)
    _set(conn, target, drill_schedule=schedule, drill_due_at=due)


def claim(conn: Connection, target: str, now: datetime, stale: timedelta) -> bool:
    """Mark a snapshot of ``target`` as running; False when one runs already."""
    ensure(conn, target)
    free = or_(
        remote_backups.c.running_since.is_(None), remote_backups.c.running_since < now - stale
    )
    query = update(remote_backups).where(remote_backups.c.target == target, free)
    claimed = conn.execute(query.values(running_since=now, updated_at=utcnow())).rowcount
    return bool(claimed)


def release(conn: Connection, target: str) -> None:
    """The claim is given back unused (the target was busy: the next tick tries again)."""
    _set(conn, target, running_since=None)


def attempted(conn: Connection, target: str, now: datetime, next_due: datetime | None) -> None:
    """A scheduled snapshot began: the schedule moves on whatever its outcome."""
    _set(conn, target, last_attempt_at=now, next_due_at=next_due)


def succeeded(
    conn: Connection,
    target: str,
    *,
    at: datetime,
    snapshot_id: str,
    duration: float,
    size: int | None,
    added: int | None,
) -> None:
    ensure(conn, target)
    _set(
        conn,
        target,
        running_since=None,
        last_success_at=at,
        last_snapshot_id=snapshot_id,
        last_duration=duration,
        last_size=size,
        last_added=added,
        last_error=None,
        failures=0,
        stale_told_at=None,
    )


def failed(conn: Connection, target: str, *, at: datetime, error: str) -> int:
    """Record a failed snapshot; returns how many failed in a row, this one included."""
    ensure(conn, target)
    state = get(conn, target)
    failures = (state.failures if state else 0) + 1
    _set(
        conn,
        target,
        running_since=None,
        last_error=error[:2000],
        last_error_at=at,
        failures=failures,
    )
    return failures


def told_stale(conn: Connection, target: str, at: datetime) -> None:
    _set(conn, target, stale_told_at=at)


def drill_claim(conn: Connection, target: str, now: datetime, next_due: datetime | None) -> bool:
    """Take a due drill (moving its schedule on); False when it is not due (any more)."""
    query = update(remote_backups).where(
        remote_backups.c.target == target, remote_backups.c.drill_due_at <= now
    )
    return bool(conn.execute(query.values(drill_due_at=next_due, updated_at=utcnow())).rowcount)


def drill_done(
    conn: Connection, target: str, *, at: datetime, ok: bool, snapshot_id: str | None, detail: str
) -> bool | None:
    """Record a drill's outcome; returns the one before it (None: never drilled)."""
    ensure(conn, target)
    query = select(remote_backups.c.drill_ok).where(remote_backups.c.target == target)
    before = conn.execute(query.with_for_update()).scalar()
    _set(
        conn,
        target,
        drill_at=at,
        drill_ok=ok,
        drill_snapshot_id=snapshot_id,
        drill_detail=detail[:2000],
    )
    return None if before is None else bool(before)
