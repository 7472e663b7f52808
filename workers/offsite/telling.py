"""Telling people about off-host backup trouble: rows written, delivery tasks published.

Never raises: a notification problem is logged, and the snapshot's own record stands.
"""

from __future__ import annotations

import logging
from datetime import datetime

from rollhook.broker import NOTIFY
from rollhook.targets import Target
from workers.context import WorkerContext
from workers.notify import schedule_backup_notice

logger = logging.getLogger("rollhook.offsite")


def tell(ctx: WorkerContext, target: Target, event: str, detail: str, at: datetime) -> list[str]:
    """``event``: failed, stale, drill_failed or drill_recovered (``notify/backup_notice``)."""
    try:
        with ctx.records.begin() as conn:
            ids = schedule_backup_notice(
                conn, target, event=event, detail=detail, at=at, notifiers=ctx.notifiers
            )
        for notification_id in ids:
            ctx.send(NOTIFY, [notification_id])
    except Exception:
        logger.exception("%s: telling of a backup %s failed", target.name, event)
        return []
    return ids
