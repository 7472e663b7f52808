"""The outbox: one job per (event, target), stored with its event (``records.events``).

``dispatched_at`` is set once the broker took a job; ``consumed_at`` once a worker claimed
it, which happens exactly once however often the broker delivers it. Jobs the broker never
took, or that nobody claimed, are read back here to be published again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, func, literal, select, update

from rollhook.jobs import Job
from rollhook.records.schema import UTCDateTime, jobs, row_dict, utcnow


def mark_dispatched(conn: Connection, job_ids: list[str]) -> None:
    if job_ids:
        conn.execute(
            update(jobs)
            .where(jobs.c.id.in_(job_ids), jobs.c.dispatched_at.is_(None))
            .values(dispatched_at=utcnow())
        )


def note_dispatch_failure(conn: Connection, job_ids: list[str]) -> None:
    if job_ids:
        conn.execute(
            update(jobs)
            .where(jobs.c.id.in_(job_ids))
            .values(dispatch_attempts=jobs.c.dispatch_attempts + 1)
        )


def undispatched(conn: Connection, older_than: timedelta, limit: int = 500) -> list[Job]:
    """Jobs the broker never took (it was down, or the web process died before sending)."""
    cutoff = utcnow() - older_than
    rows = conn.execute(
        select(jobs.c.payload)
        .where(jobs.c.dispatched_at.is_(None), jobs.c.created_at <= cutoff)
        .order_by(jobs.c.created_at)
        .limit(limit)
    )
    return [Job.from_json(payload) for (payload,) in rows]


def unclaimed(conn: Connection, first_wait: timedelta, limit: int = 500) -> list[Job]:
    """Jobs the broker took but no worker claimed: a worker died holding them, or the
    broker lost them. Each is due again after ``first_wait`` doubled per attempt (up to
    64 times), so a job that only waits behind a long deployment is not re-sent often."""
    now = utcnow()
    rows = conn.execute(
        select(jobs.c.payload, jobs.c.dispatched_at, jobs.c.dispatch_attempts)
        .where(
            jobs.c.consumed_at.is_(None),
            jobs.c.dispatched_at.is_not(None),
            jobs.c.dispatched_at <= now - first_wait,
        )
        .order_by(jobs.c.created_at)
        .limit(limit)
    )
    return [
        Job.from_json(payload)
        for payload, dispatched_at, attempts in rows
        if dispatched_at + first_wait * 2 ** min(attempts, 6) <= now
    ]


def mark_redispatched(conn: Connection, job_ids: list[str]) -> None:
    if job_ids:
        conn.execute(
            update(jobs)
            .where(jobs.c.id.in_(job_ids))
            .values(dispatched_at=utcnow(), dispatch_attempts=jobs.c.dispatch_attempts + 1)
        )


def claim(conn: Connection, job_id: str) -> bool:
    """Claim a job for processing; False when another delivery of it got there first."""
    now = utcnow()
    claimed = conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.consumed_at.is_(None))
        .values(
            consumed_at=now,
            dispatched_at=func.coalesce(jobs.c.dispatched_at, literal(now, UTCDateTime)),
        )
    ).rowcount
    return bool(claimed)


def load(conn: Connection, job_id: str) -> Job | None:
    payload = conn.execute(select(jobs.c.payload).where(jobs.c.id == job_id)).scalar()
    return None if payload is None else Job.from_json(payload)


def link_deployment(conn: Connection, job_id: str, deployment_id: str) -> None:
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(deployment_id=deployment_id))


def backlog(conn: Connection) -> int:
    return int(
        conn.execute(
            select(func.count()).select_from(jobs).where(jobs.c.dispatched_at.is_(None))
        ).scalar_one()
    )


def of_event(conn: Connection, event_id: str) -> list[dict[str, Any]]:
    """An event's jobs as the API shows them, by target."""
    rows = conn.execute(
        select(
            jobs.c.id, jobs.c.target, jobs.c.dispatched_at, jobs.c.consumed_at, jobs.c.deployment_id
        )
        .where(jobs.c.event_id == event_id)
        .order_by(jobs.c.target)
    )
    return [row_dict(row) for row in rows]
