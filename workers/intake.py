"""A job arrives from the broker: claim it once, record the request, run the target."""

from __future__ import annotations

import logging

from sqlalchemy import Connection

from rollhook.jobs import Job
from rollhook.records import deployments, jobs
from workers.context import WorkerContext

logger = logging.getLogger("rollhook.intake")


def take_job(ctx: WorkerContext, job_json: str) -> str | None:
    """Record the job as a queued deployment; None when it was already taken.

    The broker delivers at least once and the outbox may publish a job twice; the
    claim in the records makes the second delivery a no-op.
    """
    job_id = Job.from_json(job_json).id
    with ctx.records.begin() as conn:
        queued = queue_job(conn, job_id)
    if queued is None:
        logger.info("job %s already taken; duplicate delivery ignored", job_id)
        return None
    job, deployment_id = queued
    logger.info(
        "job %s for %s queued as %s (delivery %s)",
        job.id,
        job.target,
        deployment_id,
        job.trigger.delivery_id or "-",
    )
    return job.target


def queue_job(conn: Connection, job_id: str) -> tuple[Job, str] | None:
    """Claim a stored job and record it as a queued deployment: (the job, its deployment id).

    None when it was claimed before. The stored job is taken, not a message about it:
    whoever can write to the broker must not be able to change a target, an action or a
    rollback point.
    """
    if not jobs.claim(conn, job_id):
        return None
    job = jobs.load(conn, job_id)
    if job is None:  # claimed, so it exists; a purge in between is the only way
        return None
    deployment_id = deployments.create_queued(conn, job)
    jobs.link_deployment(conn, job.id, deployment_id)
    return job, deployment_id
