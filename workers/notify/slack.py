"""Slack, behind two small interfaces: the Web API with a bot token, and an incoming webhook;
and the two notifiers that tell a notice through them.

Slack answers many failures with HTTP 200 and ``{"ok": false, "error": ...}``; slack-sdk
raises for those and we sort them into "retrying will not help" (a wrong token or
channel, a malformed message) and "try again later" (Slack's own trouble, 429 with
``Retry-After``). The SDK's own retry handlers are switched off on purpose: retrying is
the delivery's job, where each attempt is recorded on the notification row and a 429's
back-off is shared with every process through the records database (a worker sleeping
inside the SDK would hold a Celery slot and ignore the other processes' spacing).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web import SlackResponse
from slack_sdk.webhook import WebhookClient

from workers.notify import backup_notice, blocks
from workers.notify.backup_notice import BackupNotice
from workers.notify.channels import Channel, Delivery
from workers.notify.errors import MessageGone, PermanentError, TransientError
from workers.notify.host_notice import HostNotice
from workers.notify.notices import Notice, TargetNotice
from workers.notify.report import View

# Errors that mean Slack itself is struggling; anything else unknown is treated as
# permanent so that a misconfiguration shows up as "failed" instead of looping.
_TRANSIENT = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
_GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})


def _retry_after(headers: Any) -> float | None:
    for name in ("Retry-After", "retry-after"):
        value = (headers or {}).get(name)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            try:
                return max(0.0, float(value))
            except (TypeError, ValueError):
                return None
    return None


@dataclass(frozen=True)
class Posted:
    channel: str  # the channel ID Slack answered with: chat.update needs the ID, not a name
    ts: str


class SlackBot:
    """The Web API with a bot token: post a message (or a thread reply), update one."""

    def __init__(self, token: str, channel: str, base_url: str, timeout: float = 10.0) -> None:
        self.channel = channel
        self._client = WebClient(
            token=token, base_url=base_url, timeout=int(max(1, timeout)), retry_handlers=[]
        )

    def post(
        self, text: str, blocks: list[dict[str, Any]], *, thread_ts: str | None = None
    ) -> Posted:
        kwargs: dict[str, Any] = {"channel": self.channel, "text": text, "blocks": blocks}
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
        response = self._call("chat.postMessage", lambda: self._client.chat_postMessage(**kwargs))
        return Posted(channel=str(response["channel"]), ts=str(response["ts"]))

    def update(self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]]) -> None:
        self._call(
            "chat.update",
            lambda: self._client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks),
        )

    def _call(self, method: str, request: Callable[[], SlackResponse]) -> dict[str, Any]:
        try:
            response = request()
        except SlackApiError as exc:
            status = exc.response.status_code
            error = str(exc.response.get("error") or f"HTTP {status}")
            if status == 429 or error == "ratelimited":
                raise TransientError(
                    f"slack {method}: rate limited", _retry_after(exc.response.headers)
                ) from exc
            if error in _GONE:
                raise MessageGone(f"slack {method}: {error}") from exc
            if error in _TRANSIENT or status >= 500:
                raise TransientError(f"slack {method}: {error}") from exc
            raise PermanentError(f"slack {method}: {error}") from exc
        except (OSError, SlackClientError) as exc:
            raise TransientError(f"slack {method}: {type(exc).__name__}: {_reason(exc)}") from exc
        data = response.data
        return data if isinstance(data, dict) else {}


def _reason(exc: BaseException) -> str:
    # URLError wraps the socket error; its text names the failure, never the URL.
    reason = getattr(exc, "reason", None)
    return str(reason if reason is not None else exc)[:200]


class SlackWebhook:
    """An incoming webhook: one fixed channel, no ``ts`` back, so no updates or threads."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        # slack-sdk debug-logs the request URL, which for a webhook is the secret: its
        # logger is held at INFO whatever the process's log level.
        quiet = logging.getLogger("rollhook.notify.slack_webhook")
        quiet.setLevel(logging.INFO)
        self._client = WebhookClient(
            url, timeout=int(max(1, timeout)), retry_handlers=[], logger=quiet
        )
        # The URL is a secret: the rate-limit slot is keyed by a digest of it.
        self.key = "webhook-" + hashlib.sha256(url.encode()).hexdigest()[:16]

    def send(self, text: str, blocks: list[dict[str, Any]]) -> None:
        try:
            response = self._client.send(text=text, blocks=blocks)
        except (OSError, SlackClientError) as exc:
            raise TransientError(f"slack webhook: {type(exc).__name__}: {_reason(exc)}") from exc
        status, body = response.status_code, (response.body or "").strip()[:200]
        if status == 200:
            return
        if status == 429:
            raise TransientError("slack webhook: rate limited", _retry_after(response.headers))
        if status >= 500:
            raise TransientError(f"slack webhook: HTTP {status} {body}")
        raise PermanentError(f"slack webhook: HTTP {status} {body}")


# -- the notifiers ---------------------------------------------------------------------


