"""Beat's tick for off-host backups (``rollhook.offsite_tick``, every minute, on a worker).

For each target with a remote: keep its recorded schedules in step with the targets file,
publish a snapshot task when one is due (the task claims it, so a tick that comes again
before it started publishes a second task that finds it taken), take a due drill and
publish it, and tell once when the last good snapshot is older than twice the schedule.
``now`` is given: tests drive the schedule with their own clock.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from rollhook.broker import DRILL, OFFSITE_SNAPSHOT
from rollhook.records import remote_backups
from rollhook.records.remote_backups import RemoteBackupState
from rollhook.schedule import is_stale
from rollhook.targets import Target
from workers.context import WorkerContext
from workers.offsite.snapshots import CLAIM_STALE
from workers.offsite.telling import tell

logger = logging.getLogger("rollhook.offsite")


def tick(ctx: WorkerContext, now: datetime) -> list[tuple[str, str]]:
    """What was published: (task, target) pairs."""
    sent: list[tuple[str, str]] = []
    for target in ctx.targets.values():
        try:
            sent += _tick(ctx, target, now)
        except Exception:
            logger.exception("%s: off-host backup tick failed; trying again next time", target.name)
    return sent


def _tick(ctx: WorkerContext, target: Target, now: datetime) -> list[tuple[str, str]]:
    remote, drill = target.backup.remote, target.backup.drill
    name = target.name
    with ctx.records.begin() as conn:
        state = remote_backups.get(conn, name)
    if remote is None and (state is None or (state.schedule is None and not state.drill_schedule)):
        return []
    sent: list[tuple[str, str]] = []
    schedule = remote.schedule if remote is not None else None
    text = str(schedule) if schedule is not None else None
    if state is None or state.schedule != text:
        with ctx.records.begin() as conn:
            due = schedule.next_after(now) if schedule is not None else None
            remote_backups.set_schedule(conn, name, text, due, now)
            state = remote_backups.get(conn, name)
        if text:
            logger.info("%s: off-host snapshots %s, next at %s", name, text, due)
    if state is None:  # ensured just above
        return sent
    if schedule is not None and _due(state, now):
        ctx.send(OFFSITE_SNAPSHOT, [name, "schedule"])
        sent.append((OFFSITE_SNAPSHOT, name))
    since = state.scheduled_since or now
    if (
        schedule is not None
        and state.stale_told_at is None
        and is_stale(state.last_success_at, since, schedule, now)
    ):
        with ctx.records.begin() as conn:
            remote_backups.told_stale(conn, name, now)
        last = state.last_success_at
        age = (
            f"the last one was taken at {last.isoformat(timespec='minutes')}"
            if last
            else (
                f"none was taken since the schedule began at {since.isoformat(timespec='minutes')}"
            )
        )
        tell(
            ctx, target, "stale", f"no good snapshot for over {_twice(schedule.period)}: {age}", now
        )
    dschedule = drill.schedule if drill is not None and remote is not None else None
    dtext = str(dschedule) if dschedule is not None else None
    if state.drill_schedule != dtext:
        with ctx.records.begin() as conn:
            due = dschedule.next_after(now) if dschedule is not None else None
            remote_backups.set_drill_schedule(conn, name, dtext, due)
    elif dschedule is not None:
        with ctx.records.begin() as conn:
            claimed = remote_backups.drill_claim(conn, name, now, dschedule.next_after(now))
        if claimed:
            ctx.send(DRILL, [name])
            sent.append((DRILL, name))
    return sent


def _due(state: RemoteBackupState, now: datetime) -> bool:
    if state.next_due_at is None or state.next_due_at > now:
        return False
    return state.running_since is None or now - state.running_since > CLAIM_STALE


def _twice(period: timedelta) -> str:
    hours = int(2 * period.total_seconds() // 3600)
    return f"{hours // 24} days" if hours >= 48 else f"{hours} hours"
