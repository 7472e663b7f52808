"""Accepted events, stored with their jobs (the outbox, ``records.jobs``).

An event and its jobs are committed in one transaction before the webhook is answered.
The same delivery (same dedup key) is one event however often it arrives: the second
insert does nothing and the caller learns the first event's id. A signed event has a
second key, its body's hash: the same body under another delivery id is the same event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Dialect, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from rollhook.events import NewEvent
from rollhook.jobs import Job
from rollhook.records.jobs import of_event
from rollhook.records.schema import db_now, events, jobs, row_dict, utcnow


@dataclass(frozen=True)
class Stored:
    event_id: str
    duplicate: bool
    jobs: tuple[Job, ...] = ()


def _insert_ignoring_duplicates(conn: Connection) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    # No conflict target: a clash on either key (dedup_key, body_key) inserts nothing.
    return dialect.insert(events).on_conflict_do_nothing()


def store_batch(conn: Connection, batch: list[NewEvent]) -> list[Stored]:
    """Insert events and their jobs, a whole batch in a handful of statements.

    Outcomes come in the batch's order: keys stored before (or earlier in the batch)
    make duplicates of the first event, which insert nothing. The web process's group
    commit calls this; its cost is per statement, not per event. On SQLite the caller
    holds the write lock (``BEGIN IMMEDIATE``), so the keys read first cannot be taken
    meanwhile; elsewhere RETURNING tells which rows another writer got to first.
    """
    if not batch:
        return []
    on_sqlite = conn.dialect.name == "sqlite"
    keys = {key for item in batch for key in item.dedup_keys()}
    first = _sqlite_stored_keys(conn, keys) if on_sqlite else _stored_keys(conn, keys)
    new: list[NewEvent] = []
    for item in batch:
        if not any(key in first for key in item.dedup_keys()):
            first.update(dict.fromkeys(item.dedup_keys(), item.id))
            new.append(item)
    if new and on_sqlite:
        _sqlite_insert(conn, new)
    elif new:
        new = _insert_returning(conn, _on_the_databases_clock(conn, new), first)
    stored = {item.id for item in new}
    return [
        Stored(item.id, duplicate=False, jobs=tuple(item.jobs))
        if item.id in stored
        else Stored(_first_of(item, first), duplicate=True)
        for item in batch
    ]


def _on_the_databases_clock(conn: Connection, new: list[NewEvent]) -> list[NewEvent]:
    """The events (and their jobs) stamped with the database's clock, in batch order.

    "Newest wins" orders a target's queued work by its event's time
    (``deployments.queued``); events come from the web process, beat and the workers of
    every host, whose clocks may disagree. So the time stored is the database's, one
    microsecond apart within a batch to keep its order. (SQLite is one machine's file,
    the web process's own: its clock already is the database's.)
    """
    now = db_now(conn)
    stamped = []
    for i, item in enumerate(new):
        at = now + timedelta(microseconds=i)
        jobs_at = [job.model_copy(update={"received_at": at}) for job in item.jobs]
        stamped.append(replace(item, received_at=at, jobs=jobs_at))
    return stamped


def _first_of(item: NewEvent, first: dict[str, str]) -> str:
    """The id of the event that one of ``item``'s keys was stored with first."""
    return next(first[k] for k in item.dedup_keys() if first.get(k, item.id) != item.id)


def _stored_keys(conn: Connection, keys: set[str]) -> dict[str, str]:
    """Each of ``keys`` already stored (as a dedup or a body key) -> its event's id."""
    found = conn.execute(
        select(events.c.dedup_key, events.c.body_key, events.c.id).where(
            events.c.dedup_key.in_(keys) | events.c.body_key.in_(keys)
        )
    )
    return {key: event_id for *pair, event_id in found for key in pair if key in keys}


