"""Off-host snapshots of a target: on schedule, when asked, and each deployment's backup.

```
take(ctx, target, scheduled=True)   # the live data: staged while the app runs, then uploaded
ship(ctx, target, backup_id)        # a deployment's backup (the data as the old version left it)
```
Both claim the target's snapshot in the records (one at a time per target), then hold the
target's lease as housekeeping does (``only_free``: a deployment running, or a dead
worker's waiting for recovery, means "not now": the claim is given back and the next
tick tries again). Under the lease the data is staged (``workers/backup/staging.py``): a
first pass while the app runs and, when the target says ``final_pass: stop``, a second,
short one with the service stopped, which links everything the first pass copied and
did not change. The lease is released before restic uploads anything, so a slow or
unreachable repository never holds a deployment back; the stage is rollhook's own and
stays locked until restic is done with it. Then the target's retention is applied.

Every outcome is recorded (``records/remote_backups.py``); the first failure of a run
of failures is told (``telling.py``), the rest are recorded only.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from rollhook.records import remote_backups
from rollhook.records import targets as target_records
from rollhook.targets import Target
from workers.backup import BackupStore, Source
from workers.backup.adoption import link_copy
from workers.backup.contents import target_tags
from workers.backup.remote import Repository, Retention, Snapshot
from workers.backup.shipment import stage_backup
from workers.backup.staging import Stage, Staged
from workers.compose import Compose
from workers.context import WorkerContext
from workers.engine import DockerEngine
from workers.errors import DeployError, InfrastructureError, LeaseLost, OperatorError
from workers.health import gate
from workers.layout import TargetDirs
from workers.lease import Heartbeat, host_lock
from workers.offsite.repository import alone, lock_path, repository_for, sharing
from workers.offsite.service import current_service
from workers.offsite.telling import tell

logger = logging.getLogger("rollhook.offsite")

# A claim older than this is a dead worker's (restic's longest deadline is 6 hours).
CLAIM_STALE = timedelta(hours=7)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class SnapshotResult:
    status: Literal["taken", "busy", "failed"]
    detail: str
    snapshot: Snapshot | None = None
    staging_seconds: float = 0.0  # under the lease: both passes
    downtime_seconds: float = 0.0  # the service stopped for the final pass
    upload_seconds: float = 0.0
    forgotten: int = 0  # snapshots the retention removed


@dataclass
class _Prepared:
    staged: Staged
    seconds: float
    downtime: float = 0.0


Prepare = Callable[[Heartbeat], _Prepared]


def take(
    ctx: WorkerContext, target: Target, *, scheduled: bool = False, clock: Clock = utcnow
) -> SnapshotResult:
    """A snapshot of the live data now. ``scheduled``: the schedule moves on after it."""

    def prepare(beat: Heartbeat) -> _Prepared:
        return _stage_live(ctx, target, beat)

    what = "scheduled snapshot" if scheduled else "snapshot"
    return _snapshot(ctx, target, prepare, what=what, scheduled=scheduled, clock=clock)


def ship(
    ctx: WorkerContext, target: Target, backup_id: str, *, clock: Clock = utcnow
) -> SnapshotResult:
    """Send a deployment's backup off-host, timed as the backup was sealed."""
    dirs = TargetDirs(ctx.data_dir, target.name)
    try:
        info = BackupStore(dirs.backups).get(backup_id)
    except DeployError as exc:
        return SnapshotResult("failed", f"backup {backup_id}: {exc}")
    sealed = datetime.fromisoformat(info.finished_at)

    def prepare(beat: Heartbeat) -> _Prepared:
        began = time.monotonic()
        mounts: dict[str, str] = {}
        try:
            with DockerEngine(ctx.docker_host) as engine:
                compose = Compose(ctx.compose_argv, ctx.docker_host)
                mounts = current_service(ctx, target, engine, compose).mounts
        except DeployError as exc:  # the manifest goes without mount points
            logger.info("%s: mount points unknown (%s)", target.name, exc)
        staged = stage_backup(
            Stage(dirs.stage), target.name, dirs.backups / backup_id, info, mounts
        )
        return _Prepared(staged, time.monotonic() - began)

    return _snapshot(
        ctx,
        target,
        prepare,
        what=f"off-host copy of backup {backup_id}",
        scheduled=False,
        clock=clock,
        time_of_data=sealed,
        tags=[f"backup={backup_id}"],
    )


