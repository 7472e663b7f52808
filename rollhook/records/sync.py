"""The reconcile loop's row per target (``sync``): what polling and inspection observed and
decided. The truth of what was deployed stays in ``deployments`` and ``targets``.

Several processes write a row (the poll tick, the engine-event watcher, the runner), each
its own fields: read-modify-write goes through :func:`lock` (the row held for the rest of
the transaction on PostgreSQL; SQLite holds the whole database from ``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from rollhook.records.schema import sync, utcnow


@dataclass(frozen=True)
class SyncState:
    """One ``sync`` row; a target never polled nor inspected has the defaults."""

    target: str
    observed_commit: str | None = None
    observed_at: datetime | None = None
    observed_images: dict[str, str] = field(default_factory=dict)
    newest_tags: dict[str, str] = field(default_factory=dict)
    raised: dict[str, Any] = field(default_factory=dict)
    synced_commit: str | None = None
    last_poll_at: datetime | None = None
    next_poll_at: datetime | None = None
    poll_errors: int = 0
    last_error: dict[str, Any] | None = None
    live: dict[str, Any] = field(default_factory=dict)
    inspected_at: datetime | None = None
    drift: list[dict[str, Any]] = field(default_factory=list)
    drift_since: datetime | None = None
    heals: list[str] = field(default_factory=list)
    heals_for: str | None = None
    degraded_at: datetime | None = None
    degraded_reason: str | None = None
    notified: dict[str, Any] = field(default_factory=dict)
    drift_counts: dict[str, int] = field(default_factory=dict)
    heal_count: int = 0
    poll_error_counts: dict[str, int] = field(default_factory=dict)
    updated_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Any) -> SyncState:
        values = dict(row._mapping)
        for name in ("observed_images", "newest_tags", "raised", "live", "notified"):
            values[name] = dict(values.get(name) or {})
        for name in ("drift_counts", "poll_error_counts"):
            values[name] = dict(values.get(name) or {})
        values["drift"] = list(values.get("drift") or [])
        values["heals"] = list(values.get("heals") or [])
        return cls(**values)

    @property
    def degraded(self) -> bool:
        return self.degraded_at is not None


_EMPTY: dict[str, Any] = {
    "observed_images": {},
    "newest_tags": {},
    "raised": {},
    "poll_errors": 0,
    "live": {},
    "drift": [],
    "heals": [],
    "notified": {},
    "drift_counts": {},
    "heal_count": 0,
    "poll_error_counts": {},
}


def ensure(conn: Connection, names: Iterable[str]) -> None:
    """Create the rows of configured targets (idempotent)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    for name in names:
        conn.execute(
            dialect.insert(sync)
            .values(target=name, **_EMPTY)
            .on_conflict_do_nothing(index_elements=["target"])
        )


def get(conn: Connection, name: str) -> SyncState:
    row = conn.execute(select(sync).where(sync.c.target == name)).first()
    return SyncState(name) if row is None else SyncState.from_row(row)


def lock(conn: Connection, name: str) -> SyncState:
    """The row, held until the transaction ends (created first if missing)."""
    ensure(conn, [name])
    row = conn.execute(select(sync).where(sync.c.target == name).with_for_update()).first()
    return SyncState(name) if row is None else SyncState.from_row(row)


def all_states(conn: Connection) -> dict[str, SyncState]:
    return {row.target: SyncState.from_row(row) for row in conn.execute(select(sync))}


def change(conn: Connection, name: str, **values: Any) -> None:
    """Write some fields of a target's row (which must exist: :func:`lock` or :func:`ensure`)."""
    conn.execute(update(sync).where(sync.c.target == name).values(updated_at=utcnow(), **values))


def due(conn: Connection, names: Iterable[str], now: datetime | None = None) -> list[str]:
    """Of ``names``, those whose next poll is due (never polled counts as due), locked."""
    wanted = list(names)
    if not wanted:
        return []
    ensure(conn, wanted)
    moment = now or utcnow()
    rows = conn.execute(
        select(sync.c.target)
        .where(
            sync.c.target.in_(wanted),
            or_(sync.c.next_poll_at.is_(None), sync.c.next_poll_at <= moment),
        )
        .with_for_update(skip_locked=True)
    )
    return sorted(name for (name,) in rows)


def forgive(conn: Connection, name: str) -> None:
    """A person acted (resume, deploy, rollback, sync) or a new desired state arrived:
    healing starts over, and a degraded target is degraded no more."""
    ensure(conn, [name])
    change(conn, name, heals=[], heals_for=None, degraded_at=None, degraded_reason=None)
