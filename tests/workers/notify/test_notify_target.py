"""Target notices (the reconcile loop's): drift found, back in sync, degraded. Each is told
once, to the channels that hear failures; back in sync goes in the drift message's Slack
thread; a commit status is never set for them."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from rollhook.records import sync as sync_records
from rollhook.records.deployments import DeploymentRecord
from rollhook.targets import Notify, Target
from tests.workers.notify import records as rec
from tests.workers.notify.flow import Flow, notifiers_for
from tests.workers.notify.standins import SlackStandIn
from workers.drift import Inspection
from workers.healing import record
from workers.notify import Notifiers, schedule_target_notice

STOPPED = [{"service": "anything-llm", "what": "stopped", "detail": "exited (137) at 10:00"}]
T0 = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


def look(
    records: Engine,
    target: Target,
    current: DeploymentRecord,
    notifiers: Notifiers,
    *,
    drift: list[dict[str, str]],
    at: datetime,
) -> list[str]:
    """Record an inspection as the watcher would (no heal: ``current`` is running)."""
    with records.begin() as conn:
        decision = record(
            conn, target, Inspection(drift=drift), current, may_heal=False,
            notifiers=notifiers, now=at,
        )  # fmt: skip
    return decision.notification_ids


def console_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "rollhook.notify.console"]


def test_a_drift_episode_is_one_message_and_its_end_a_reply_in_its_thread(
    records: Engine, slack: SlackStandIn, target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "rollhook.notify.console")
    notifiers = notifiers_for(
        slack_token=slack.token,
        slack_channel="deploys",
        slack_api_url=slack.api_url,
        notify_console=True,
        github_token="ghp_rollhookTestToken",
    )
    flow = Flow(records, notifiers, target)
    current = rec.insert_running(records)

    found = look(records, target, current, notifiers, drift=STOPPED, at=T0)
    assert flow.statuses(found) == ["delivered", "delivered"]  # slack, console; no github
    for minute in (1, 2, 3):  # still drifted: nothing new to tell
        assert (
            look(
                records,
                target,
                current,
                notifiers,
                drift=STOPPED,
                at=T0 + timedelta(minutes=minute),
            )
            == []
        )
    [message] = slack.messages
    assert message.text == "anythingllm: drift found (anything-llm stopped)"
    assert "exited (137)" in str(message.blocks)

    ended = look(records, target, current, notifiers, drift=[], at=T0 + timedelta(minutes=4))
    assert flow.statuses(ended) == ["delivered", "delivered"]
    [reply] = slack.replies(message.ts)
    assert reply.text == f"anythingllm: back in sync with {current.id}"
    assert slack.top_level() == [message]
    assert console_lines(caplog) == [
        "notification: anythingllm: drift found (anything-llm stopped) (target anythingllm)",
        f"notification: anythingllm: back in sync with {current.id} (target anythingllm)",
    ]
    with records.begin() as conn:
        notified = sync_records.get(conn, target.name).notified
    assert sorted(key.split(":")[0] for key in notified) == ["drift", "in_sync"]

    # A new episode is news again.
    again = look(records, target, current, notifiers, drift=STOPPED, at=T0 + timedelta(minutes=5))
    assert flow.statuses(again) == ["delivered", "delivered"]
    assert len(slack.top_level()) == 2


def test_each_notice_is_made_once_and_only_where_failures_are_heard(
    records: Engine, target: Target
) -> None:
    notifiers = notifiers_for(notify_console=True)
    since = T0.isoformat()
    spec = {"headline": "anythingllm: DEGRADED, healing stopped", "details": ["3 heals"]}
    with records.begin() as conn:
        first = schedule_target_notice(
            conn, target, notifiers, event="degraded", since=since, spec=spec
        )
        second = schedule_target_notice(
            conn, target, notifiers, event="degraded", since=since, spec=spec
        )
    assert len(first) == 1 and second == []

    quiet = target.model_copy(update={"notify": Notify(on=["succeeded"])})
    with records.begin() as conn:
        told = schedule_target_notice(conn, quiet, notifiers, event="drift", since=since, spec=spec)
        # back in sync goes only where its drift was told: nowhere here
        back = schedule_target_notice(
            conn, quiet, notifiers, event="in_sync", since=since, spec=spec, episode=since
        )
    assert (told, back) == ([], [])
