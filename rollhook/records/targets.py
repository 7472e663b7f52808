"""Per-target state: pause and hold, what runs, pins, the failed desired state, the lease.

The lease makes "one deployment at a time per target" hold across processes and hosts:
taking it bumps a fencing token, and every write a deployment makes is conditional on
that token, so a worker that lost its lease (it stalled past expiry and somebody else
took over) can no longer change the record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from rollhook.records.schema import deployments, targets, utcnow


@dataclass(frozen=True)
class TargetState:
    """One ``targets`` row: what rollhook knows and decided about a configured target."""

    name: str
    paused: bool = False
    paused_reason: str | None = None
    paused_at: datetime | None = None
    held: bool = False  # after a manual rollback: automatic deployments wait
    current_deployment_id: str | None = None
    last_good_deployment_id: str | None = None
    pins: dict[str, Any] = field(default_factory=dict)  # service -> pin
    failed_fingerprint: str | None = None
    lease_owner: str | None = None
    lease_token: int = 0
    lease_expires_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Any) -> TargetState:
        return cls(**row._mapping)


def ensure(conn: Connection, names: list[str]) -> None:
    """Create state rows for configured targets (idempotent)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    for name in names:
        conn.execute(
            dialect.insert(targets)
            .values(name=name, paused=False, held=False, pins={}, lease_token=0)
            .on_conflict_do_nothing(index_elements=["name"])
        )


def get(conn: Connection, name: str) -> TargetState | None:
    row = conn.execute(select(targets).where(targets.c.name == name)).first()
    return None if row is None else TargetState.from_row(row)


def all_states(conn: Connection) -> dict[str, TargetState]:
    return {row.name: TargetState.from_row(row) for row in conn.execute(select(targets))}


def set_paused(conn: Connection, name: str, paused: bool, reason: str | None) -> None:
    values: dict[str, Any] = {"paused": paused, "updated_at": utcnow()}
    if paused:
        values |= {"paused_reason": reason, "paused_at": utcnow()}
    else:
        values |= {"paused_reason": None, "paused_at": None, "held": False}
    conn.execute(update(targets).where(targets.c.name == name).values(**values))


def paused_and_held(conn: Connection) -> tuple[set[str], set[str]]:
    """The names of paused targets and of held ones, read once per batch of events."""
    # The driver's cursor (no parameters: the same SQL for SQLite and PostgreSQL):
    # through SQLAlchemy this one query cost more than the batch's inserts.
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute("SELECT name, paused, held FROM targets WHERE paused OR held")
        rows = cursor.fetchall()
    finally:
        cursor.close()
    paused: set[str] = set()
    held: set[str] = set()
    for name, is_paused, is_held in rows:
        if is_paused:
            paused.add(name)
        if is_held:
            held.add(name)
    return paused, held


def set_held(conn: Connection, name: str, held: bool) -> None:
    conn.execute(
        update(targets).where(targets.c.name == name).values(held=held, updated_at=utcnow())
    )


def record_outcome(
    conn: Connection,
    name: str,
    token: int,
    *,
    current: str | None = None,
    good: str | None = None,
    pins: dict[str, Any] | None = None,
    failed_fingerprint: str | None = None,
    clear_failed: bool = False,
    held: bool | None = None,
) -> bool:
    """Write what a deployment ended with, fenced by its lease token."""
    values: dict[str, Any] = {"updated_at": utcnow()}
    if held is not None:
        values["held"] = held
    if current is not None:
        values["current_deployment_id"] = current
    if good is not None:
        values["last_good_deployment_id"] = good
    if pins is not None:
        values["pins"] = pins
    if failed_fingerprint is not None:
        values["failed_fingerprint"] = failed_fingerprint
    elif clear_failed:
        values["failed_fingerprint"] = None
    changed = conn.execute(
        update(targets)
        .where(targets.c.name == name, targets.c.lease_token == token)
        .values(**values)
    ).rowcount
    return bool(changed)


# -- the lease ----------------------------------------------------------------------


def acquire_lease(
    conn: Connection, name: str, owner: str, ttl: float, *, only_free: bool = False
) -> int | None:
    """Take the target's lease if it is free or expired; return the new fencing token.

    ``only_free``: never take over an expired lease (that is recovery's job, which also
    adopts what the dead holder left).
    """
    now = utcnow()
    free = targets.c.lease_owner.is_(None)
    taken = conn.execute(
        update(targets)
        .where(
            targets.c.name == name,
            free if only_free else or_(free, targets.c.lease_expires_at < now),
        )
        .values(
            lease_owner=owner,
            lease_token=targets.c.lease_token + 1,
            lease_expires_at=now + timedelta(seconds=ttl),
        )
    ).rowcount
    if not taken:
        return None
    token = conn.execute(select(targets.c.lease_token).where(targets.c.name == name)).scalar_one()
    return int(token)


def renew_lease(conn: Connection, name: str, token: int, ttl: float) -> bool:
    renewed = conn.execute(
        update(targets)
        .where(targets.c.name == name, targets.c.lease_token == token)
        .values(lease_expires_at=utcnow() + timedelta(seconds=ttl))
    ).rowcount
    return bool(renewed)


def holds_lease(token: int) -> Any:
    """A condition for writes to a target's deployments: the writer still holds its lease."""
    current = select(targets.c.lease_token).where(targets.c.name == deployments.c.target)
    return current.scalar_subquery() == token


def release_lease(conn: Connection, name: str, token: int) -> None:
    conn.execute(
        update(targets)
        .where(targets.c.name == name, targets.c.lease_token == token)
        .values(lease_owner=None, lease_expires_at=None)
    )


def unleased_with_work(conn: Connection) -> list[str]:
    """Targets with queued or running deployments whose lease is free or expired."""
    busy = select(deployments.c.target).where(deployments.c.status.in_(["queued", "running"]))
    rows = conn.execute(
        select(targets.c.name).where(
            targets.c.name.in_(busy),
            targets.c.lease_owner.is_(None) | (targets.c.lease_expires_at < utcnow()),
        )
    )
    return [name for (name,) in rows]
