"""The one place that reads settings for notifications: the worker's app module calls
``build_notifiers(settings)`` once and passes the result to announce, report and deliver.

Adapters get plain values (the secret unwrapped only here); a channel whose settings are
absent is simply not configured. Half a configuration (a Slack token without a channel,
an SMTP URL without recipients) is the operator's mistake and stops start-up with one
line naming the setting, like every other configuration error.
"""

from __future__ import annotations

from rollhook.settings import ConfigError, Settings
from workers.notify.channels import Notifiers
from workers.notify.email import Mailer
from workers.notify.github import CommitStatuses
from workers.notify.slack import SlackBot, SlackWebhook


def build_notifiers(settings: Settings) -> Notifiers:
    slack = None
    if settings.slack_token is not None:
        if not settings.slack_channel:
            raise ConfigError("ROLLHOOK_SLACK_CHANNEL: required with ROLLHOOK_SLACK_TOKEN")
        slack = SlackBot(
            settings.slack_token.get_secret_value(), settings.slack_channel, settings.slack_api_url
        )
    webhook = None
    if settings.slack_webhook_url is not None:
        webhook = SlackWebhook(settings.slack_webhook_url.get_secret_value())
    email = None
    if settings.smtp_url is not None:
        if not settings.email_from:
            raise ConfigError("ROLLHOOK_EMAIL_FROM: required with ROLLHOOK_SMTP_URL")
        if not settings.email_recipients():
            raise ConfigError("ROLLHOOK_EMAIL_TO: required with ROLLHOOK_SMTP_URL")
        try:
            email = Mailer(
                settings.smtp_url.get_secret_value(),
                settings.email_from,
                settings.email_recipients(),
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    github = None
    if settings.github_token is not None:
        github = CommitStatuses(settings.github_token.get_secret_value(), settings.github_api_url)
    return Notifiers(slack=slack, slack_webhook=webhook, email=email, github=github)
