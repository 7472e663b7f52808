"""Clock skew: "newest wins" among a target's queued work must not depend on the clocks
of the hosts that raised the events (web, beat, each host's workers), only on the
records database's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from rollhook.events import NewEvent
from rollhook.ids import new_id
from rollhook.jobs import Job, Trigger
from rollhook.records import deployments, events
from rollhook.records.schema import db_now
from workers.intake import queue_job


def _event(raised_at: datetime) -> NewEvent:
    event_id = new_id("e")
    job = Job(id=new_id("j"), target="llm", trigger=Trigger(source="poll", event_id=event_id),
              received_at=raised_at)  # fmt: skip
    return NewEvent(event_id, "poll", new_id("k"), "push", {}, raised_at, jobs=[job])


@pytest.mark.parametrize("records", ["postgres"], indirect=True)
def test_the_newest_event_wins_whatever_the_raising_hosts_clock_said(records: Engine) -> None:
    now = datetime.now(UTC)
    first = _event(now)  # raised by the web process, its clock right
    second = _event(now - timedelta(hours=1))  # later, by a host whose clock is an hour slow
    with records.begin() as conn:
        events.store_batch(conn, [first])
    with records.begin() as conn:
        events.store_batch(conn, [second])
    with records.begin() as conn:  # claimed in the other order, by two workers
        queue_job(conn, second.jobs[0].id)
        queue_job(conn, first.jobs[0].id)
        order = [record.trigger["event_id"] for record in deployments.queued(conn, "llm")]
        stored = events.get_event(conn, second.id)
        clock = db_now(conn)
    assert order == [first.id, second.id]  # oldest first: the second is the newest
    assert stored is not None
    assert abs(stored["received_at"] - clock) < timedelta(minutes=1)  # the database's time


@pytest.mark.parametrize("records", ["postgres"], indirect=True)
def test_a_batch_keeps_its_order_on_the_databases_clock(records: Engine) -> None:
    now = datetime.now(UTC)
    batch = [_event(now + timedelta(seconds=5)), _event(now)]  # arrival order, clocks aside
    with records.begin() as conn:
        events.store_batch(conn, batch)
        for item in batch:
            queue_job(conn, item.jobs[0].id)
        order = [record.trigger["event_id"] for record in deployments.queued(conn, "llm")]
    assert order == [batch[0].id, batch[1].id]
