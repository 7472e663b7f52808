"""The bodies of the off-host backup tasks (``workers/app.py``): names in, work done.

Kept out of the Celery module so that the app module stays a list of thin wrappers.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from workers.context import WorkerContext
from workers.offsite import drill as drills
from workers.offsite import snapshots, ticker

logger = logging.getLogger("rollhook.offsite")


def tick(ctx: WorkerContext) -> None:
    ticker.tick(ctx, datetime.now(UTC))


def snapshot(ctx: WorkerContext, name: str, *, scheduled: bool) -> str:
    target = ctx.targets.get(name)
    if target is None or target.backup.remote is None:
        logger.warning("%s: no off-host backup configured; snapshot skipped", name)
        return "failed"
    result = snapshots.take(ctx, target, scheduled=scheduled)
    logger.info("%s: snapshot %s: %s", name, result.status, result.detail)
    return result.status


def ship(ctx: WorkerContext, name: str, backup_id: str, *, last_try: bool = False) -> str:
    """``last_try``: the task will not be retried, so a target still busy is a failure of
    its own (recorded and told like any other), never a backup dropped in silence."""
    target = ctx.targets.get(name)
    if target is None or target.backup.remote is None:
        return "failed"
    result = snapshots.ship(ctx, target, backup_id)
    logger.info("%s: backup %s off-host: %s: %s", name, backup_id, result.status, result.detail)
    if result.status == "busy" and last_try:
        snapshots.give_up(
            ctx,
            target,
            f"off-host copy of backup {backup_id}",
            f"not sent: {result.detail} (gave up after the last retry)",
        )
        return "failed"
    return result.status


def drill(ctx: WorkerContext, name: str) -> None:
    target = ctx.targets.get(name)
    if target is None or target.backup.remote is None:
        return
    result = drills.run_drill(ctx, target)
    logger.info("%s: drill %s: %s", name, "passed" if result.ok else "FAILED", result.detail)
