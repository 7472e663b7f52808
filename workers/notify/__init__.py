"""Notifications: Slack, email and GitHub commit statuses about deployments.

The rollout calls :func:`schedule_announcement` when the plan shows a real change and
:func:`schedule_report`
when the record is final; both only write ``notifications`` rows (no network) and return
their ids, which the caller publishes as ``rollhook.notify`` tasks running
:func:`deliver`. Beat re-publishes what :func:`pending` returns.
"""

from workers.notify.channels import Notifiers
from workers.notify.delivery import deliver
from workers.notify.errors import RetryLater
from workers.notify.rows import DeliveryResult
from workers.notify.scheduling import pending, schedule_announcement, schedule_report
from workers.notify.setup import build_notifiers

__all__ = [
    "DeliveryResult",
    "Notifiers",
    "RetryLater",
    "build_notifiers",
    "deliver",
    "pending",
    "schedule_announcement",
    "schedule_report",
]
