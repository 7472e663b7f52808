"""Off-host backup trouble told on every channel the target hears on (never as a commit
status): one Slack message, one email through a real SMTP server, delivered once."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import Engine

from rollhook.records import notifications, remote_backups
from rollhook.targets import Target
from tests.workers.notify.flow import Flow, notifiers_for
from tests.workers.notify.mailserver import smtp_server
from tests.workers.notify.standins import GitHubStandIn, SlackStandIn
from workers.notify import schedule_backup_notice

TOLD_AT = datetime(2026, 5, 4, 3, 0, 41, tzinfo=UTC)
LAST = datetime(2026, 5, 3, 3, 0, 12, tzinfo=UTC)


def test_a_failed_snapshot_is_one_slack_message_and_one_email(
    records: Engine, slack: SlackStandIn, github: GitHubStandIn, target: Target
) -> None:
    with records.begin() as conn:
        remote_backups.succeeded(
            conn,
            target.name,
            at=LAST,
            snapshot_id="0f1e2d3c" + "a" * 56,
            duration=3,
            size=1,
            added=1,
        )
        remote_backups.failed(conn, target.name, at=TOLD_AT, error="x")
    detail = "scheduled snapshot: restic could not check for sftp:backup@host:/r: <wrong password>"
    with smtp_server("plain") as (mailbox, port):
        flow = Flow(
            records,
            notifiers_for(
                slack_token=slack.token,
                slack_channel="deploys",
                slack_api_url=slack.api_url,
                smtp_url=f"smtp://127.0.0.1:{port}",
                email_from="rollhook@example.test",
                email_to="ops@example.test",
                github_token=github.token,
                github_api_url=github.url,
            ),
            target,
        )
        with records.begin() as conn:
            ids = schedule_backup_notice(
                conn, target, event="failed", detail=detail, at=TOLD_AT, notifiers=flow.notifiers
            )
        assert flow.statuses(ids) == ["delivered", "delivered"]
        assert flow.statuses(ids) == ["delivered", "delivered"]  # never sent twice
        with records.begin() as conn:  # the same occurrence told again: no new rows
            again = schedule_backup_notice(
                conn, target, event="failed", detail=detail, at=TOLD_AT, notifiers=flow.notifiers
            )
        assert again == []

    with records.begin() as conn:
        rows = notifications.of_target(conn, target.name, "backup")
    assert sorted(r.channel for r in rows) == ["email", "slack"]
    assert github.statuses == []  # a commit status is about a commit, never a backup

    [message] = slack.messages
    assert message.channel == "C0DEPLOYS"
    assert "anythingllm: off-host backup FAILED" in message.text
    shown = json.dumps(message.blocks)
    assert "&lt;wrong password&gt;" in shown and "2026-05-03T03:00:12+00:00" in shown
    assert "snapshot 0f1e2d3c" in shown

    [mail] = mailbox.received
    assert mail.message["Subject"] == "anythingllm: off-host backup FAILED"
    plain = mail.message.get_body(("plain",)).get_content()
    html = mail.message.get_body(("html",)).get_content()
    assert detail in plain and "Last good snapshot:" in plain
    assert "&lt;wrong password&gt;" in html and "<wrong password>" not in html


def test_a_target_that_turned_email_off_hears_on_slack_only(
    records: Engine, slack: SlackStandIn, target: Target
) -> None:
    quiet = target.model_copy(update={"notify": target.notify.model_copy(update={"email": False})})
    with records.begin() as conn:  # as the tick leaves it: scheduled, never a success
        remote_backups.set_schedule(conn, quiet.name, "daily 03:00", TOLD_AT, LAST)
    with smtp_server("plain") as (mailbox, port):
        flow = Flow(
            records,
            notifiers_for(
                slack_token=slack.token,
                slack_channel="deploys",
                slack_api_url=slack.api_url,
                smtp_url=f"smtp://127.0.0.1:{port}",
                email_from="rollhook@example.test",
                email_to="ops@example.test",
            ),
            quiet,
        )
        with records.begin() as conn:
            ids = schedule_backup_notice(
                conn,
                quiet,
                event="stale",
                detail="no good snapshot for over 2 days",
                at=TOLD_AT,
                notifiers=flow.notifiers,
            )
        assert flow.statuses(ids) == ["delivered"]
    assert mailbox.received == []
    [message] = slack.messages
    assert "off-host backup is overdue" in message.text
    assert "Last good snapshot" in json.dumps(message.blocks) and "never" in json.dumps(
        message.blocks
    )
