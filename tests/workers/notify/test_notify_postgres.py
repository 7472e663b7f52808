"""The same guarantees on PostgreSQL, where exclusivity comes from row locks (FOR UPDATE)
and a first insert can race, instead of SQLite's database-wide write lock."""

from __future__ import annotations

import dataclasses
import itertools
import threading
from typing import Any

import pytest
from sqlalchemy import Engine

from rollhook.records.db import make_engine
from rollhook.targets import Target
from tests.workers.notify import records as rec
from tests.workers.notify.flow import Flow, notifiers_for
from tests.workers.notify.standins import SlackStandIn

pytestmark = pytest.mark.parametrize("records", ["postgresql"], indirect=True)


def _notifiers(slack: SlackStandIn, interval: float) -> Any:
    built = notifiers_for(
        slack_token=slack.token, slack_channel="deploys", slack_api_url=slack.api_url
    )
    return dataclasses.replace(built, slack_interval=interval)


def test_a_failure_streak_and_its_recovery(
    records: Engine, slack: SlackStandIn, target: Target
) -> None:
    flow = Flow(records, _notifiers(slack, 0.05), target)
    for _ in range(2):
        record = rec.insert_running(records)
        flow.deliver(flow.announce(record))
        flow.deliver(flow.report(rec.finish(records, record, "rolled_back")))
    record = rec.insert_running(records, new="1.16.3")
    flow.deliver(flow.announce(record))
    flow.deliver(flow.report(rec.finish(records, record, "succeeded")))
    first, recovery = slack.top_level()
    assert first.current_text.startswith("anythingllm: 1.16.2 still failing (2 times)")
    assert recovery.text.startswith("anythingllm: 1.16.3 deployed, recovered after 2 failures")


def test_concurrent_deliveries_and_spacing(
    records: Engine, slack: SlackStandIn, target: Target
) -> None:
    notifiers = _notifiers(slack, 1.0)
    flow = Flow(records, notifiers, target)
    ids = [flow.announce(rec.insert_running(records)) for _ in range(3)]
    # Every id twice, from four threads on their own engines: each message once, spaced.
    work = [i for pair in zip(ids, ids, strict=True) for i in pair]
    engines = [make_engine(records.url.render_as_string(hide_password=False)) for _ in range(4)]

    def run(engine: Engine, batch: list[list[str]]) -> None:
        for notification_ids in batch:
            Flow(engine, notifiers, target).deliver(notification_ids)

    threads = [
        threading.Thread(target=run, args=(engine, work[n::4])) for n, engine in enumerate(engines)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for engine in engines:
        engine.dispose()
    assert len(slack.messages) == 3
    arrived = sorted(m.at for m in slack.messages)
    assert min(b - a for a, b in itertools.pairwise(arrived)) > 0.8
