"""``deliver``: the body of the ``rollhook.notify`` task, one notification row per call.

The task wrapper (``workers/app.py``) is exactly this: ``deliver(...)``, and on
``RetryLater`` a Celery retry after ``exc.seconds`` (up to its ``max_retries``; beat
re-publishes a row that is still owed after that).

A row holds what should be told (``external.spec``, with a revision ``rev`` that
``schedule_report`` bumps when the end of a deployment is to be told), what has already
left (the rest of ``external``, kept by the notifier) and every attempt in ``history``.
Each network call is followed by its own commit of what it sent, so a second run of the
same task skips what the first one delivered. A delivery claims the row with a lease
(``external.lease_until``) so that two copies of the task (a Celery retry and beat's
re-publish) never send at the same time; a worker that dies leaves a lease that simply
expires.

``RetryLater`` is the only exception it raises for delivery problems, and only while
attempts remain; after ``Notifiers.max_attempts`` the row is marked failed. A failing
channel touches no other row and never the deployment record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine

from rollhook.records import notifications
from rollhook.records.notifications import Notification, history_entry
from workers.notify.channels import Delivery, Notifiers
from workers.notify.errors import PermanentError, RetryLater, TransientError
from workers.notify.notices import KINDS, Kind
from workers.notify.ratelimit import SlotLimiter

logger = logging.getLogger("rollhook.notify")

LEASE_SECONDS = 120.0
# schedule_report may re-arm a row while a delivery of its first phase is under way; the
# delivery then goes round again for the new phase, a bounded number of times.
_ROUNDS = 3


@dataclass(frozen=True)
class DeliveryResult:
    """What one ``deliver`` call left behind: the row's status and why."""

    notification_id: str
    status: str  # delivered | failed | skipped | pending (another run holds it) | missing
    detail: str


@dataclass(frozen=True)
class _Claim:
    id: str
    channel: str
    attempt: int
    rev: int
    spec: dict[str, Any]
    sent: dict[str, Any]
    kind: Kind
    subject: Any


def deliver(engine: Engine, notifiers: Notifiers, notification_id: str) -> DeliveryResult:
    result = DeliveryResult(notification_id, "pending", "not attempted")
    limiter = SlotLimiter(engine, notifiers.slack_interval, notifiers.slack_max_wait)
    for _ in range(_ROUNDS):
        claim = _claim(engine, notification_id)
        if isinstance(claim, DeliveryResult):
            return claim
        try:
            notifier = notifiers.get(claim.channel)
            if notifier is None:
                raise PermanentError(f"{claim.channel}: not configured in this process")
            notice = claim.kind.build(claim.subject, claim.spec)
            detail = notifier.send(notice, _delivery(engine, limiter, claim))
        except TransientError as exc:
            delay = notifiers.backoff(claim.attempt, exc.retry_after)
            return _failed(engine, notifiers, claim, str(exc), delay)
        except PermanentError as exc:
            return _failed(engine, notifiers, claim, str(exc), None)
        except Exception as exc:
            # A bug or a library error we did not foresee: log it with its traceback
            # for the operator, keep only its type in the history, retry a bounded time.
            logger.exception("notification %s (%s) failed unexpectedly", claim.id, claim.channel)
            delay = notifiers.backoff(claim.attempt)
            return _failed(engine, notifiers, claim, f"unexpected {type(exc).__name__}", delay)
        finished = _finish(engine, claim, detail)
        if finished is not None:
            logger.info("notification %s (%s) delivered: %s", claim.id, claim.channel, detail)
            return finished
        result = DeliveryResult(notification_id, "pending", detail)
    return result


def _delivery(engine: Engine, limiter: SlotLimiter, claim: _Claim) -> Delivery:
    def keep(changes: dict[str, Any]) -> None:
        """Commit what just left, before anything else can fail."""
        with engine.begin() as conn:
            row = notifications.locked(conn, claim.id)
            if row is not None:
                notifications.change(conn, claim.id, external={**row.external, **changes})
        claim.sent.update(changes)

    def pace(key: str, call: Callable[[], Any]) -> Any:
        """Wait for the destination's turn; on 429, make every process wait as asked."""
        limiter.wait_turn(key)
        try:
            return call()
        except TransientError as exc:
            if exc.retry_after:
                limiter.back_off(key, exc.retry_after)
            raise

    def anchor() -> tuple[str, dict[str, Any]] | None:
        with engine.connect() as conn:
            return notifications.status_of(conn, str(claim.spec["anchor"]))

    return Delivery(claim.id, claim.spec, claim.sent, keep, pace, anchor)


