"""Drift seen and acted on: inspect a target, record what drifted, queue a heal or give up.

Called by the engine-event watcher and by every poll (:func:`look`), and by the runner
after a deployment (:func:`settle`, under its own lease: what it just did is the new
truth). rollhook's own operations are never drift: :func:`look` compares only when the
target's lease is free before and after it read the containers, with the same fencing
token (every deployment takes the lease, with a new token, before it touches anything).

What it decides, in one transaction with the ``sync`` row:

- a new drift episode (nothing drifted before) is counted and told once ("drift found");
  its end is told once ("back in sync");
- with ``auto`` and ``self_heal``, not paused, not degraded and nothing queued or running
  (that would put it back anyway): a heal is queued (an event with source ``heal``,
  through the outbox) while the heals of the current deployment within the heal limit's
  window allow; past it the target is ``degraded``, told once, and left alone until a new
  desired state or a person's deploy, rollback, resume or sync (``sync.forgive``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from rollhook import events
from rollhook.events import NewEvent
from rollhook.records import deployments
from rollhook.records import events as event_records
from rollhook.records import sync as sync_records
from rollhook.records import targets as target_records
from rollhook.records.deployments import DeploymentRecord
from rollhook.records.schema import utcnow
from rollhook.targets import Target
from workers.context import WorkerContext
from workers.drift import Expected, Inspection, compare
from workers.engine import DockerEngine
from workers.heal import describe
from workers.outbox import publish

logger = logging.getLogger("rollhook.healing")


@dataclass
class Decision:
    """What recording an inspection decided: a heal to publish, notices to tell."""

    heal: NewEvent | None = None
    notices: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (kind, spec)


def inspect(target: Target, current: DeploymentRecord, engine: DockerEngine) -> Inspection:
    return compare(
        Expected.of(current, target.service),
        engine.containers(target.project),
        prune=target.sync.prune,
    )


def look(ctx: WorkerContext, target: Target, engine: DockerEngine) -> Inspection | None:
    """Inspect a target and act on what drifted; None when there was nothing to compare
    or rollhook itself was at work on the target (its lease was held or changed hands)."""
    with ctx.records.begin() as conn:
        before = target_records.get(conn, target.name)
        if before is None or before.lease_owner is not None or not before.current_deployment_id:
            return None
        current = deployments.get(conn, before.current_deployment_id)
    if current is None:
        return None
    inspection = inspect(target, current, engine)
    with ctx.records.begin() as conn:
        after = target_records.get(conn, target.name)
        if (
            after is None
            or after.lease_owner is not None
            or after.lease_token != before.lease_token
            or after.current_deployment_id != current.id
        ):
            return None  # rollhook touched it meanwhile: what was read may be its work
        decision = record(conn, target, inspection, current, may_heal=True)
    _publish(ctx, decision)
    return inspection


def settle(ctx: WorkerContext, target: Target, engine: DockerEngine) -> None:
    """After a deployment, under its lease: record what runs now (drift put back ends its
    episode). Never heals: the next look decides that. Never raises."""
    try:
        with ctx.records.begin() as conn:
            state = target_records.get(conn, target.name)
            current_id = state.current_deployment_id if state else None
            current = deployments.get(conn, current_id) if current_id else None
        if current is None:
            return
        inspection = inspect(target, current, engine)
        with ctx.records.begin() as conn:
            decision = record(conn, target, inspection, current, may_heal=False)
        _publish(ctx, decision)
    except Exception:
        logger.exception("%s: recording what runs after the deployment failed", target.name)


def record(
    conn: Connection,
    target: Target,
    inspection: Inspection,
    current: DeploymentRecord,
    *,
    may_heal: bool,
    now: datetime | None = None,
) -> Decision:
    """Record an inspection on the target's sync row; decide a heal, or degraded."""
    name, moment = target.name, now or utcnow()
    row = sync_records.lock(conn, name)
    drift = inspection.drift
    values: dict[str, Any] = {"live": inspection.live, "inspected_at": moment, "drift": drift}
    decision = Decision()
    before = {d["what"] for d in row.drift}
    if drift:
        counts = dict(row.drift_counts)
        for what in sorted({d["what"] for d in drift} - before):
            counts[what] = counts.get(what, 0) + 1
        values["drift_counts"] = counts
    if drift and not row.drift:
        values["drift_since"] = moment
        decision.notices.append(("drift", {"since": _iso(moment), "drift": drift}))
        logger.warning("%s: drift found: %s", name, describe(drift))
    elif row.drift and not drift:
        values["drift_since"] = None
        since = _iso(row.drift_since) if row.drift_since else _iso(moment)
        decision.notices.append(("in_sync", {"since": since, "drift": row.drift}))
        logger.info("%s: back in sync with %s", name, current.id)
    if drift and may_heal and _may_heal(conn, target, row):
        values.update(
            _heal_or_give_up(
                conn, target, row, current=current, drift=drift, moment=moment, decision=decision
            )
        )
    sync_records.change(conn, name, **values)
    return decision


def _may_heal(conn: Connection, target: Target, row: sync_records.SyncState) -> bool:
    if not (target.sync.auto and target.sync.self_heal) or row.degraded:
        return False
    state = target_records.get(conn, target.name)
    if state is None or state.paused:
        return False
    # Queued or running work applies a desired state, which puts the drift back too.
    return not deployments.running(conn, target.name) and not deployments.queued(conn, target.name)


def _heal_or_give_up(
    conn: Connection,
    target: Target,
    row: sync_records.SyncState,
    *,
    current: DeploymentRecord,
    drift: list[dict[str, str]],
    moment: datetime,
    decision: Decision,
) -> dict[str, Any]:
    limit, window = target.sync.heals_allowed
    since = moment - timedelta(seconds=window)
    heals = [at for at in (row.heals if row.heals_for == current.id else []) if _at(at) >= since]
    if len(heals) >= limit:
        reason = (
            f"{len(heals)} heals of {current.id} within {target.sync.heal_limit} and it "
            f"drifted again ({describe(drift)}); left alone until a new desired state or a "
            "person's deploy, rollback, resume or sync"
        )
        decision.notices.append(("degraded", {"since": _iso(moment), "reason": reason}))
        logger.error("%s: degraded: %s", target.name, reason)
        return {"degraded_at": moment, "degraded_reason": reason[:300]}
    decision.heal = events.new_event(
        "heal",
        "drift",
        dedup_key=None,
        delivery_id=None,
        actor=None,
        summary={"target": target.name, "heal_of": current.id, "drift": drift},
        jobs={target.name: {"action": "heal"}},
    )
    event_records.store_batch(conn, [decision.heal])
    logger.info("%s: healing %s (%d of %d)", target.name, current.id, len(heals) + 1, limit)
    return {
        "heals": [*heals, _iso(moment)],
        "heals_for": current.id,
        "heal_count": row.heal_count + 1,
    }


def _publish(ctx: WorkerContext, decision: Decision) -> None:
    if decision.heal is not None:
        publish(ctx, decision.heal.jobs)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)