def take_local(ctx: WorkerContext, target: Target, *, clock: Clock = utcnow) -> SnapshotResult:
    """A backup of the live data now, kept on this host (``rollhook backup NAME``).

    Staged as for an off-host snapshot (SQLite copied with its online backup API while
    the app runs; a final pass when the remote says ``final_pass: stop``), then linked
    into the target's backup store, where ``rollhook restore NAME <id>`` finds it.
    """
    dirs = TargetDirs(ctx.data_dir, target.name)
    began = time.monotonic()
    try:
        prepared = _holding(ctx, target, lambda beat: _stage_live(ctx, target, beat))
        if prepared is None:
            return SnapshotResult("busy", f"{target.name} is being deployed; try again later")
        backup_id = f"manual-{clock().strftime('%Y%m%dT%H%M%S')}"
        with prepared.staged as staged:
            tree = staged.tree

            def fill(incoming: Path) -> list[tuple[Source, Path | None]]:
                placed: list[tuple[Source, Path | None]] = []
                for n, held in enumerate(staged.contents.sources):
                    source = Source(held.name, Path(held.path))
                    if held.kind == "missing":
                        placed.append((source, None))
                        continue
                    copy = incoming / str(n)
                    link_copy(str(tree / held.location.lstrip("/")), str(copy))
                    placed.append((source, copy))
                return placed

            info = BackupStore(dirs.backups).adopt(backup_id, fill, note="rollhook backup")
    except DeployError as exc:
        return SnapshotResult("failed", f"backup: {exc}")
    took = time.monotonic() - began
    return SnapshotResult(
        "taken",
        f"backup {info.id}: {info.files} files, {info.bytes_copied >> 20} MiB in {took:.1f}s",
        staging_seconds=prepared.seconds,
        downtime_seconds=prepared.downtime,
    )


# -- the common path -----------------------------------------------------------------


def _snapshot(
    ctx: WorkerContext,
    target: Target,
    prepare: Prepare,
    *,
    what: str,
    scheduled: bool,
    clock: Clock,
    time_of_data: datetime | None = None,
    tags: Sequence[str] = (),
) -> SnapshotResult:
    remote = target.backup.remote
    if remote is None:
        raise OperatorError(f"targets.{target.name}.backup.remote is not set: no repository")
    name = target.name
    now = clock()
    with ctx.records.begin() as conn:
        if not remote_backups.claim(conn, name, now, CLAIM_STALE):
            return SnapshotResult("busy", f"a snapshot of {name} is being taken already")
    began = time.monotonic()
    result = SnapshotResult("failed", "not attempted")
    try:
        repo = repository_for(ctx, target)
        lock = lock_path(ctx, remote.repository)
        with sharing(lock):  # a wrong password or a missing server, before any staging
            repo.init_if_missing()
        prepared = _holding(ctx, target, prepare)
        if prepared is None:
            with ctx.records.begin() as conn:
                remote_backups.release(conn, name)
            result = SnapshotResult("busy", f"{name} is being deployed; the next tick tries again")
            return result
        with prepared.staged as staged, sharing(lock):
            uploading = time.monotonic()
            snap = repo.snapshot(
                staged.paths,
                cwd=staged.tree,
                tags=[*staged.contents.tags(), *tags],
                host=socket.gethostname(),
                time=time_of_data or now,
            )
            upload = time.monotonic() - uploading
        took = time.monotonic() - began
        with ctx.records.begin() as conn:
            remote_backups.succeeded(
                conn,
                name,
                at=clock(),
                snapshot_id=snap.id,
                duration=took,
                size=snap.size,
                added=snap.data_added,
            )
        policy = remote.retention
        removed, kept_all = _apply_retention(
            name, repo, Retention(policy.last, policy.daily, policy.weekly, policy.monthly), lock
        )
        note = " (some files could not be read)" if snap.incomplete else ""
        note += kept_all
        logger.info(
            "%s: %s %s taken in %.1fs (%d MiB, %d MiB new)%s; retention removed %d",
            name,
            what,
            snap.short_id,
            took,
            (snap.size or 0) >> 20,
            (snap.data_added or 0) >> 20,
            note,
            removed,
        )
        result = SnapshotResult(
            "taken",
            f"{what} {snap.short_id} in {repo.display}{note}",
            snap,
            prepared.seconds,
            prepared.downtime,
            upload,
            removed,
        )
    except LeaseLost as exc:
        result = _failed(ctx, target, what, f"the lease was lost while staging ({exc})", clock)
    except DeployError as exc:
        result = _failed(ctx, target, what, str(exc), clock)
    except Exception as exc:  # a bug: recorded and told, never left "running"
        logger.exception("%s: %s failed unexpectedly", name, what)
        result = _failed(ctx, target, what, f"internal error: {type(exc).__name__}", clock)
    finally:
        if scheduled and result.status != "busy" and remote.schedule is not None:
            with ctx.records.begin() as conn:
                due = remote.schedule.next_after(clock())
                remote_backups.attempted(conn, name, now, due)
    return result


