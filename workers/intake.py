"""A job arrives from the broker: claim it once, record the request, run the target."""

from __future__ import annotations

import logging

from rollhook.jobs import Job
from rollhook.records import deployments, events
from workers.context import WorkerContext

logger = logging.getLogger("rollhook.intake")


def take_job(ctx: WorkerContext, job_json: str) -> str | None:
    """Record the job as a queued deployment; None when it was already taken.

    The broker delivers at least once and the outbox may publish a job twice; the
    claim in the records makes the second delivery a no-op.
    """
    job_id = Job.from_json(job_json).id
    with ctx.records.begin() as conn:
        if not events.claim_job(conn, job_id):
            logger.info("job %s already taken; duplicate delivery ignored", job_id)
            return None
        # The stored job, not the message: whoever can write to the broker must not be
        # able to change a target, an action or a rollback point.
        job = events.load_job(conn, job_id)
        if job is None:  # claimed, so it exists; a purge in between is the only way
            return None
        deployment_id = deployments.create_queued(conn, job)
        events.link_deployment(conn, job.id, deployment_id)
    logger.info(
        "job %s for %s queued as %s (delivery %s)",
        job.id,
        job.target,
        deployment_id,
        job.trigger.delivery_id or "-",
    )
    return job.target
