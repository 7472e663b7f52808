"""Driving the notify contract the way the rollout and the ``rollhook.notify`` task do.

Reusable by end-to-end tests: ``notifiers_for(**settings)`` wires adapters from settings
as the worker does; :class:`Flow` announces, reports and delivers against a records DB.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import Engine, select

from rollhook.records.schema import notifications, row_dict
from rollhook.settings import load_settings
from rollhook.targets import Target
from workers.notify import (
    DeliveryResult,
    Notifiers,
    RetryLater,
    build_notifiers,
    deliver,
    schedule_announcement,
    schedule_report,
)


def notifiers_for(**settings: Any) -> Notifiers:
    """Notifiers wired from settings, as the worker builds them, with fast Slack spacing."""
    built = build_notifiers(load_settings(**settings))
    return dataclasses.replace(built, slack_interval=0.05)


class Flow:
    """Drives the notify contract the way the rollout and the Celery task do."""

    def __init__(self, engine: Engine, notifiers: Notifiers, target: Target) -> None:
        self.engine, self.notifiers, self.target = engine, notifiers, target

    def announce(self, record: dict[str, Any]) -> list[str]:
        with self.engine.begin() as conn:
            return schedule_announcement(conn, record, self.target, self.notifiers)

    def report(self, record: dict[str, Any]) -> list[str]:
        with self.engine.begin() as conn:
            return schedule_report(conn, record, self.target, self.notifiers)

    def deliver(self, ids: list[str]) -> list[DeliveryResult | RetryLater]:
        results: list[DeliveryResult | RetryLater] = []
        for notification_id in ids:
            try:
                results.append(deliver(self.engine, self.notifiers, notification_id))
            except RetryLater as exc:
                results.append(exc)
        return results

    def statuses(self, ids: list[str]) -> list[str]:
        """Each delivery's resulting status; "retry" where the task would be retried."""
        return [getattr(r, "status", "retry") for r in self.deliver(ids)]

    def rows(self, deployment_id: str | None = None) -> dict[str, dict[str, Any]]:
        query = select(notifications).order_by(notifications.c.created_at)
        if deployment_id is not None:
            query = query.where(notifications.c.deployment_id == deployment_id)
        with self.engine.connect() as conn:
            return {row.channel: row_dict(row) for row in conn.execute(query)}

    def all_rows(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [row_dict(r) for r in conn.execute(select(notifications))]
