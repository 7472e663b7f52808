"""Failure isolation: a broken notifier never changes the deployment, never stops the other
channels, and nothing delivered is sent twice; announce/report never raise."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from sqlalchemy import Engine, select, text

from rollhook.records.schema import deployments
from rollhook.targets import Target
from tests.workers.notify import records as rec
from tests.workers.notify.flow import Flow, notifiers_for
from tests.workers.notify.mailserver import smtp_server
from tests.workers.notify.standins import GitHubStandIn, SlackStandIn
from workers.notify import (
    RetryLater,
    deliver,
    pending,
    schedule_announcement,
    schedule_report,
)


def _until_settled(flow: Flow, ids: list[str]) -> None:
    """Run the task the way Celery would: again after each RetryLater, until it stops."""
    for notification_id in ids:
        for _ in range(10):
            try:
                deliver(flow.engine, flow.notifiers, notification_id)
                break
            except RetryLater:
                continue


def test_slack_down_and_smtp_refusing_leave_the_deployment_and_github_alone(
    records: Engine, slack: SlackStandIn, github: GitHubStandIn, target: Target
) -> None:
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
        mailbox.refuse_rcpt = "450 4.2.1 mailbox unavailable, try later"
        record = rec.insert_running(records)
        with slack.down():
            _until_settled(flow, flow.announce(record))
            final = rec.finish(records, record, "rolled_back")
            _until_settled(flow, flow.report(final))
            assert rec.get(records, record.id) == final  # the record is untouched

            rows = flow.rows(record.id)
            assert {c: r["status"] for c, r in rows.items()} == {
                "slack": "failed",
                "github": "delivered",
                "email": "failed",
            }
            assert [h["outcome"] for h in rows["slack"]["history"]] == (
                ["retry"] * 4
                + ["failed"]  # the announcement
                + ["retry"] * 4
                + ["failed"]  # the final report: its own attempts
            )
            assert "Connection refused" in rows["slack"]["history"][0]["detail"]
            assert rows["email"]["history"][0]["detail"].startswith(
                "smtp: every recipient refused ([450])"
            )
            assert rows["email"]["attempts"] == 5
            assert [s.state for s in github.statuses] == ["pending", "failure"]

        # Slack and SMTP are back; running the tasks again sends nothing twice and does
        # not resurrect what was given up on.
        mailbox.refuse_rcpt = None
        _until_settled(flow, [r["id"] for r in flow.all_rows()])
        assert [s.state for s in github.statuses] == ["pending", "failure"]
        assert slack.messages == [] and mailbox.received == []
        assert flow.rows(record.id)["slack"]["attempts"] == 5


def test_announce_and_report_never_raise_and_leave_the_callers_transaction_usable(
    records: Engine, slack: SlackStandIn, target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    notifiers = notifiers_for(
        slack_token=slack.token, slack_channel="deploys", slack_api_url=slack.api_url
    )
    record = rec.insert_running(records)
    broken = dataclasses.replace(record, id=None)  # a record the rows cannot be made for
    caplog.set_level(logging.ERROR, "rollhook.notify")
    with records.begin() as conn:
        assert schedule_announcement(conn, broken, target, notifiers) == []
        failed = dataclasses.replace(broken, status="failed")
        assert schedule_report(conn, failed, target, notifiers) == []
        assert schedule_announcement(conn, "no-such-deployment", target, notifiers) == []
        conn.execute(text("SELECT 1"))  # still usable: only the savepoint was rolled back
        conn.execute(
            deployments.update().where(deployments.c.id == record.id).values(reason="still ours")
        )
    with records.connect() as conn:
        reason = conn.execute(
            select(deployments.c.reason).where(deployments.c.id == record.id)
        ).scalar_one()
    assert reason == "still ours"
    assert "announce failed" in caplog.text and "the deployment goes on" in caplog.text


def test_pending_finds_rows_the_broker_lost_but_not_those_waiting_or_being_sent(
    records: Engine, slack: SlackStandIn, target: Target
) -> None:
    flow = Flow(
        records,
        notifiers_for(
            slack_token=slack.token, slack_channel="deploys", slack_api_url=slack.api_url
        ),
        target,
    )
    lost = flow.announce(rec.insert_running(records))
    waiting = flow.announce(rec.insert_running(records))
    slack.error_next("internal_error")
    with pytest.raises(RetryLater):
        deliver(records, flow.notifiers, waiting[0])
    with records.connect() as conn:
        assert pending(conn, older_than=60) == []  # nothing is old yet
        assert pending(conn, older_than=0) == lost  # the one waiting out its retry is not
    flow.deliver(lost)
    with records.connect() as conn:
        assert pending(conn, older_than=0) == []
