"""``rollhook restore <target> <backup>``: put a backup's data back under the running version.

It goes through the same path as a rollback to the current deployment, so it is recorded
in the history, takes the target's lease, snapshots the data it replaces first, gates
the app on health afterwards, and undoes itself if the app does not come back.
"""

from __future__ import annotations

import time

from rollhook import broker, events
from rollhook.records import deployments
from rollhook.records import events as event_records
from rollhook.records import targets as target_state
from rollhook.records.schema import TERMINAL_STATUSES
from rollhook.settings import Settings
from workers.backup import BackupStore
from workers.context import build_context
from workers.intake import queue_job
from workers.layout import TargetDirs
from workers.runner import run_target


def restore_target(settings: Settings, name: str, backup_id: str) -> int:
    celery = broker.make_celery(settings.broker_url())
    ctx = build_context(settings, lambda task, args: celery.send_task(task, args=args, retry=False))
    if name not in ctx.targets:
        print(f"rollhook: unknown target {name!r}")
        return 1
    known = {info.id for info in BackupStore(TargetDirs(ctx.data_dir, name).backups).list()}
    if backup_id not in known:
        print(f"rollhook: {name} has no complete backup {backup_id!r} (see `rollhook backups`)")
        return 1
    with ctx.records.begin() as conn:
        current = (target_state.get(conn, name) or {}).get("current_deployment_id")
    if current is None:
        print(f"rollhook: {name} has no deployment to restore under; deploy it first")
        return 1
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
    assert queued is not None  # noqa: S101 - stored just now, in this transaction
    deployment_id = queued[1]
    print(f"{name}: restoring backup {backup_id} as deployment {deployment_id}", flush=True)
    run_target(ctx, name)  # returns at once if a worker holds the target: wait for it
    while True:
        with ctx.records.begin() as conn:
            record = deployments.get(conn, deployment_id) or {}
        if record.get("status") in TERMINAL_STATUSES:
            break
        time.sleep(1.0)
    for step in record.get("steps") or []:
        detail = f" - {step['detail']}" if step.get("detail") else ""
        print(f"  {step['name']:<16} {step['outcome']}{detail}")
    reason = f" ({record['reason']})" if record.get("reason") else ""
    print(f"{name}: {record.get('status')}{reason}")
    return 0 if record.get("status") == "succeeded" else 1