def _apply_retention(name: str, repo: Repository, policy: Retention, lock: Path) -> tuple[int, str]:
    """``restic forget --prune`` by the target's retention, after a snapshot is recorded
    as taken: (snapshots removed, a note when the retention could not be applied).

    A repository shared by several targets or hosts is locked by each upload, and the
    prune needs it alone: then the retention waits for the next snapshot (it applies to
    all the target's snapshots, so nothing is missed), and the snapshot stays a success.
    """
    try:
        with alone(lock) as taken:
            if not taken:
                logger.info("%s: retention waits: the repository is in use on this host", name)
                return 0, "; retention waits for the next one (the repository is in use)"
            forgotten = repo.forget(policy, tags=target_tags(name))
    except DeployError as exc:
        logger.warning("%s: retention not applied, the next snapshot tries again: %s", name, exc)
        return 0, f"; retention not applied this time ({exc})"
    return len(forgotten.removed), ""


def give_up(
    ctx: WorkerContext, target: Target, what: str, error: str, *, clock: Clock = utcnow
) -> SnapshotResult:
    """Record (and, first of a run, tell) a snapshot that will not be tried again."""
    return _failed(ctx, target, what, error, clock)


def _failed(
    ctx: WorkerContext, target: Target, what: str, error: str, clock: Clock
) -> SnapshotResult:
    at = clock()
    detail = f"{what}: {error}"
    with ctx.records.begin() as conn:
        failures = remote_backups.failed(conn, target.name, at=at, error=detail)
    logger.error("%s: %s (%d in a row)", target.name, detail, failures)
    if failures == 1:
        tell(ctx, target, "failed", detail, at)
    return SnapshotResult("failed", detail)


def _holding(ctx: WorkerContext, target: Target, prepare: Prepare) -> _Prepared | None:
    """``prepare`` under the target's lease and host lock; None when a deployment has it."""
    name = target.name
    with ctx.records.begin() as conn:
        token = target_records.acquire_lease(
            conn, name, f"{ctx.owner}/offsite", ctx.lease_seconds, only_free=True
        )
    if token is None:
        return None
    try:
        dirs = TargetDirs(ctx.data_dir, name)
        with (
            host_lock(dirs.lock, timeout=0) as locked,
            Heartbeat(ctx.records, name, token, ctx.lease_seconds) as beat,
        ):
            return prepare(beat) if locked else None
    finally:
        with ctx.records.begin() as conn:
            target_records.release_lease(conn, name, token)


def _stage_live(ctx: WorkerContext, target: Target, beat: Heartbeat) -> _Prepared:
    """Stage the live data: while the app runs, then (``final_pass: stop``) once more with
    the service stopped, which costs the changes since the first pass."""
    remote = target.backup.remote
    dirs = TargetDirs(ctx.data_dir, target.name)
    compose = Compose(ctx.compose_argv, ctx.docker_host)
    began = time.monotonic()
    with DockerEngine(ctx.docker_host) as engine:
        service = current_service(ctx, target, engine, compose)
        if not service.sources:
            raise OperatorError(
                f"{target.service} of {target.name} mounts no data: nothing to back up"
            )
        stage = Stage(dirs.stage)
        staged = stage.build(target.name, service.sources, service.mounts)
        if remote is None or remote.final_pass != "stop":  # noqa: S105 - a pass over data
            return _Prepared(staged, time.monotonic() - began)
        staged.close()
        if beat.cancelled():
            raise LeaseLost(f"{target.name}: lease lost before the final pass")
        stopped = time.monotonic()
        compose.stop(
            service.spec,
            [target.service],
            timeout=target.stop_timeout + 30,
            grace=target.stop_timeout,
        )
        try:
            staged = stage.build(target.name, service.sources, service.mounts)
        finally:
            compose.up(service.spec, timeout=300)
            downtime = time.monotonic() - stopped
        try:
            _gate(target, engine, beat)
        except BaseException:
            staged.close()
            raise
    return _Prepared(staged, time.monotonic() - began, downtime)


def _gate(target: Target, engine: DockerEngine, beat: Heartbeat) -> None:
    def watch() -> object:
        found = [c for c in engine.containers(target.project) if c.service == target.service]
        return found[0].state if found else None

    health = target.health
    result = gate(
        health.url,
        timeout=health.timeout,
        settle=health.settle,
        interval=health.interval,
        watch=watch,  # type: ignore[arg-type]
        cancelled=beat.cancelled,
    )
    if not result.ok:
        raise InfrastructureError(
            f"{target.service} did not come back healthy after the final pass: {result.reason}"
        )
