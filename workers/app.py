"""The Celery app for the worker and beat processes: ``celery -A workers.app worker|beat``.

The environment is read once, here; tasks are thin wrappers that hand JSON arguments to
plain functions. Deployment tasks are acked when received (not late): a deployment is
made safe to re-run by its lease and journal, and recovery comes from the records,
never from broker redelivery.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

from celery import signals

from rollhook import broker
from rollhook.settings import load_settings
from workers import housekeeping, logs, reconcile
from workers.context import build_context
from workers.dispatcher import dispatch_outbox, kick_targets
from workers.hostbeat import HostBeat
from workers.hostwatch import watch_hosts
from workers.intake import take_job
from workers.notify import RetryLater, deliver, pending
from workers.offsite import tasks as offsite_tasks
from workers.runner import run_target
from workers.watcher import DriftWatcher

logger = logging.getLogger("rollhook.worker")

settings = load_settings()
app = broker.make_celery(
    settings.broker_url(),
    beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
    beat_schedule={
        "dispatch-outbox": {"task": broker.DISPATCH_OUTBOX, "schedule": 2.0},
        "housekeeping": {"task": broker.HOUSEKEEPING, "schedule": 300.0},
        # The reconcile loop's tick: polls the targets that are due (each has its own
        # interval); a tick with nothing due reads one table and ends.
        "reconcile": {"task": broker.RECONCILE, "schedule": reconcile.TICK},
        # Off-host snapshots and drills that are due (the work runs on a worker).
        "offsite-tick": {"task": broker.OFFSITE_TICK, "schedule": 60.0},
    },
    worker_concurrency=settings.worker_concurrency,
)
# Every task in the beat schedule (entries added later too) is quiet when idle; lines
# about a deployment name it; no warning about root, which rollhook must be.
logs.configure(app.conf.beat_schedule)


def _send(name: str, args: list[Any]) -> None:
    """Publish a task; one that needs a target's host goes to that host's queue."""
    _publish(name, args)


ctx = build_context(settings, _send)
_publish = broker.sender(app, ctx.host_of, retry=True, retry_policy={"max_retries": 2})


@signals.worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # Connections must not cross a fork; each prefork child also names itself as owner.
    ctx.records.dispose(close=False)
    ctx.refresh_owner()


watcher = DriftWatcher(ctx)
heartbeat = HostBeat(ctx)


@signals.worker_ready.connect
def _on_worker_start(**_: Any) -> None:
    """Recovery at start: finish what a dead worker left, dispatch what waits; then watch
    the engine's events for drift (a thread of this main process)."""
    # Everything loaded so far lives as long as the process: out of the collector's way.
    # Stopping then takes seconds less (the final collection walked all of it: 2-4 s
    # on a loaded host, most of an idle worker's shutdown; cli/processes.py's grace).
    gc.freeze()
    try:
        dispatch_outbox(ctx)
        kick_targets(ctx)
    except Exception:
        logger.exception("start-up recovery failed; beat will try again")
    heartbeat.start()
    watcher.start()


@signals.worker_shutdown.connect
def _on_worker_stop(**_: Any) -> None:
    heartbeat.stop()
    watcher.stop()


@app.task(name=broker.PROCESS_JOBS, ignore_result=True)
def process_jobs(job_jsons: list[str]) -> None:
    """Record each job as queued work (any worker may); run its target here when it is on
    this worker's host, else (or when there are several) send it to its host's queue."""
    targets = sorted({t for t in (take_job(ctx, j) for j in job_jsons) if t is not None})
    if len(targets) == 1 and ctx.here(targets[0]):
        run_target(ctx, targets[0])
        return
    for target in targets:
        _send(broker.RUN_TARGET, [target])


@app.task(name=broker.RUN_TARGET, ignore_result=True)
def run(target: str) -> None:
    run_target(ctx, target)


# Delivery is idempotent (a lease on the row, progress committed after every network
# call), so a notification may be acked late and re-run after a worker dies.
@app.task(name=broker.NOTIFY, bind=True, ignore_result=True, max_retries=8, acks_late=True)
def notify(self: Any, notification_id: str) -> None:
    try:
        deliver(ctx.records, ctx.notifiers, notification_id)
    except RetryLater as exc:
        raise self.retry(countdown=exc.seconds) from exc


@app.task(name=broker.DISPATCH_OUTBOX, ignore_result=True)
def dispatch() -> None:
    dispatch_outbox(ctx)
    kick_targets(ctx)
    try:
        watch_hosts(ctx)
    except Exception:
        logger.exception("watching the hosts' heartbeats failed; the next tick will")
    with ctx.records.begin() as conn:
        waiting = pending(conn, older_than=60.0)
    for notification_id in waiting:
        _send(broker.NOTIFY, [notification_id])


@app.task(name=broker.HOUSEKEEPING, ignore_result=True)
def tidy() -> None:
    housekeeping.run(ctx)


# Acked when received, like deployments: a tick lost with its worker is simply the next
# tick's work (the targets it claimed are due again one interval later).
@app.task(name=broker.RECONCILE, ignore_result=True)
def reconcile_tick() -> None:
    reconcile.tick(ctx)


@app.task(name=broker.INSPECT_TARGET, ignore_result=True)
def inspect_target(target: str) -> None:
    if ctx.here(target):
        reconcile.inspect_one(ctx, ctx.targets[target])


@app.task(name=broker.TIDY_TARGET, ignore_result=True)
def tidy_target(target: str) -> None:
    if ctx.here(target):
        housekeeping.tidy_target(ctx, ctx.targets[target])


@app.task(name=broker.OFFSITE_TICK, ignore_result=True)
def offsite_tick() -> None:
    offsite_tasks.tick(ctx)


@app.task(name=broker.OFFSITE_SNAPSHOT, ignore_result=True)
def offsite_snapshot(target: str, why: str = "schedule") -> None:
    offsite_tasks.snapshot(ctx, target, scheduled=why == "schedule")


# A deployment's backup waits while the target is busy (the deployment that took it may
# still hold it): tried again every minute for half an hour, then recorded as failed.
@app.task(name=broker.OFFSITE_SHIP, bind=True, ignore_result=True, max_retries=30)
def offsite_ship(self: Any, target: str, backup_id: str) -> None:
    last_try = self.request.retries >= self.max_retries
    if offsite_tasks.ship(ctx, target, backup_id, last_try=last_try) == "busy":
        raise self.retry(countdown=60)


@app.task(name=broker.DRILL, ignore_result=True)
def drill(target: str) -> None:
    offsite_tasks.drill(ctx, target)
