"""The outbox's fast path: committed jobs reach the broker, or wait in the outbox for it."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, select

from rollhook.events import NewEvent
from rollhook.ids import new_id
from rollhook.jobs import Job, Trigger
from rollhook.records.events import store_batch
from rollhook.records.schema import jobs
from service.publisher import Publisher
from tests.service.support import wait_for


class FakeBroker:
    """Records what it took; refuses everything while down, like a stopped Redis."""

    def __init__(self) -> None:
        self.up = True
        self.taken: list[str] = []
        self.messages: list[int] = []  # jobs per message
        self.attempts = 0
        self.lock = threading.Lock()

    def publish(self, celery: Any, job_jsons: list[str]) -> None:
        with self.lock:
            self.attempts += 1
            if not self.up:
                raise ConnectionRefusedError("broker down")
            self.messages.append(len(job_jsons))
            self.taken.extend(Job.from_json(j).id for j in job_jsons)

    def probe(self, celery: Any) -> None:
        if not self.up:
            raise ConnectionRefusedError("broker down")


@pytest.fixture
def broker() -> FakeBroker:
    return FakeBroker()


def store(records: Engine, n: int) -> list[Job]:
    """n events with one job each, committed as the recorder would."""
    now = datetime.now(UTC)
    batch = []
    for _ in range(n):
        event_id = new_id("e")
        trigger = Trigger(source="api", event_id=event_id)
        job = Job(id=new_id("j"), target="a", trigger=trigger, received_at=now)
        batch.append(NewEvent(event_id, "api", f"api:{event_id}", "deploy", {}, now, jobs=[job]))
    with records.begin() as conn:
        store_batch(conn, batch)
    return [job for item in batch for job in item.jobs]


def dispatch_state(records: Engine) -> dict[str, tuple[bool, int]]:
    with records.connect() as conn:
        rows = conn.execute(select(jobs.c.id, jobs.c.dispatched_at, jobs.c.dispatch_attempts))
        return {job_id: (at is not None, attempts) for job_id, at, attempts in rows}


def publisher(records: Engine, broker: FakeBroker, **options: Any) -> Publisher:
    results: list[tuple[int, int]] = []
    p = Publisher(
        object(),
        records,
        publish=broker.publish,
        probe=broker.probe,
        on_result=lambda s, f: results.append((s, f)),
        **options,
    )
    p.start()
    return p


def test_committed_jobs_are_sent_and_marked(records: Engine, broker: FakeBroker) -> None:
    p = publisher(records, broker)
    sent = store(records, 5)
    p.submit(sent)
    wait_for(lambda: all(done for done, _ in dispatch_state(records).values()), what="dispatch")
    p.stop()
    assert sorted(broker.taken) == sorted(j.id for j in sent)
    assert p.broker_state == "up"


def test_jobs_committed_together_travel_in_one_message(records: Engine, broker: FakeBroker) -> None:
    """A broker message costs far more than a job: what is waiting goes out together."""
    p = Publisher(object(), records, publish=broker.publish, probe=broker.probe)
    sent = store(records, 40)
    p.submit(sent[:25])
    p.submit(sent[25:])  # both batches wait: the thread is not running yet
    p.start()
    wait_for(lambda: len(broker.taken) == 40, what="dispatch")
    p.stop()
    assert broker.messages == [40]
    assert all(done for done, _ in dispatch_state(records).values())


def test_the_outbox_is_drained_at_start(records: Engine, broker: FakeBroker) -> None:
    waiting = store(records, 3)  # left by a web process that died before sending them
    p = publisher(records, broker)
    p.drain_outbox()
    wait_for(lambda: len(broker.taken) == 3, what="drain")
    p.stop()
    assert sorted(broker.taken) == sorted(j.id for j in waiting)
    assert all(done for done, _ in dispatch_state(records).values())


def test_jobs_committed_during_the_start_up_drain_go_out_once(
    records: Engine, broker: FakeBroker
) -> None:
    """The drain reads the outbox while the writer commits: those jobs are both read and
    submitted, and one message is enough."""
    gate, sending = threading.Event(), threading.Event()
    publish = broker.publish

    def slow_publish(celery: Any, job_jsons: list[str]) -> None:
        sending.set()
        gate.wait(10)
        publish(celery, job_jsons)

    p = Publisher(object(), records, publish=slow_publish, probe=broker.probe)
    committed = store(records, 3)
    p.drain_outbox()
    p.start()
    wait_for(sending.is_set, what="the drain sending")
    p.submit(committed)  # the writer's fast path, while the drain is sending them
    gate.set()
    wait_for(lambda: all(done for done, _ in dispatch_state(records).values()), what="dispatch")
    later = store(records, 2)
    p.submit(later)
    wait_for(lambda: len(broker.taken) >= 5, what="the next jobs")
    p.stop()
    assert sorted(broker.taken) == sorted(j.id for j in committed + later)  # each once


def test_broker_down_leaves_jobs_in_the_outbox_then_sends_them(
    records: Engine, broker: FakeBroker
) -> None:
    broker.up = False
    p = publisher(records, broker, backoff=1.5)
    first = store(records, 4)
    p.submit(first)
    wait_for(lambda: p.broker_state == "down", what="the failure")
    second = store(records, 3)
    p.submit(second)  # within the back-off: not even tried
    state = dispatch_state(records)
    assert not any(done for done, _ in state.values())
    assert sum(attempts for _, attempts in state.values()) >= 4  # the failure was noted
    assert broker.attempts == 1  # one refusal is enough, the rest were not tried one by one
    broker.up = True
    # Nobody submits anything new: the publisher retries after its back-off by itself.
    wait_for(lambda: all(done for done, _ in dispatch_state(records).values()), what="recovery")
    p.stop()
    assert sorted(set(broker.taken)) == sorted(j.id for j in first + second)
    assert p.broker_state == "up"


def test_stop_sends_what_was_queued(records: Engine, broker: FakeBroker) -> None:
    p = publisher(records, broker)
    queued = store(records, 20)
    p.submit(queued)
    p.stop()
    assert sorted(broker.taken) == sorted(j.id for j in queued)


def test_readiness_learns_the_broker_state_without_traffic(
    records: Engine, broker: FakeBroker
) -> None:
    broker.up = False
    p = publisher(records, broker)
    p.drain_outbox()
    wait_for(lambda: p.broker_state == "down", what="the probe")
    p.stop()
