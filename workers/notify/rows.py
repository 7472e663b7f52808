"""The ``notifications`` rows as the delivery sees them: claim, progress, outcome.

A row holds what should be told (``external.spec``, with a revision number ``rev`` that
``report`` bumps when the end of the deployment is to be told), what has already left
(the rest of ``external``: Slack's channel id and ``ts``, whether the email went, which
commit states were set) and every attempt in ``history``. Each network call is followed
by its own commit of the progress it made, which is what makes a second run of the same
task skip what the first one delivered.

A delivery claims the row with a lease (``external.lease_until``) so that two copies of
the task (a Celery retry and beat's re-publish) never send at the same time; a worker
that dies leaves a lease that simply expires.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from rollhook.records import deployments, notifications
from rollhook.records.deployments import DeploymentRecord
from rollhook.records.notifications import history_entry

LEASE_SECONDS = 120.0


@dataclass(frozen=True)
class DeliveryResult:
    """What one ``deliver`` call left behind: the row's status and why."""

    notification_id: str
    status: str  # delivered | failed | skipped | pending (another run holds it) | missing
    detail: str


@dataclass(frozen=True)
class Claimed:
    id: str
    channel: str
    target: str
    attempt: int
    rev: int
    spec: dict[str, Any]
    progress: dict[str, Any]
    record: DeploymentRecord


def claim(engine: Engine, notification_id: str) -> Claimed | DeliveryResult:
    with engine.begin() as conn:
        row = notifications.locked(conn, notification_id)
        if row is None:
            return DeliveryResult(notification_id, "missing", "no such notification")
        if row.status != "pending":
            return DeliveryResult(notification_id, row.status, f"nothing to do: {row.status}")
        external = row.external
        now = time.time()
        if float(external.get("lease_until") or 0) > now:
            return DeliveryResult(notification_id, "pending", "another delivery of it is running")
        record = deployments.get(conn, row.deployment_id)
        attempt = row.attempts + 1
        if record is None:
            history = [
                *row.history,
                history_entry(attempt, "failed", "the deployment record is gone"),
            ]
            notifications.change(
                conn, notification_id, status="failed", attempts=attempt, history=history
            )
            return DeliveryResult(notification_id, "failed", "the deployment record is gone")
        external["lease_until"] = now + LEASE_SECONDS
        external.pop("retry_at", None)
        notifications.change(conn, notification_id, external=external, attempts=attempt)
    return Claimed(
        id=notification_id,
        channel=row.channel,
        target=row.target,
        attempt=attempt,
        rev=int(external.get("rev", 0)),
        spec=dict(external.get("spec") or {}),
        progress=external,
        record=record,
    )


def save_progress(engine: Engine, notification_id: str, changes: dict[str, Any]) -> None:
    """Commit what just left, before anything else can fail."""
    with engine.begin() as conn:
        row = notifications.locked(conn, notification_id)
        if row is not None:
            notifications.change(conn, notification_id, external={**row.external, **changes})


def finish(engine: Engine, claimed: Claimed, detail: str) -> DeliveryResult | None:
    """Mark the row delivered, or None when its spec moved on meanwhile (go again)."""
    with engine.begin() as conn:
        row = notifications.locked(conn, claimed.id)
        assert row is not None  # noqa: S101 - claimed rows are never deleted
        external = row.external
        external.pop("lease_until", None)
        phase = claimed.spec.get("phase")
        if int(external.get("rev", 0)) != claimed.rev:
            history = [*row.history, history_entry(claimed.attempt, "sent", detail, phase=phase)]
            notifications.change(conn, claimed.id, external=external, history=history)
            return None
        history = [*row.history, history_entry(claimed.attempt, "delivered", detail, phase=phase)]
        notifications.change(
            conn, claimed.id, status="delivered", external=external, history=history
        )
    return DeliveryResult(claimed.id, "delivered", detail)


def fail(
    engine: Engine, claimed: Claimed, error: str, retry_in: float | None, max_attempts: int
) -> tuple[DeliveryResult, float | None]:
    """Record a failed attempt; give the delay before the next one, or None if it is over."""
    with engine.begin() as conn:
        row = notifications.locked(conn, claimed.id)
        assert row is not None  # noqa: S101 - claimed rows are never deleted
        external = row.external
        external.pop("lease_until", None)
        phase = claimed.spec.get("phase")
        if int(external.get("rev", 0)) != claimed.rev:
            # report() moved the row on while this attempt failed: the new phase has
            # attempts of its own, so try it soon instead of marking the row failed.
            retry_in = min(retry_in if retry_in is not None else 5.0, 5.0)
        elif retry_in is not None and claimed.attempt >= max_attempts:
            retry_in = None
        if retry_in is not None:
            external["retry_at"] = time.time() + retry_in
            history = [
                *row.history,
                history_entry(
                    claimed.attempt, "retry", error, phase=phase, retry_in=round(retry_in, 1)
                ),
            ]
            notifications.change(conn, claimed.id, external=external, history=history)
            return DeliveryResult(claimed.id, "pending", error), retry_in
        gave_up = (
            error
            if claimed.attempt < max_attempts
            else f"{error} (gave up after {claimed.attempt})"
        )
        history = [*row.history, history_entry(claimed.attempt, "failed", gave_up, phase=phase)]
        notifications.change(conn, claimed.id, status="failed", external=external, history=history)
    return DeliveryResult(claimed.id, "failed", gave_up), None
