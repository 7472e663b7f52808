"""A host going down, and coming back, told on every channel through the one notifier
interface (never as a commit status), each once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, update

from rollhook.records import hosts
from rollhook.records.schema import db_now, host_workers
from rollhook.records.schema import hosts as hosts_table
from rollhook.targets import Target
from tests.workers.notify.flow import Flow, notifiers_for
from tests.workers.notify.mailserver import smtp_server
from tests.workers.notify.standins import GitHubStandIn, SlackStandIn
from tests.workers.test_hosts_routing import targets_on
from workers.context import WorkerContext
from workers.hostwatch import watch_hosts
from workers.notify import schedule_host_notice

DOWN_AT = datetime(2026, 12, 2, 19, 40, 0, tzinfo=UTC)


def test_a_host_down_is_one_slack_message_and_one_email(
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
        detail = "no worker heartbeat since 2026-12-02T19:39:30+00:00; waiting: db"
        with records.begin() as conn:
            ids = schedule_host_notice(
                conn, "b", event="down", detail=detail, at=DOWN_AT, notifiers=flow.notifiers
            )
        assert flow.statuses(ids) == ["delivered", "delivered"]
        with records.begin() as conn:  # the same change again: no new rows
            assert (
                schedule_host_notice(
                    conn, "b", event="down", detail=detail, at=DOWN_AT, notifiers=flow.notifiers
                )
                == []
            )
    [message] = slack.messages
    assert "host b is DOWN" in message.text and "waiting: db" in message.text
    [mail] = mailbox.received
    assert mail.message["Subject"] == "host b is DOWN"
    assert github.statuses == []


def test_beat_tells_a_host_down_once_and_back_once(records: Engine, tmp_path: Path) -> None:
    ctx = _context(records, tmp_path)
    with records.begin() as conn:
        hosts.beat(conn, worker="m1:1", host="a", rollhook_version="x", engine_version="y")
        hosts.beat(conn, worker="m2:1", host="b", rollhook_version="x", engine_version="y")
    assert watch_hosts(ctx) == []
    with records.begin() as conn:  # b's only worker was SIGKILLed 31 s ago
        ago = db_now(conn) - timedelta(seconds=31)
        conn.execute(update(host_workers).where(host_workers.c.host == "b").values(last_beat=ago))
    assert watch_hosts(ctx) == [("b", "down")]
    assert watch_hosts(ctx) == []  # told once
    with records.begin() as conn:
        hosts.beat(conn, worker="m2:2", host="b", rollhook_version="x", engine_version="y")
    assert watch_hosts(ctx) == [("b", "up")]
    assert watch_hosts(ctx) == []


def test_beat_tells_a_host_whose_worker_never_came_down_once_after_the_grace(
    records: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = _context(records, tmp_path)
    with records.begin() as conn:
        hosts.beat(conn, worker="m1:1", host="a", rollhook_version="x", engine_version="y")
    assert watch_hosts(ctx) == []  # a cold start: b's worker may come in a moment
    with records.begin() as conn:  # ... but 31 s later it still has not
        ago = db_now(conn) - timedelta(seconds=31)
        conn.execute(update(hosts_table).values(changed_at=ago))
    with caplog.at_level("ERROR", logger="rollhook.hosts"):
        assert watch_hosts(ctx) == [("b", "down")]
    assert "no worker of b has ever beaten (is `rollhook worker --host b` running?)" in caplog.text
    assert "waiting: db" in caplog.text
    assert watch_hosts(ctx) == []


def _context(records: Engine, tmp_path: Path) -> WorkerContext:
    """Beat's context: targets web on host a, db on host b."""
    return WorkerContext(
        records=records, data_dir=tmp_path, targets=targets_on(web="a", db="b"),
        docker_host=None, lease_seconds=30, send=lambda *_: None,
    )  # fmt: skip
