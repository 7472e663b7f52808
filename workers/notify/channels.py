"""The channels a notice can leave by: one :class:`Notifier` interface, one registry.

A channel is the ``notifications.channel`` column: ``slack`` (the Web API with a bot
token: one message per deployment, updated in place, its steps in a thread),
``slack_webhook`` (an incoming webhook: one message at the end), ``email``, ``github``
(commit statuses) and ``console`` (one log line per notification, for ``make run`` and
tests). :class:`Notifiers` is built once per process from the settings
(``setup.build_notifiers``) and handed to the scheduling functions and to ``deliver``;
a channel without a notifier is not configured.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from workers.notify.notices import Notice

Channel = Literal["slack", "slack_webhook", "email", "github", "console"]
CHANNELS: tuple[Channel, ...] = ("slack", "slack_webhook", "email", "github", "console")


@dataclass
class Delivery:
    """One attempt at one notification row, as its notifier sees it."""

    notification_id: str
    spec: Mapping[str, Any]  # what the scheduler asked this channel to tell
    sent: dict[str, Any]  # what earlier attempts already sent, as they kept it
    keep: Callable[[dict[str, Any]], None]  # commit what just left (updates ``sent`` too)
    # Wait for this destination's turn (shared by every process), then call; a 429's
    # Retry-After holds the destination for everybody.
    pace: Callable[[str, Callable[[], Any]], Any]
    # The row this one continues (a repeat of a failure updates the first one's message):
    # its status and what it kept, or None when there is none.
    anchor: Callable[[], tuple[str, dict[str, Any]] | None]


class Notifier(Protocol):
    """How a notice leaves by one channel.

    ``send`` sends what ``delivery`` still owes for ``notice``: it looks at
    ``delivery.sent`` first and calls ``delivery.keep`` after each network call, so a
    second run (a retry, a copy of the task) picks up after the last thing that left and
    never sends it twice. What it keeps is also what an update in place needs later (the
    Slack message's channel and ts). It returns one line for the row's history and raises
    ``TransientError`` or ``PermanentError`` (``workers/notify/errors.py``).
    """

    @property
    def channel(self) -> Channel: ...

    @property
    def tells_progress(self) -> bool:
        """Told when a deployment starts (then always told how it ended), and told of
        every repeat of a failure; otherwise told of the end only, and of a repeated
        failure only the first time."""
        ...

    def send(self, notice: Notice, delivery: Delivery) -> str: ...


@dataclass(frozen=True)
class Notifiers:
    """The configured channels, in :data:`CHANNELS` order, and how delivery treats them."""

    by_channel: Mapping[str, Notifier] = field(default_factory=dict)
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

    @classmethod
    def of(cls, *notifiers: Notifier) -> Notifiers:
        return cls(by_channel={n.channel: n for n in notifiers})

    def get(self, channel: str) -> Notifier | None:
        return self.by_channel.get(channel)

    def __contains__(self, channel: object) -> bool:
        return channel in self.by_channel

    def __iter__(self) -> Iterator[Notifier]:
        return (self.by_channel[c] for c in CHANNELS if c in self.by_channel)

    def configured(self) -> list[Channel]:
        return [notifier.channel for notifier in self]

    def backoff(self, attempt: int, hint: float | None = None) -> float:
        delay = min(self.backoff_max, self.backoff_base * 3 ** max(0, attempt - 1))
        return float(max(delay, hint or 0.0))
