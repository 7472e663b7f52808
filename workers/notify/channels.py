"""The channels a notification can leave by, and the adapters configured for them.

A channel is the ``notifications.channel`` column: ``slack`` (Web API with a bot token:
one message per deployment, updated in place, its steps in a thread), ``slack_webhook``
(an incoming webhook: one message at the end), ``email`` and ``github`` (commit status).
:class:`Notifiers` is built once per process from the settings (``setup.build_notifiers``)
and handed to ``announce``, ``report`` and ``deliver``; a channel whose adapter is None
is not configured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from workers.notify.email import Mailer
from workers.notify.github import CommitStatuses
from workers.notify.slack import SlackBot, SlackWebhook

Channel = Literal["slack", "slack_webhook", "email", "github"]
CHANNELS: tuple[Channel, ...] = ("slack", "slack_webhook", "email", "github")


@dataclass(frozen=True)
class Notifiers:
    slack: SlackBot | None = None
    slack_webhook: SlackWebhook | None = None
    email: Mailer | None = None
    github: CommitStatuses | None = None
    # Attempts per phase of a notification before it is marked failed; with the backoff
    # below that is about 10 s, 30 s, 1.5 min and 4.5 min: long enough to ride out a
    # Slack or SMTP hiccup, short enough that a stale message is not sent hours later.
    max_attempts: int = 5
    backoff_base: float = 10.0
    backoff_max: float = 600.0
    # Slack: about one message per second per channel, across every rollhook process.
    slack_interval: float = 1.0
    # Longer waits for a slot than this go back to the queue instead of holding a worker.
    slack_max_wait: float = 10.0

    def configured(self) -> list[Channel]:
        present = {
            "slack": self.slack,
            "slack_webhook": self.slack_webhook,
            "email": self.email,
            "github": self.github,
        }
        return [name for name in CHANNELS if present[name] is not None]

    def backoff(self, attempt: int, hint: float | None = None) -> float:
        delay = min(self.backoff_max, self.backoff_base * 3 ** max(0, attempt - 1))
        return float(max(delay, hint or 0.0))
