"""A remote snapshot back onto this host, with the safety of every restore.

```
restore_from_remote(ctx, target, "latest" | snapshot id, say=print) -> DeploymentRecord
```
The snapshot is imported as a local backup (restored from the repository into the
backup store, each of its sources mapped onto the target's current ones by
``contents.place``: by name, by host path, else by mount point, so a new host with
another data directory still finds ``/app/server/storage``). Then it is restored like
``rollhook restore NAME BACKUP``: a rollback to the current deployment with that
backup, recorded in the history, holding the target's lease; it backs up the data it
replaces first, gates the app on health afterwards, and puts that data back if the app
does not come back.

On a host where rollhook never deployed the target (a new machine, empty records), the
branch head is deployed first (its data paths, volumes and runtime ``.env`` are made
where this host keeps them), and the snapshot is restored under it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path

from rollhook import events
from rollhook.records import deployments
from rollhook.records import events as event_records
from rollhook.records.deployments import DeploymentRecord
from rollhook.records.schema import TERMINAL_STATUSES
from rollhook.targets import Target
from workers.backup import BackupStore, Source
from workers.backup.contents import place, target_tags
from workers.backup.remote import Repository, Snapshot
from workers.compose import Compose
from workers.context import WorkerContext
from workers.engine import DockerEngine
from workers.errors import InfrastructureError, OperatorError
from workers.intake import queue_job, queue_restore
from workers.layout import TargetDirs
from workers.offsite.repository import lock_path, repository_for, sharing
from workers.offsite.service import current_deployment, current_service
from workers.runner import run_target

Say = Callable[[str], None]


def find_snapshot(repo: Repository, target: Target, wanted: str) -> Snapshot:
    """The target's snapshot by (short) id, or its newest for ``latest``."""
    found = repo.snapshots(target_tags(target.name))
    if not found:
        raise OperatorError(f"{target.name} has no off-host snapshot in {repo.display}")
    if wanted == "latest":
        return found[0]
    for snap in found:
        if wanted in (snap.id, snap.short_id) or (len(wanted) >= 8 and snap.id.startswith(wanted)):
            return snap
    raise OperatorError(
        f"{target.name} has no snapshot {wanted!r} in {repo.display} "
        "(see `rollhook backups NAME --remote`)"
    )


def import_snapshot(
    ctx: WorkerContext, target: Target, wanted: str, say: Say
) -> tuple[str, Snapshot]:
    """The snapshot as a complete local backup of the target's current sources: its id."""
    repo = repository_for(ctx, target)
    with sharing(lock_path(ctx, repo.config.repository)):
        return _import(ctx, target, repo, wanted, say)


def _import(
    ctx: WorkerContext, target: Target, repo: Repository, wanted: str, say: Say
) -> tuple[str, Snapshot]:
    snap = find_snapshot(repo, target, wanted)
    contents = repo.contents(snap.id)
    compose = Compose(ctx.compose_argv, ctx.docker_host)
    with DockerEngine(ctx.docker_host) as engine:
        service = current_service(ctx, target, engine, compose)
    placed, unused = place(contents, service.sources, service.mounts)
    lacking = [p.source for p in placed if p.held is None]
    if lacking:
        names = ", ".join(f"{s.name} ({s.path})" for s in lacking)
        raise OperatorError(
            f"snapshot {snap.short_id} holds nothing for {names}; nothing was changed"
        )
    for held in unused:
        say(f"  the snapshot's {held.name} ({held.path}) has no place in {target.name} now")
    for p in placed:
        if p.matched_by != "name":
            say(
                f"  {p.source.path} <- {p.held.path if p.held else '-'} (matched by {p.matched_by})"
            )
    backup_id = f"remote-{snap.short_id}-{secrets.token_hex(2)}"
    store = BackupStore(TargetDirs(ctx.data_dir, target.name).backups)

    def fill(incoming: Path) -> list[tuple[Source, Path | None]]:
        tree = repo.restore(snap.id, into=incoming / "tree")
        return [(p.source, p.origin(tree)) for p in placed]

    store.adopt(
        backup_id,
        fill,
        note=f"from off-host snapshot {snap.short_id} of {snap.time.isoformat(timespec='seconds')}",
    )
    return backup_id, snap


def restore_from_remote(
    ctx: WorkerContext, target: Target, wanted: str, say: Say, *, wait: float = 3600.0
) -> DeploymentRecord:
    """Restore a remote snapshot; the restore's deployment record when it ended."""
    if current_deployment(ctx, target) is None:
        say(
            f"{target.name} was never deployed on this host: deploying {target.branch} first, "
            "then restoring the snapshot under it"
        )
        first = follow(ctx, target.name, queue_deploy(ctx, target.name), wait)
        if first.status != "succeeded":
            raise OperatorError(
                f"the first deployment {first.id} ended {first.status}"
                + (f" ({first.reason})" if first.reason else "")
                + "; nothing was restored"
            )
    backup_id, snap = import_snapshot(ctx, target, wanted, say)
    say(
        f"{target.name}: snapshot {snap.short_id} of {snap.time.isoformat(timespec='seconds')} "
        f"is backup {backup_id} here; restoring it"
    )
    return follow(ctx, target.name, queue_restore(ctx, target.name, backup_id), wait)


def queue_deploy(ctx: WorkerContext, name: str) -> str:
    """A person's deployment of the branch head, as the API would queue it."""
    event = events.new_event(
        "api",
        "deploy",
        dedup_key=None,
        delivery_id=None,
        actor="rollhook restore --from-remote (cli)",
        summary={"target": name, "reason": "restore onto a new host"},
        jobs={name: {"action": "deploy"}},
        manual=True,
    )
    with ctx.records.begin() as conn:
        event_records.store_batch(conn, [event])
        queued = queue_job(conn, event.jobs[0].id)
    if queued is None:
        raise InfrastructureError("the deployment's job was taken by somebody else")
    return queued[1]


def follow(ctx: WorkerContext, name: str, deployment_id: str, wait: float) -> DeploymentRecord:
    """Run the target here (or wait for the worker that holds it) until the record ends."""
    run_target(ctx, name)
    deadline = time.monotonic() + wait
    while True:
        with ctx.records.begin() as conn:
            record = deployments.get(conn, deployment_id)
        if record is not None and record.status in TERMINAL_STATUSES:
            return record
        if time.monotonic() > deadline:
            raise InfrastructureError(f"{deployment_id} did not end within {wait:.0f}s")
        time.sleep(1.0)
        run_target(ctx, name)  # a worker that held the lease may have left it queued
