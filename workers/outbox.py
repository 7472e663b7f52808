"""Jobs a worker stored itself (a poll's, a heal's) leave the way a webhook's do: published
right after their commit; if the broker cannot take them, beat's dispatch sends them."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from rollhook.broker import PROCESS_JOBS
from rollhook.jobs import Job
from rollhook.records import jobs
from workers.context import WorkerContext

logger = logging.getLogger("rollhook.outbox")


def publish(ctx: WorkerContext, stored: Iterable[Job]) -> None:
    """Hand stored jobs to the broker in one message; never raises for the broker."""
    batch = list(stored)
    if not batch:
        return
    try:
        ctx.send(PROCESS_JOBS, [[job.to_json() for job in batch]])
    except Exception:  # noqa: BLE001 - kombu and redis raise many types; the outbox retries
        logger.warning("broker unavailable; %d job(s) stay in the outbox", len(batch))
        return
    with ctx.records.begin() as conn:
        jobs.mark_dispatched(conn, [job.id for job in batch])
