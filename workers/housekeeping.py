"""Beat's retention: what the embedded broker consumed, old events, and per target the
backups, releases and images that no rollback can need any more.

A rollback can go back to any of a target's last ``backup.keep`` good deployments, so
those keep their release folder, their override file, their images, and the backup that
holds the data as each left it. Everything older goes. A target is tidied only while
its lease is free, never under a running deployment.
"""

from __future__ import annotations

import logging
import shutil
from datetime import timedelta
from pathlib import Path

from rollhook import broker
from rollhook.broker import purge_consumed
from rollhook.records import deployments, events, hosts
from rollhook.records import targets as target_records
from rollhook.records.deployments import DeploymentRecord
from rollhook.records.targets import TargetState
from rollhook.targets import Target
from workers.backup import BackupStore
from workers.context import WorkerContext
from workers.engine import DockerEngine
from workers.layout import TargetDirs
from workers.lease import Heartbeat, host_lock

logger = logging.getLogger("rollhook.housekeeping")

HISTORY_SCAN = 500


def run(ctx: WorkerContext) -> None:
    if ctx.broker_file is not None:
        purged = purge_consumed(ctx.broker_file)
        if purged:  # the periodic tasks' own messages, mostly: bookkeeping, not news
            logger.debug("embedded broker: purged %d consumed message(s)", purged)
    with ctx.records.begin() as conn:
        forgotten = events.purge_events(conn, timedelta(days=ctx.event_retention_days))
        hosts.forget_old(conn)
    if forgotten:
        logger.info("forgot %d event(s) older than %g days", forgotten, ctx.event_retention_days)
    # A target's files and images are on its own host: only its host's workers tidy them;
    # the other hosts' targets are sent to their hosts.
    for target in ctx.targets.values():
        if target.host != ctx.host:
            ctx.send(broker.TIDY_TARGET, [target.name])
            continue
        try:
            tidy_target(ctx, target)
        except Exception:
            logger.exception("%s: housekeeping failed; will try again", target.name)


def tidy_target(ctx: WorkerContext, target: Target) -> None:
    """Prune one target, holding it like a deployment would (lease, heartbeat, host lock)."""
    with ctx.records.begin() as conn:
        token = target_records.acquire_lease(
            conn, target.name, f"{ctx.owner}/tidy", ctx.lease_seconds, only_free=True
        )
    if token is None:
        return  # a deployment runs, or a dead worker's awaits recovery: tidy next time
    try:
        dirs = TargetDirs(ctx.data_dir, target.name)
        with (
            host_lock(dirs.lock, timeout=0) as locked,
            Heartbeat(ctx.records, target.name, token, ctx.lease_seconds) as beat,
        ):
            if locked:
                _tidy(ctx, target, beat)
    finally:
        with ctx.records.begin() as conn:
            target_records.release_lease(conn, target.name, token)


def _needed(ctx: WorkerContext, target: Target) -> list[DeploymentRecord]:
    """Records a rollback may need: the current and last good deployment, the last
    ``backup.keep`` good ones, and whatever is queued or running."""
    with ctx.records.begin() as conn:
        state = target_records.get(conn, target.name) or TargetState(target.name)
        keep = {r.id: r for r in deployments.last_succeeded(conn, target.name, target.backup.keep)}
        for deployment_id in (state.current_deployment_id, state.last_good_deployment_id):
            if deployment_id and deployment_id not in keep:
                record = deployments.get(conn, deployment_id)
                if record is not None:
                    keep[record.id] = record
        for record in deployments.queued(conn, target.name) + deployments.running(
            conn, target.name
        ):
            keep[record.id] = record
    return list(keep.values())


def _tidy(ctx: WorkerContext, target: Target, beat: Heartbeat) -> None:
    dirs = TargetDirs(ctx.data_dir, target.name)
    needed = _needed(ctx, target)
    needed_ids = {r.id for r in needed}
    with ctx.records.begin() as conn:
        # The data as a needed deployment left it sits in the backup of its successor.
        protect = deployments.backups_taken_after(conn, target.name, needed_ids)
        protect |= {r.backup_id for r in needed if r.backup_id}
        history = deployments.history(conn, target.name, HISTORY_SCAN)
    if dirs.backups.exists():
        removed = BackupStore(dirs.backups).prune(target.backup.keep, protect)
        if removed:
            logger.info("%s: pruned backups %s", target.name, ", ".join(removed))
    if beat.cancelled():
        return
    commits = {r.commit for r in needed if r.commit}
    _remove_unlisted(dirs.root / "releases", commits)
    _remove_unlisted(dirs.root / "deployments", needed_ids)
    _prune_images(ctx, target, needed, history)


def _remove_unlisted(folder: Path, keep: set[str]) -> None:
    if not folder.exists():
        return
    for entry in folder.iterdir():
        if entry.name not in keep and not entry.name.startswith("."):
            shutil.rmtree(entry, ignore_errors=True)


def _images_of(records: list[DeploymentRecord]) -> set[str]:
    found: set[str] = set()
    for record in records:
        for change in (record.images or {}).values():
            found.update(v for v in (change.get("old"), change.get("new")) if v and "@" in v)
    return found


def _prune_images(
    ctx: WorkerContext,
    target: Target,
    needed: list[DeploymentRecord],
    history: list[DeploymentRecord],
) -> None:
    """Remove images rollhook deployed for this target that no kept record names.

    Only digest references rollhook itself recorded are considered, and the engine
    refuses any image a container (running or stopped) still uses.
    """
    keep = {change.get("new") for r in needed for change in (r.images or {}).values()}
    candidates = _images_of(history) - keep
    if not candidates:
        return
    with DockerEngine(ctx.docker_host) as engine:
        running = {c.image for c in engine.containers(target.project)}
        for image in sorted(candidates - running):
            if engine.remove_image(image):
                logger.info("%s: removed image %s (no rollback needs it)", target.name, image)
