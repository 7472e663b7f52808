"""Small notification memories shared by every process, one JSON value per key.

``streak:<target>``: a target's failure streak (``workers/notify/policy.py``);
``slot:<key>``: when the next message may leave for a rate-limited channel
(``workers/notify/ratelimit.py``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, insert, select, update

from rollhook.records.schema import notify_state, utcnow


def read(conn: Connection, key: str, *, lock: bool = False) -> dict[str, Any] | None:
    """The value under ``key``; ``lock``: held for the rest of the transaction."""
    query = select(notify_state.c.value).where(notify_state.c.key == key)
    value = conn.execute(query.with_for_update() if lock else query).scalar()
    return dict(value) if isinstance(value, dict) else None


def write(conn: Connection, key: str, value: dict[str, Any], *, create: bool) -> None:
    """Set the value under ``key``: a new key (``create``), or one that :func:`read` found.

    Creating a key that another process created meanwhile raises IntegrityError: read it
    again. (Updating instead would overwrite what that process just decided.)
    """
    values = {"value": dict(value), "updated_at": utcnow()}
    if create:
        conn.execute(insert(notify_state).values(key=key, **values))
    else:
        conn.execute(update(notify_state).where(notify_state.c.key == key).values(**values))