def _insert_returning(
    conn: Connection, new: list[NewEvent], first: dict[str, str]
) -> list[NewEvent]:
    """Insert what no other writer stored first; returns the events that were stored."""
    insert_event = _insert_ignoring_duplicates(conn).returning(events.c.id)
    inserted = set(conn.execute(insert_event, [_event_row(item) for item in new]).scalars())
    if lost := [item for item in new if item.id not in inserted]:
        for item in lost:  # stored meanwhile by another writer, under one of its keys
            for key in item.dedup_keys():
                first.pop(key, None)
        first.update(_stored_keys(conn, {key for item in lost for key in item.dedup_keys()}))
        new = [item for item in new if item.id in inserted]
    job_rows = [_job_row(item, job) for item in new for job in item.jobs]
    if job_rows:
        conn.execute(jobs.insert(), job_rows)
    return new


def _event_row(item: NewEvent) -> dict[str, Any]:
    return {
        "id": item.id,
        "source": item.source,
        "dedup_key": item.dedup_key,
        "body_key": item.body_key,
        "delivery_id": item.delivery_id,
        "kind": item.kind,
        "actor": item.actor,
        "summary": item.summary,
        "received_at": item.received_at,
    }


def _job_row(item: NewEvent, job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "event_id": item.id,
        "target": job.target,
        "payload": job.to_json(),
        "created_at": item.received_at,
        "dispatch_attempts": 0,
    }


# -- SQLite: the driver's own cursor --------------------------------------------------
# The records writer (service/writer.py) stores every accepted webhook here. Through
# SQLAlchemy each statement costs ~80 us of Python; SQLite itself needs a few. The
# statements below run in the caller's transaction on the same connection, and values go
# through the columns' own SQLAlchemy bind processors, so rows are stored exactly as
# SQLAlchemy would store them.

_INSERT_EVENT = (
    "INSERT INTO events"
    " (id, source, dedup_key, body_key, delivery_id, kind, actor, summary, received_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_JOB = (
    "INSERT INTO jobs (id, event_id, target, payload, created_at, dispatch_attempts)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)


@lru_cache(maxsize=8)
def _processors(dialect: Dialect) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """(summary JSON, UTC datetime) bind processors, as SQLAlchemy applies them."""

    def processor(column: Any) -> Callable[[Any], Any]:
        process = column.type.dialect_impl(dialect).bind_processor(dialect)
        return process if process is not None else (lambda value: value)

    return processor(events.c.summary), processor(events.c.received_at)


def _sqlite_stored_keys(conn: Connection, keys: set[str]) -> dict[str, str]:
    marks = ", ".join("?" for _ in keys)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        found = cursor.execute(
            f"SELECT dedup_key, body_key, id FROM events"  # noqa: S608 - only placeholders
            f" WHERE dedup_key IN ({marks}) OR body_key IN ({marks})",
            (*keys, *keys),
        ).fetchall()
    finally:
        cursor.close()
    return {key: event_id for *pair, event_id in found for key in pair if key in keys}


def _sqlite_insert(conn: Connection, new: list[NewEvent]) -> None:
    summary_json, utc = _processors(conn.dialect)
    event_rows: list[tuple[Any, ...]] = []
    job_rows: list[tuple[Any, ...]] = []
    for item in new:
        received = utc(item.received_at)
        event_rows.append(
            (
                item.id,
                item.source,
                item.dedup_key,
                item.body_key,
                item.delivery_id,
                item.kind,
                item.actor,
                summary_json(item.summary),
                received,
            )
        )
        job_rows.extend(
            (job.id, item.id, job.target, job.to_json(), received, 0) for job in item.jobs
        )
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.executemany(_INSERT_EVENT, event_rows)
        if job_rows:
            cursor.executemany(_INSERT_JOB, job_rows)
    finally:
        cursor.close()


def get_event(conn: Connection, event_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(events).where(events.c.id == event_id)).first()
    if row is None:
        return None
    return row_dict(row) | {"jobs": of_event(conn, event_id)}


def purge_events(conn: Connection, older_than: timedelta) -> int:
    """Forget events (and so their dedup keys) older than the retention period.

    Jobs that were never consumed are kept with their events: work is never dropped.
    """
    cutoff = utcnow() - older_than
    pending = select(jobs.c.event_id).where(jobs.c.consumed_at.is_(None))
    old = select(events.c.id).where(events.c.received_at < cutoff, events.c.id.not_in(pending))
    conn.execute(delete(jobs).where(jobs.c.event_id.in_(old)))
    return conn.execute(delete(events).where(events.c.id.in_(old))).rowcount
