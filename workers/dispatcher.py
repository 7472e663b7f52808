"""Beat's dispatcher: jobs the broker never took, and targets with work nobody is doing.

The web process publishes right after its commit; when the broker was down, or the
process died in between, the job waits here. A target with queued work or a running
deployment but no live lease (its worker died) gets a ``run_target`` kick, which is also
how recovery starts: run_target adopts the orphaned deployment.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from rollhook.broker import PROCESS_JOBS, RUN_TARGET
from rollhook.records import jobs
from rollhook.records import targets as target_records
from workers.context import WorkerContext
from workers.runner import closed_window, has_work

logger = logging.getLogger("rollhook.dispatcher")

GRACE = timedelta(seconds=2)  # the web process publishes by itself within this
UNCLAIMED = timedelta(seconds=60)  # a worker claims a job within this unless all are busy


def dispatch_outbox(ctx: WorkerContext) -> int:
    """Publish jobs the broker never took, and re-publish those nobody claimed."""
    with ctx.records.begin() as conn:
        waiting = jobs.undispatched(conn, GRACE)
        lost = jobs.unclaimed(conn, UNCLAIMED)
    sent = 0
    for batch, mark in ((waiting, jobs.mark_dispatched), (lost, jobs.mark_redispatched)):
        if not batch:
            continue
        ids = [job.id for job in batch]
        try:
            ctx.send(PROCESS_JOBS, [[job.to_json() for job in batch]])
        except Exception:  # noqa: BLE001 - kombu and redis raise many types; all mean "not now"
            logger.warning("broker unavailable; %d job(s) stay in the outbox", len(batch))
            with ctx.records.begin() as conn:
                jobs.note_dispatch_failure(conn, ids)
            return sent
        with ctx.records.begin() as conn:
            mark(conn, ids)
        sent += len(batch)
    if lost:
        logger.warning("outbox: re-published %d job(s) no worker had claimed", len(lost))
    if sent:
        logger.info("outbox: dispatched %d job(s)", sent)
    return sent


def targets_needing_a_worker(ctx: WorkerContext) -> list[str]:
    with ctx.records.begin() as conn:
        # A paused target's automatic work waits for resume, in manual mode for approval,
        # and outside its deploy window for the window to open (the first tick after it
        # opens wakes the target).
        return [
            name
            for name in target_records.unleased_with_work(conn)
            if has_work(conn, name, auto=_auto(ctx, name), window=closed_window(ctx, name))
        ]


def _auto(ctx: WorkerContext, name: str) -> bool:
    target = ctx.targets.get(name)
    return target.sync.auto if target is not None else True


def kick_targets(ctx: WorkerContext) -> list[str]:
    names = targets_needing_a_worker(ctx)
    for name in names:
        ctx.send(RUN_TARGET, [name])
    return names
