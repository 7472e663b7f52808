"""The dashboard's sessions: created at sign-in, read on every page, deleted at sign-out.

A row is found by the SHA-256 of the secret in the session cookie, never by the secret
itself, so reading this table lets nobody sign in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, insert, select

from rollhook.records.schema import ui_sessions, utcnow


@dataclass(frozen=True)
class UiSession:
    id: str
    who: str
    client: str | None
    created_at: datetime
    expires_at: datetime


def create(conn: Connection, session: UiSession) -> None:
    conn.execute(
        insert(ui_sessions).values(
            id=session.id,
            who=session.who,
            client=session.client,
            created_at=session.created_at,
            expires_at=session.expires_at,
        )
    )


def get(conn: Connection, session_id: str) -> UiSession | None:
    """The session if it exists and has not expired."""
    row = conn.execute(
        select(ui_sessions).where(
            ui_sessions.c.id == session_id, ui_sessions.c.expires_at > utcnow()
        )
    ).first()
    return None if row is None else UiSession(**row._mapping)


def delete_one(conn: Connection, session_id: str) -> None:
    conn.execute(delete(ui_sessions).where(ui_sessions.c.id == session_id))


def delete_expired(conn: Connection) -> int:
    return int(
        conn.execute(delete(ui_sessions).where(ui_sessions.c.expires_at <= utcnow())).rowcount
    )
