"""Drift seen and acted on: inspect a target, record what drifted, queue a heal or give up.

Called by the engine-event watcher and by every poll (:func:`look`), and by the runner
after a deployment (:func:`settle`, under its own lease: what it just did is the new
truth). rollhook's own operations are never drift: :func:`look` compares only when the
target's lease is free before and after it read the containers, with the same fencing
token (every deployment takes the lease, with a new token, before it touches anything).

What it decides, in one transaction with the ``sync`` row:

- a new drift episode (nothing drifted before) is counted and told once ("drift found");
  its end is told once ("back in sync", in the drift message's thread); the notices'
  rows are written in the same transaction (``notify.schedule_target_notice``, which
  makes each one once) and their keys kept in ``sync.notified``;
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
from rollhook.broker import NOTIFY
from rollhook.events import NewEvent
from rollhook.records import deployments
from rollhook.records import events as event_records
from rollhook.records import sync as sync_records
from rollhook.records import targets as target_records
from rollhook.records.deployments import DeploymentRecord
from rollhook.records.schema import utcnow
from rollhook.targets import Target
from workers import colours
from workers.context import WorkerContext
from workers.drift import Expected, Inspection, compare
from workers.engine import DockerEngine
from workers.heal import describe
from workers.notify import Notifiers, schedule_target_notice
from workers.outbox import publish

logger = logging.getLogger("rollhook.healing")

KEEP_NOTIFIED = 20  # notice keys kept on the sync row (the rows themselves dedup too)


@dataclass
class Decision:
    """What recording an inspection decided: a heal to publish, notices to tell."""

    heal: NewEvent | None = None
    notices: list[News] = field(default_factory=list)
    notification_ids: list[str] = field(default_factory=list)  # to publish after the commit


@dataclass(frozen=True)
class News:
    """A target notice to tell once: its event, when it began, what it says."""

    event: str  # drift | in_sync | degraded
    since: str
    headline: str
    details: list[str]
    episode: str | None = None  # when the drift it belongs to was found

    @property
    def key(self) -> str:
        return f"{self.event}:{self.since}"


def inspect(target: Target, current: DeploymentRecord, engine: DockerEngine) -> Inspection:
    """What runs compared with ``current``: for start-first, the colour it says serves
    (the other colour's containers are stopped on purpose)."""
    colour = colours.serving_colour(target, current)
    return compare(
        Expected.of(current, target.service),
        engine.containers(colour.project if colour is not None else target.project),
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
        decision = record(conn, target, inspection, current, may_heal=True, notifiers=ctx.notifiers)
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
            decision = record(
                conn, target, inspection, current, may_heal=False, notifiers=ctx.notifiers
            )
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
    notifiers: Notifiers | None = None,
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
    episode = _iso(row.drift_since) if row.drift_since else None
    if drift and not row.drift:
        values["drift_since"] = moment
        episode = _iso(moment)
        decision.notices.append(
            News(
                "drift",
                episode,
                f"{name}: drift found ({_short(drift)})",
                [*_lines(drift), *_what_next(target)],
            )
        )
        logger.warning("%s: drift found: %s", name, describe(drift))
    elif row.drift and not drift:
        values["drift_since"] = None
        was = f"drifted since {episode or '?'}: {describe(row.drift)}"
        decision.notices.append(
            News(
                "in_sync",
                _iso(moment),
                f"{name}: back in sync with {current.id}",
                [was],
                episode=episode,
            )
        )
        logger.info("%s: back in sync with %s", name, current.id)
    if drift and may_heal and _may_heal(conn, target, row):
        values.update(
            _heal_or_give_up(
                conn,
                target,
                row,
                current=current,
                drift=drift,
                moment=moment,
                decision=decision,
                episode=episode,
            )
        )
    if decision.notices:
        notified = dict(row.notified)
        for notice in decision.notices:
            notified[notice.key] = _iso(moment)
            if notifiers is not None:
                decision.notification_ids += schedule_target_notice(
                    conn,
                    target,
                    notifiers,
                    event=notice.event,
                    since=notice.since,
                    spec={"headline": notice.headline, "details": notice.details},
                    episode=notice.episode,
                )
        values["notified"] = dict(sorted(notified.items(), key=lambda kv: kv[1])[-KEEP_NOTIFIED:])
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
    episode: str | None,
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
        decision.notices.append(
            News(
                "degraded",
                _iso(moment),
                f"{target.name}: DEGRADED, healing stopped",
                [reason, *_lines(drift)],
                episode=episode,
            )
        )
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
    for notification_id in decision.notification_ids:
        try:
            ctx.send(NOTIFY, [notification_id])
        except Exception:  # noqa: BLE001 - beat re-publishes what is still owed
            logger.warning("broker unavailable; notification %s waits for beat", notification_id)


def _what_next(target: Target) -> list[str]:
    if not target.sync.auto:
        return [f"manual mode: waiting for approval (`rollhook sync {target.name}`)"]
    if not target.sync.self_heal:
        return ["self_heal is off: left as it is"]
    return []


def _short(drift: list[dict[str, str]]) -> str:
    seen = [f"{d['service']} {d['what']}" for d in drift]
    return ", ".join(seen[:3]) + (f" and {len(seen) - 3} more" if len(seen) > 3 else "")


def _lines(drift: list[dict[str, str]]) -> list[str]:
    return [f"{d['service']} {d['what']}: {d['detail']}" for d in drift]


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)
