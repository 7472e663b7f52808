"""Notification rows: per (notice, channel), what to tell, what already left, each attempt.

A notice is of a ``kind`` and about a ``subject`` (``subject_kind``: a deployment today; a
target or a host to come); its rows are found again by (kind, subject, channel).

``external`` holds what should be told (``spec``, with a revision ``rev``), what already
left (Slack's channel id and ``ts``, whether the email went, which commit states were
set) and the delivery's lease (``lease_until``) and back-off (``retry_at``); ``history``
holds every attempt and its outcome. What those mean is the notifier's business
(``workers/notify``); this module reads and writes them.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, select, update

from rollhook.ids import new_id
from rollhook.records.schema import notifications, row_dict, utcnow


@dataclass(frozen=True)
class Notification:
    id: str
    kind: str
    subject_kind: str
    subject: str
    deployment_id: str | None
    target: str | None
    channel: str
    status: str  # pending | delivered | failed | skipped
    attempts: int
    external: dict[str, Any]
    history: list[dict[str, Any]]

    @classmethod
    def from_row(cls, row: Any) -> Notification:
        return cls(
            id=row.id,
            kind=row.kind,
            subject_kind=row.subject_kind,
            subject=row.subject,
            deployment_id=row.deployment_id,
            target=row.target,
            channel=row.channel,
            status=row.status,
            attempts=row.attempts,
            external=dict(row.external or {}),
            history=list(row.history or []),
        )


def history_entry(attempt: int, outcome: str, detail: str, **more: Any) -> dict[str, Any]:
    at = utcnow().isoformat(timespec="milliseconds")
    return {"attempt": attempt, "at": at, "outcome": outcome, "detail": detail, **more}


@dataclass(frozen=True)
class About:
    """What a notice is about: its kind and subject, and the deployment and target it has."""

    kind: str  # what is told: "deployment" (its start and end), ...
    subject_kind: str  # deployment | target | host
    subject: str  # its id or name
    deployment_id: str | None = None
    target: str | None = None


def create(
    conn: Connection,
    about: About,
    channel: str,
    *,
    status: str,
    external: dict[str, Any],
    history: list[dict[str, Any]],
) -> str:
    notification_id = new_id("n")
    now = utcnow()
    conn.execute(
        insert(notifications).values(
            id=notification_id,
            **asdict(about),
            channel=channel,
            status=status,
            attempts=0,
            external=external,
            history=history,
            created_at=now,
            updated_at=now,
        )
    )
    return notification_id


def of_subject(conn: Connection, about: About) -> dict[str, Notification]:
    """A notice's rows, by channel."""
    query = select(notifications).where(
        notifications.c.kind == about.kind, notifications.c.subject == about.subject
    )
    return {row.channel: Notification.from_row(row) for row in conn.execute(query)}


def of_target(conn: Connection, target: str, kind: str) -> list[Notification]:
    """A target's notices of one kind, every channel, oldest first."""
    query = (
        select(notifications)
        .where(notifications.c.target == target, notifications.c.kind == kind)
        .order_by(notifications.c.created_at, notifications.c.id)
    )
    return [Notification.from_row(row) for row in conn.execute(query)]


def locked(conn: Connection, notification_id: str) -> Notification | None:
    """A row, locked for the rest of the transaction (on PostgreSQL; SQLite locks at BEGIN)."""
    query = select(notifications).where(notifications.c.id == notification_id)
    row = conn.execute(query.with_for_update()).first()
    return None if row is None else Notification.from_row(row)


def change(conn: Connection, notification_id: str, **values: Any) -> None:
    conn.execute(
        update(notifications)
        .where(notifications.c.id == notification_id)
        .values(updated_at=utcnow(), **values)
    )


def status_of(conn: Connection, notification_id: str) -> tuple[str, dict[str, Any]] | None:
    row = conn.execute(
        select(notifications.c.status, notifications.c.external).where(
            notifications.c.id == notification_id
        )
    ).first()
    return None if row is None else (row.status, dict(row.external or {}))


def owed(conn: Connection, older_than: float) -> list[str]:
    """Rows still owed and not touched for ``older_than`` seconds, oldest first.

    A row waiting out its retry delay, or under a delivery's lease, is left out.
    """
    now = time.time()
    cutoff: datetime = utcnow() - timedelta(seconds=older_than)
    query = select(notifications.c.id, notifications.c.external).where(
        notifications.c.status == "pending", notifications.c.updated_at < cutoff
    )
    found = []
    for notification_id, raw in conn.execute(query.order_by(notifications.c.created_at)):
        external = raw or {}
        if float(external.get("lease_until") or 0) > now:
            continue
        if float(external.get("retry_at") or 0) + older_than > now:
            continue
        found.append(str(notification_id))
    return found


def of_deployments(conn: Connection, deployment_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The rows of these deployments as the API shows them: per deployment, oldest first."""
    found: dict[str, list[dict[str, Any]]] = {i: [] for i in deployment_ids}
    if not deployment_ids:
        return found
    rows = conn.execute(
        select(
            notifications.c.deployment_id,
            notifications.c.channel,
            notifications.c.status,
            notifications.c.attempts,
            notifications.c.history,
            notifications.c.created_at,
            notifications.c.updated_at,
        )
        .where(notifications.c.deployment_id.in_(deployment_ids))
        .order_by(notifications.c.created_at, notifications.c.channel)
    )
    for row in rows:
        item = row_dict(row)
        found[item.pop("deployment_id")].append(item)
    return found
