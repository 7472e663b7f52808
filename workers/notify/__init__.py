"""Notifications: Slack, email and GitHub commit statuses about deployments.

The rollout calls :func:`announce` when the plan shows a real change and :func:`report`
when the record is final; both only write ``notifications`` rows (no network) and return
their ids, which the caller publishes as ``rollhook.notify`` tasks running
:func:`deliver`. Beat re-publishes what :func:`pending` returns.
"""

from workers.notify.channels import Notifiers
from workers.notify.delivery import deliver
from workers.notify.errors import RetryLater
from workers.notify.outbox import announce, pending, report
from workers.notify.rows import Outcome
from workers.notify.setup import build_notifiers

__all__ = [
    "Notifiers",
    "Outcome",
    "RetryLater",
    "announce",
    "build_notifiers",
    "deliver",
    "pending",
    "report",
]