def _claim(engine: Engine, notification_id: str) -> _Claim | DeliveryResult:
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
        attempt = row.attempts + 1
        kind = KINDS.get(row.kind)
        subject = None if kind is None else kind.read(conn, row.subject)
        if kind is None or subject is None:
            gone = f"unknown notice kind {row.kind!r}" if kind is None else kind.gone
            history = [*row.history, history_entry(attempt, "failed", gone)]
            notifications.change(
                conn, notification_id, status="failed", attempts=attempt, history=history
            )
            return DeliveryResult(notification_id, "failed", gone)
        external["lease_until"] = now + LEASE_SECONDS
        external.pop("retry_at", None)
        notifications.change(conn, notification_id, external=external, attempts=attempt)
    return _Claim(
        id=notification_id,
        channel=row.channel,
        attempt=attempt,
        rev=int(external.get("rev", 0)),
        spec=dict(external.get("spec") or {}),
        sent=external,
        kind=kind,
        subject=subject,
    )


def _release(conn: Connection, claim: _Claim) -> tuple[Notification, dict[str, Any], bool]:
    """The claimed row without its lease; whether its spec moved on meanwhile."""
    row = notifications.locked(conn, claim.id)
    if row is None:  # claimed rows are never deleted
        raise LookupError(f"notification {claim.id} is gone")
    external = row.external
    external.pop("lease_until", None)
    return row, external, int(external.get("rev", 0)) != claim.rev


def _finish(engine: Engine, claim: _Claim, detail: str) -> DeliveryResult | None:
    """Mark the row delivered, or None when its spec moved on meanwhile (go again)."""
    phase = claim.spec.get("phase")
    with engine.begin() as conn:
        row, external, moved_on = _release(conn, claim)
        outcome = "sent" if moved_on else "delivered"
        history = [*row.history, history_entry(claim.attempt, outcome, detail, phase=phase)]
        if moved_on:
            notifications.change(conn, claim.id, external=external, history=history)
            return None
        notifications.change(conn, claim.id, status="delivered", external=external, history=history)
    return DeliveryResult(claim.id, "delivered", detail)


def _failed(
    engine: Engine, notifiers: Notifiers, claim: _Claim, error: str, retry_in: float | None
) -> DeliveryResult:
    """Record a failed attempt; raise RetryLater while attempts remain."""
    phase, most = claim.spec.get("phase"), notifiers.max_attempts
    with engine.begin() as conn:
        row, external, moved_on = _release(conn, claim)
        if moved_on:
            # schedule_report moved the row on while this attempt failed: the new phase
            # has attempts of its own, so try it soon instead of marking the row failed.
            retry_in = min(retry_in if retry_in is not None else 5.0, 5.0)
        elif retry_in is not None and claim.attempt >= most:
            retry_in = None
        if retry_in is not None:
            external["retry_at"] = time.time() + retry_in
            entry = history_entry(
                claim.attempt, "retry", error, phase=phase, retry_in=round(retry_in, 1)
            )
            notifications.change(conn, claim.id, external=external, history=[*row.history, entry])
        else:
            gave_up = error if claim.attempt < most else f"{error} (gave up after {claim.attempt})"
            entry = history_entry(claim.attempt, "failed", gave_up, phase=phase)
            notifications.change(
                conn, claim.id, status="failed", external=external, history=[*row.history, entry]
            )
    if retry_in is not None:
        logger.warning(
            "notification %s (%s) attempt %d failed, retry in %.0fs: %s",
            claim.id,
            claim.channel,
            claim.attempt,
            retry_in,
            error,
        )
        raise RetryLater(retry_in, error)
    logger.error("notification %s (%s) failed: %s", claim.id, claim.channel, gave_up)
    return DeliveryResult(claim.id, "failed", gave_up)
