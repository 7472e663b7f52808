"""``deliver``: the body of the ``rollhook.notify`` task, one notification row per call.

The task wrapper is expected to be exactly this::

    @app.task(name="rollhook.notify", bind=True, acks_late=True, max_retries=None)
    def notify(self, notification_id):
        try:
            deliver(engine, notifiers, notification_id)
        except RetryLater as exc:
            raise self.retry(countdown=exc.seconds) from exc

It is safe to run twice, or twice at once: what left is never sent again, and the row's
lease keeps two copies from sending side by side. Each attempt and its outcome is added
to the row's history. ``RetryLater`` is the only exception it raises for delivery
problems, and only while attempts remain; after ``Notifiers.max_attempts`` the row is
marked failed. A failing channel touches no other row and never the deployment record.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Engine

from workers.notify import rows, senders
from workers.notify.channels import Notifiers
from workers.notify.errors import PermanentError, RetryLater, TransientError
from workers.notify.rows import DeliveryResult

logger = logging.getLogger("rollhook.notify")

# report() may re-arm a row while a delivery of its first phase is under way; the
# delivery then goes round again for the new phase, a bounded number of times.
_ROUNDS = 3


def deliver(engine: Engine, notifiers: Notifiers, notification_id: str) -> DeliveryResult:
    outcome = DeliveryResult(notification_id, "pending", "not attempted")
    for _ in range(_ROUNDS):
        job = rows.claim(engine, notification_id)
        if isinstance(job, DeliveryResult):
            return job

        def save(changes: dict[str, Any], job: rows.Claimed = job) -> None:
            rows.save_progress(engine, job.id, changes)
            job.progress.update(changes)

        try:
            detail = senders.send(engine, notifiers, job, save)
        except TransientError as exc:
            delay = notifiers.backoff(job.attempt, exc.retry_after)
            return _failed(engine, notifiers, job, str(exc), delay)
        except PermanentError as exc:
            return _failed(engine, notifiers, job, str(exc), None)
        except Exception as exc:
            # A bug or a library error we did not foresee: log it with its traceback
            # for the operator, keep only its type in the history, retry a bounded time.
            logger.exception("notification %s (%s) failed unexpectedly", job.id, job.channel)
            delay = notifiers.backoff(job.attempt)
            return _failed(engine, notifiers, job, f"unexpected {type(exc).__name__}", delay)
        finished = rows.finish(engine, job, detail)
        if finished is not None:
            logger.info("notification %s (%s) delivered: %s", job.id, job.channel, detail)
            return finished
        outcome = DeliveryResult(notification_id, "pending", detail)
    return outcome


def _failed(
    engine: Engine, notifiers: Notifiers, job: rows.Claimed, error: str, delay: float | None
) -> DeliveryResult:
    outcome, retry_in = rows.fail(engine, job, error, delay, notifiers.max_attempts)
    if retry_in is not None:
        logger.warning(
            "notification %s (%s) attempt %d failed, retry in %.0fs: %s",
            job.id,
            job.channel,
            job.attempt,
            retry_in,
            error,
        )
        raise RetryLater(retry_in, error)
    logger.error("notification %s (%s) failed: %s", job.id, job.channel, outcome.detail)
    return outcome
