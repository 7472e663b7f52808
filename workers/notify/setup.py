"""The one place that reads settings for notifications: the worker's app module calls
``build_notifiers(settings)`` once and passes the result to the scheduling functions and
to ``deliver``.

Adapters get plain values (the secret unwrapped only here); a channel whose settings are
absent is simply not configured. Half a configuration (a Slack token without a channel,
an SMTP URL without recipients) is the operator's mistake and stops start-up with one
line naming the setting, like every other configuration error.
"""

from __future__ import annotations

from rollhook.settings import ConfigError, Settings
from workers.notify.channels import Notifier, Notifiers
from workers.notify.console import ConsoleNotifier
from workers.notify.email import EmailNotifier, Mailer
from workers.notify.github import CommitStatuses, CommitStatusNotifier
from workers.notify.slack import SlackBot, SlackNotifier, SlackWebhook, SlackWebhookNotifier


def build_notifiers(settings: Settings) -> Notifiers:
    found: list[Notifier] = []
    if settings.slack_token is not None:
        if not settings.slack_channel:
            raise ConfigError("ROLLHOOK_SLACK_CHANNEL: required with ROLLHOOK_SLACK_TOKEN")
        bot = SlackBot(
            settings.slack_token.get_secret_value(), settings.slack_channel, settings.slack_api_url
        )
        found.append(SlackNotifier(bot))
    if settings.slack_webhook_url is not None:
        webhook = SlackWebhook(settings.slack_webhook_url.get_secret_value())
        found.append(SlackWebhookNotifier(webhook))
    if settings.smtp_url is not None:
        if not settings.email_from:
            raise ConfigError("ROLLHOOK_EMAIL_FROM: required with ROLLHOOK_SMTP_URL")
        if not settings.email_recipients():
            raise ConfigError("ROLLHOOK_EMAIL_TO: required with ROLLHOOK_SMTP_URL")
        try:
            mailer = Mailer(
                settings.smtp_url.get_secret_value(),
                settings.email_from,
                settings.email_recipients(),
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        found.append(EmailNotifier(mailer))
    if settings.github_token is not None:
        statuses = CommitStatuses(settings.github_token.get_secret_value(), settings.github_api_url)
        found.append(CommitStatusNotifier(statuses))
    if settings.notify_console:
        found.append(ConsoleNotifier())
    return Notifiers.of(*found)