@dataclass(frozen=True)
class SlackNotifier:
    """The bot's story of a deployment: one message, posted when it starts (or at its end),
    updated in place with the result, its steps and log in a thread. A repeat of the same
    failure updates the first failure's message instead of posting another."""

    bot: SlackBot
    channel: ClassVar[Channel] = "slack"
    tells_progress: ClassVar[bool] = True

    def send(self, notice: Notice, delivery: Delivery) -> str:
        if isinstance(notice, TargetNotice):
            return self._about_target(notice, delivery)
        bot, key, sent, keep = self.bot, f"slack-{self.bot.channel}", delivery.sent, delivery.keep
        if isinstance(notice, (BackupNotice, HostNotice)):  # one message, nothing to update later
            if sent.get("slack"):
                return "already posted"
            posted = delivery.pace(key, lambda: bot.post(*backup_notice.slack_message(notice)))
            keep({"slack": {"channel": posted.channel, "ts": posted.ts}, "shown": "final"})
            return f"posted {posted.channel}/{posted.ts}"
        report, view = notice.report, notice.view
        done: list[str] = []
        where = _where(delivery, view)
        if view.phase == "running":
            if where is None:
                posted = delivery.pace(key, lambda: bot.post(*blocks.message(report, view)))
                keep({"slack": {"channel": posted.channel, "ts": posted.ts}, "shown": "running"})
                done.append(f"posted {posted.channel}/{posted.ts}")
            return ", ".join(done) or "already posted"
        if sent.get("shown") != "final":
            text, body = blocks.message(report, view)
            if where is not None:
                channel, ts = str(where["channel"]), str(where["ts"])
                try:
                    delivery.pace(key, lambda: bot.update(channel, ts, text, body))
                    done.append(f"updated {channel}/{ts}")
                except MessageGone:
                    where = None  # deleted or too old to edit: say it in a new message
            if where is None:
                posted = delivery.pace(key, lambda: bot.post(text, body))
                where = {"channel": posted.channel, "ts": posted.ts}
                done.append(f"posted {posted.channel}/{posted.ts}")
            keep({"slack": where, "shown": "final"})
        if where is not None and not sent.get("thread"):
            reply = blocks.thread_reply(report)
            parent = str(where["ts"])
            delivery.pace(key, lambda: bot.post(*reply, thread_ts=parent))
            keep({"thread": 1})
            done.append("steps in thread")
        return ", ".join(done) or "already delivered"

    def _about_target(self, notice: TargetNotice, delivery: Delivery) -> str:
        """One message; the end of a drift episode (back in sync, degraded) goes in the
        thread of the message that told it began, when that one made it. A change that
        waited for approval is told again when decided on and as the approved deployment
        goes: its message is updated in place (buttons gone, who decided, where it is)."""
        bot, key = self.bot, f"slack-{self.bot.channel}"
        state = notice.decided.state if notice.decided is not None else "final"
        where = delivery.sent.get("slack")
        if where and delivery.sent.get("shown") == state:
            return "already posted"
        text, body = blocks.target_message(notice)
        if where:
            channel, ts = str(where["channel"]), str(where["ts"])
            try:
                delivery.pace(key, lambda: bot.update(channel, ts, text, body))
            except MessageGone:
                pass  # deleted or too old to edit: say it in a new message
            else:
                delivery.keep({"shown": state})
                return f"updated {channel}/{ts} ({state})"
        parent: str | None = None
        if delivery.spec.get("anchor"):
            anchor = delivery.anchor()
            if anchor is not None and anchor[1].get("slack"):
                parent = str(anchor[1]["slack"]["ts"])
            elif anchor is not None and anchor[0] == "pending":
                raise TransientError("slack: the drift message is not posted yet", 5.0)
        posted = delivery.pace(key, lambda: bot.post(text, body, thread_ts=parent))
        delivery.keep({"slack": {"channel": posted.channel, "ts": posted.ts}, "shown": state})
        return f"posted {posted.channel}/{posted.ts}" + (" in its thread" if parent else "")


def _where(delivery: Delivery, view: View) -> dict[str, Any] | None:
    """The message to update: this row's own, or for a repeat the first failure's."""
    own = delivery.sent.get("slack")
    if own or view.mode != "repeat" or not delivery.spec.get("anchor"):
        return dict(own) if own else None
    anchor = delivery.anchor()
    if anchor is not None and anchor[1].get("slack"):
        return dict(anchor[1]["slack"])
    if anchor is not None and anchor[0] == "pending":
        raise TransientError("slack: the first failure's message is not posted yet", 5.0)
    return None  # that message never made it: this one is posted on its own


@dataclass(frozen=True)
class SlackWebhookNotifier:
    """One message at the end: an incoming webhook cannot update what it posted."""

    webhook: SlackWebhook
    channel: ClassVar[Channel] = "slack_webhook"
    tells_progress: ClassVar[bool] = False

    def send(self, notice: Notice, delivery: Delivery) -> str:
        if delivery.sent.get("sent"):
            return "already sent"
        if isinstance(notice, TargetNotice):
            text, body = blocks.target_message(notice)
        elif isinstance(notice, (BackupNotice, HostNotice)):
            text, body = backup_notice.slack_message(notice)
        else:
            text, body = blocks.message(notice.report, notice.view)
        delivery.pace(self.webhook.key, lambda: self.webhook.send(text, body))
        delivery.keep({"sent": True})
        return "sent to the incoming webhook"
