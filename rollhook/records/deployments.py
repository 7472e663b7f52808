"""Deployment records: created queued, run under a target's lease, ended once.

Writes made while a deployment runs are fenced by the lease token it was started with;
a record is final once its status is terminal and is never changed after that.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, literal, select, update

from rollhook.ids import new_id
from rollhook.jobs import Job
from rollhook.records.schema import (
    TERMINAL_STATUSES,
    UTCDateTime,
    deployments,
    row_dict,
    utcnow,
)
from rollhook.records.targets import holds_lease


@dataclass(frozen=True)
class DeploymentRecord:
    """One ``deployments`` row, its fields in the table's order."""

    id: str
    target: str
    kind: str  # deploy | rollback | heal (re-applies the current one) | sync (until resolved)
    status: str  # queued | running | one of TERMINAL_STATUSES
    reason: str | None
    trigger: dict[str, Any]  # rollhook.jobs.Trigger as stored: source, event_id, ...
    requested: dict[str, Any]  # job_id, manual, ref, image, rollback_to, pins, ...
    commit: str | None
    commit_info: dict[str, Any] | None  # sha, message, author, date, url
    images: dict[str, dict[str, Any]]  # service -> {"old": ref, "new": ref}
    config_hash: str | None
    fingerprint: str | None
    previous_deployment_id: str | None
    backup_id: str | None
    superseded_by: str | None
    steps: list[dict[str, Any]]  # name, outcome, started_at, finished_at, detail
    log: str
    lease_token: int | None
    attempt: int
    children: list[dict[str, Any]]  # process groups to end on recovery
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    containers: dict[str, Any] | None = None  # service -> compose config hash, gate passed
    # start-first only (workers.colours): which colour serves and each one's containers
    colours: dict[str, Any] | None = None

    @classmethod
    def from_row(cls, row: Any) -> DeploymentRecord:
        return cls(**row._mapping)

    def as_dict(self) -> dict[str, Any]:
        """As stored, in the table's column order (what the API answers, minus internals)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def manual(self) -> bool:
        """A person asked for it (the API or the CLI)."""
        return bool(self.requested.get("manual"))


def create_queued(conn: Connection, job: Job) -> str:
    deployment_id = new_id("d")
    requested: dict[str, Any] = {"job_id": job.id, "manual": job.manual}
    if job.force:
        requested["force"] = True
    if job.ref:
        requested["ref"] = job.ref
    if job.image:
        requested["image"] = job.image.model_dump()
    if job.action == "rollback":
        requested["rollback_to"] = job.rollback_to
        requested["restore_data"] = job.restore_data
        requested["restore_backup"] = job.restore_backup
    conn.execute(
        deployments.insert().values(
            id=deployment_id,
            target=job.target,
            kind=job.action,
            status="queued",
            trigger=job.trigger.model_dump(),
            requested=requested,
            images={},
            steps=[],
            log="",
            children=[],
            attempt=0,
            # When the event arrived, not when a worker got to it: "newest wins" means
            # the newest event, whatever order parallel workers claimed jobs in.
            created_at=job.received_at,
        )
    )
    return deployment_id


def queued(conn: Connection, target: str) -> list[DeploymentRecord]:
    """Queued deployments of a target, oldest first."""
    rows = conn.execute(
        select(deployments)
        .where(deployments.c.target == target, deployments.c.status == "queued")
        .order_by(deployments.c.created_at, deployments.c.id)
    )
    return [DeploymentRecord.from_row(r) for r in rows]


def running(conn: Connection, target: str) -> list[DeploymentRecord]:
    rows = conn.execute(
        select(deployments).where(deployments.c.target == target, deployments.c.status == "running")
    )
    return [DeploymentRecord.from_row(r) for r in rows]


def supersede(conn: Connection, ids: list[str], by: str, token: int) -> None:
    if ids:
        conn.execute(
            update(deployments)
            .where(deployments.c.id.in_(ids), deployments.c.status == "queued", holds_lease(token))
            .values(
                status="superseded",
                superseded_by=by,
                reason=f"coalesced into {by}",
                finished_at=utcnow(),
            )
        )


def start(
    conn: Connection,
    deployment_id: str,
    token: int,
    requested: dict[str, Any],
    **values: Any,
) -> bool:
    """queued -> running under the given lease token (or resume a running one)."""
    started = conn.execute(
        update(deployments)
        .where(
            deployments.c.id == deployment_id,
            deployments.c.status.in_(["queued", "running"]),
            holds_lease(token),
        )
        .values(
            status="running",
            lease_token=token,
            requested=requested,
            # A literal of our own type: a bare datetime would skip the UTC conversion.
            started_at=func.coalesce(deployments.c.started_at, literal(utcnow(), UTCDateTime)),
            attempt=deployments.c.attempt + 1,
            **values,
        )
    ).rowcount
    return bool(started)


def update_fenced(conn: Connection, deployment_id: str, token: int, **values: Any) -> bool:
    """Change a running deployment, only while its lease token is still ours."""
    changed = conn.execute(
        update(deployments)
        .where(
            deployments.c.id == deployment_id,
            deployments.c.lease_token == token,
            deployments.c.status == "running",
            # The target's lease too: whoever took it over (even without adopting this
            # record yet) fences out a writer that lost it.
            holds_lease(token),
        )
        .values(**values)
    ).rowcount
    return bool(changed)


def finish(
    conn: Connection,
    deployment_id: str,
    token: int,
    status: str,
    reason: str | None,
    **values: Any,
) -> bool:
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"not a final status: {status}")
    return update_fenced(
        conn, deployment_id, token, status=status, reason=reason, finished_at=utcnow(), **values
    )


def finish_unstarted(conn: Connection, deployment_id: str, status: str, reason: str) -> None:
    """End a queued deployment that never ran (paused target, unknown target...)."""
    conn.execute(
        update(deployments)
        .where(deployments.c.id == deployment_id, deployments.c.status == "queued")
        .values(status=status, reason=reason, finished_at=utcnow())
    )


def note_pending(conn: Connection, ids: list[str], reason: str) -> None:
    """Say why queued deployments wait (a closed deploy window); they stay queued."""
    if ids:
        conn.execute(
            update(deployments)
            .where(
                deployments.c.id.in_(ids),
                deployments.c.status == "queued",
                deployments.c.reason.is_distinct_from(reason),
            )
            .values(reason=reason)
        )


def get(conn: Connection, deployment_id: str) -> DeploymentRecord | None:
    row = conn.execute(select(deployments).where(deployments.c.id == deployment_id)).first()
    return None if row is None else DeploymentRecord.from_row(row)


def history(conn: Connection, target: str | None, limit: int) -> list[DeploymentRecord]:
    query = select(deployments).order_by(deployments.c.created_at.desc(), deployments.c.id.desc())
    if target is not None:
        query = query.where(deployments.c.target == target)
    return [DeploymentRecord.from_row(r) for r in conn.execute(query.limit(limit))]


def last_with_status(
    conn: Connection,
    target: str,
    statuses: tuple[str, ...],
    before: str | None = None,
    kind: str | None = None,
) -> DeploymentRecord | None:
    query = (
        select(deployments)
        .where(deployments.c.target == target, deployments.c.status.in_(statuses))
        .order_by(deployments.c.created_at.desc(), deployments.c.id.desc())
    )
    if kind is not None:
        query = query.where(deployments.c.kind == kind)
    if before is not None:
        query = query.where(deployments.c.id < before)
    row = conn.execute(query.limit(1)).first()
    return None if row is None else DeploymentRecord.from_row(row)


def last_succeeded(conn: Connection, target: str, limit: int) -> list[DeploymentRecord]:
    rows = conn.execute(
        select(deployments)
        .where(deployments.c.target == target, deployments.c.status == "succeeded")
        .order_by(deployments.c.created_at.desc(), deployments.c.id.desc())
        .limit(limit)
    )
    return [DeploymentRecord.from_row(r) for r in rows]


def backups_taken_after(conn: Connection, target: str, ids: set[str]) -> set[str]:
    """Backups taken by deployments that followed these: the data each of them left."""
    rows = conn.execute(
        select(deployments.c.backup_id).where(
            deployments.c.target == target,
            deployments.c.previous_deployment_id.in_(ids),
            deployments.c.backup_id.is_not(None),
        )
    )
    return {backup for (backup,) in rows}


def data_left_by(conn: Connection, to: DeploymentRecord) -> str | None:
    """The backup holding the data as the release of ``to`` left it, or None.

    That is the newest backup taken when a deployment replaced a deployment running the
    same release (commit and config) as ``to`` -- it may be newer than ``to`` itself
    (after a rollback to it, say). A ``rollhook restore`` snapshot never counts: it
    holds the data somebody chose to replace.
    """
    same = select(deployments.c.id).where(
        deployments.c.target == to.target,
        deployments.c.status == "succeeded",
        deployments.c.commit == to.commit,
        deployments.c.config_hash == to.config_hash,
    )
    rows = conn.execute(
        select(deployments.c.backup_id, deployments.c.requested)
        .where(
            deployments.c.previous_deployment_id.in_(same),
            deployments.c.backup_id.is_not(None),
            deployments.c.status.in_(["succeeded", "rolled_back", "failed"]),
        )
        .order_by(deployments.c.created_at.desc())
        .limit(50)
    )
    for backup_id, requested in rows:
        if not (requested or {}).get("restore_backup"):
            return str(backup_id)
    return None


def for_event(conn: Connection, deployment_ids: list[str]) -> list[dict[str, Any]]:
    if not deployment_ids:
        return []
    rows = conn.execute(
        select(
            deployments.c.id,
            deployments.c.target,
            deployments.c.status,
            deployments.c.reason,
            deployments.c.superseded_by,
        ).where(deployments.c.id.in_(deployment_ids))
    )
    return [row_dict(r) for r in rows]


def for_metrics(conn: Connection) -> list[tuple[str, str, str, datetime | None, datetime | None]]:
    """Every deployment's target, kind, status, start and end."""
    rows = conn.execute(
        select(
            deployments.c.target,
            deployments.c.kind,
            deployments.c.status,
            deployments.c.started_at,
            deployments.c.finished_at,
        )
    )
    return [(r.target, r.kind, r.status, r.started_at, r.finished_at) for r in rows]
