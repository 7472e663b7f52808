"""Requests come in: a job from the broker (claimed once, recorded as a queued deployment),
or a data restore asked for on this host (``rollhook restore``)."""

from __future__ import annotations

import logging

from sqlalchemy import Connection

from rollhook import events
from rollhook.broker import NOTIFY
from rollhook.jobs import Job
from rollhook.records import deployments, jobs
from rollhook.records import events as event_records
from rollhook.records import targets as target_records
from workers.approval import tell_pending, waiting
from workers.backup import BackupStore
from workers.context import WorkerContext
from workers.errors import InfrastructureError, OperatorError
from workers.layout import TargetDirs
from workers.notify import schedule_decision
from workers.rejection import reject_waiting

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
    target = ctx.targets.get(job.target)
    if job.manual and job.action in ("sync", "reject"):
        _tell_decision(ctx, job, deployment_id)
    if job.action == "reject":  # nothing runs: what waited ended in queue_job
        logger.info("job %s for %s: rejected %s", job.id, job.target, deployment_id or "nothing")
        return None
    if target is not None and not job.manual:
        try:
            tell_pending(ctx, target)  # manual mode: it waits for a person's sync
        except Exception:
            logger.exception("%s: telling what waits for approval failed", job.target)
    logger.info(
        "job %s for %s queued as %s (delivery %s)",
        job.id,
        job.target,
        deployment_id,
        job.trigger.delivery_id or "-",
    )
    return job.target


def _tell_decision(ctx: WorkerContext, job: Job, deployment_id: str) -> None:
    """A person decided on what waited for approval (a press, ``rollhook approve``,
    ``reject`` or ``sync``): the Slack message that asked is updated to say so."""
    if "slack" not in ctx.notifiers:
        return
    who = job.trigger.actor or job.trigger.source
    try:
        with ctx.records.begin() as conn:
            if job.action == "reject":
                ended = [i for i in deployment_id.split(",") if i]
                ids = schedule_decision(conn, job.target, ended, decision="reject", by=who)
            else:
                waited = [r.id for r in waiting(conn, job.target)]
                ids = schedule_decision(
                    conn, job.target, waited, decision="approve", by=who, deployment=deployment_id
                )
        for notification_id in ids:
            ctx.send(NOTIFY, [notification_id])
    except Exception:
        logger.warning("%s: telling the decision on what waited failed", job.target, exc_info=True)


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
    if job.action == "reject":  # a person's rejection ends what waits (workers/rejection.py)
        rejected = reject_waiting(conn, job)
        return job, ",".join(rejected)
    deployment_id = deployments.create_queued(conn, job)
    jobs.link_deployment(conn, job.id, deployment_id)
    return job, deployment_id


def queue_restore(ctx: WorkerContext, name: str, backup_id: str) -> str:
    """Queue a restore of a backup's data under the running version (``rollhook restore``);
    returns its deployment id.

    It is a rollback to the current deployment with that backup, so it is recorded in
    the history, holds the target's lease, snapshots the data it replaces first, gates
    the app on health afterwards, and undoes itself if the app does not come back.
    Raises OperatorError when it cannot be done.
    """
    if name not in ctx.targets:
        raise OperatorError(f"unknown target {name!r}")
    known = {info.id for info in BackupStore(TargetDirs(ctx.data_dir, name).backups).list()}
    if backup_id not in known:
        raise OperatorError(f"{name} has no complete backup {backup_id!r} (see `rollhook backups`)")
    with ctx.records.begin() as conn:
        state = target_records.get(conn, name)
    current = None if state is None else state.current_deployment_id
    if current is None:
        raise OperatorError(f"{name} has no deployment to restore under; deploy it first")
    event = events.new_event(
        "api",
        "restore",
        dedup_key=None,
        delivery_id=None,
        actor="rollhook restore (cli)",
        summary={"target": name, "backup": backup_id},
        jobs={name: {"action": "rollback", "rollback_to": current, "restore_backup": backup_id}},
        manual=True,
    )
    with ctx.records.begin() as conn:
        event_records.store_batch(conn, [event])
        queued = queue_job(conn, event.jobs[0].id)
    if queued is None:  # stored just now, in this transaction: cannot happen
        raise InfrastructureError("the restore's job was taken by somebody else")
    return queued[1]
