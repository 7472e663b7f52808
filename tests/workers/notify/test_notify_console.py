"""The console channel (``ROLLHOOK_NOTIFY_CONSOLE``): one log line per notification, told
what Slack would be told, through the same rows and delivery as every channel."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import Engine

from rollhook.targets import Target
from tests.workers.notify import records as rec
from tests.workers.notify.flow import Flow, notifiers_for


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "rollhook.notify.console"]


def test_a_deployment_is_two_lines_and_never_one_twice(
    records: Engine, target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "rollhook.notify.console")
    flow = Flow(records, notifiers_for(notify_console=True), target)
    record = rec.insert_running(records)
    started = flow.announce(record)
    assert flow.statuses(started) == ["delivered"]
    ended = flow.report(rec.finish(records, record, "succeeded"))
    assert ended == started  # the same row, moved on to the end
    assert flow.statuses(ended) == ["delivered"]
    flow.deliver(ended)  # a second copy of the task
    assert lines(caplog) == [
        f"notification: anythingllm: deploying 1.16.2 (deployment {record.id}, github by octocat)",
        f"notification: anythingllm: 1.16.2 deployed (deployment {record.id}, github by octocat)",
    ]
    assert flow.rows(record.id)["console"]["history"][-1]["outcome"] == "delivered"


def test_every_failure_of_a_streak_is_a_line_and_quiet_results_stay_quiet(
    records: Engine, target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "rollhook.notify.console")
    flow = Flow(records, notifiers_for(notify_console=True), target)
    for _ in range(2):
        record = rec.insert_running(records)
        flow.deliver(flow.announce(record))  # during a streak: told at the end only
        flow.deliver(flow.report(rec.finish(records, record, "rolled_back")))
    said = [line.split(" (deployment")[0] for line in lines(caplog)]
    assert said == [
        "notification: anythingllm: deploying 1.16.2",
        "notification: anythingllm: 1.16.2 FAILED, rolled back to 1.16.1",
        "notification: anythingllm: 1.16.2 still failing (2 times)",
    ]
    quiet = rec.insert_running(records)
    rec.set_status(records, quiet.id, status="no_op")
    assert flow.report(rec.get(records, quiet.id)) == []  # no_op is not in notify.on
    assert all("ghs_" not in line for line in lines(caplog))  # the log's token never shows
