"""What can go wrong when a notification leaves, in the two kinds delivery acts on.

Adapters turn library errors into these (``raise ... from exc``). Messages are written
for the deployment record's history: they never hold a token, a password or a webhook
URL, because the history is shown by the API.
"""

from __future__ import annotations


class DeliveryError(Exception):
    """A notification could not be delivered."""


class TransientError(DeliveryError):
    """The other side failed or asked us to slow down; a later attempt may succeed."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(DeliveryError):
    """The configuration is wrong or the message was refused; retrying will not help."""


class MessageGone(PermanentError):
    """The Slack message to update no longer exists (deleted, or too old to edit)."""


class RetryLater(Exception):
    """Raised by ``deliver``: the ``rollhook.notify`` task should run again after ``seconds``.

    It is the only exception the task wrapper retries on; the attempt and its error are
    already recorded on the notification row when it is raised.
    """

    def __init__(self, seconds: float, reason: str) -> None:
        super().__init__(f"retry in {seconds:.0f}s: {reason}")
        self.seconds = seconds
        self.reason = reason
