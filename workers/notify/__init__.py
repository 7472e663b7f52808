"""Notifications: Slack, email, GitHub commit statuses and the console, about deployments.

The rollout calls :func:`schedule_announcement` when the plan shows a real change and
:func:`schedule_report` when the record is final; both only write ``notifications`` rows
(no network) and return their ids, which the caller publishes as ``rollhook.notify``
tasks running :func:`deliver`. Beat re-publishes what :func:`pending` returns. Each
channel is a :class:`~workers.notify.channels.Notifier`; ``notices.py`` says what can be
told.
"""

from workers.notify.channels import Notifiers
from workers.notify.decisions import schedule_approval_progress, schedule_decision
from workers.notify.delivery import DeliveryResult, deliver
from workers.notify.errors import RetryLater
from workers.notify.scheduling import (
    pending,
    schedule_announcement,
    schedule_backup_notice,
    schedule_host_notice,
    schedule_report,
    schedule_target_notice,
)
from workers.notify.setup import build_notifiers

__all__ = [
    "DeliveryResult",
    "Notifiers",
    "RetryLater",
    "build_notifiers",
    "deliver",
    "pending",
    "schedule_announcement",
    "schedule_approval_progress",
    "schedule_backup_notice",
    "schedule_decision",
    "schedule_host_notice",
    "schedule_report",
    "schedule_target_notice",
]
