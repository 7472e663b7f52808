"""The records database on SQLite (the default) and PostgreSQL (by URL).

The guarantees the rest of rollhook leans on: one event per delivery, one claim per job,
one lease holder per target with a fencing token that locks out a lost holder, and a
schema that migrates from nothing, twice, without harm.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect

from rollhook.events import NewEvent
from rollhook.ids import new_id
from rollhook.jobs import Job, Trigger
from rollhook.records import deployments, events, jobs, ui_sessions
from rollhook.records import targets as target_records
from rollhook.records.db import migrate
from rollhook.records.schema import utcnow
from rollhook.records.ui_sessions import UiSession

on_both = pytest.mark.parametrize("records", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture(autouse=True)
def _a_target(records: Engine, tmp_path: Path) -> None:
    migrate(records, tmp_path)  # a second start finds nothing to do
    with records.begin() as conn:
        target_records.ensure(conn, ["llm"])


def new_event(dedup_key: str, target: str = "llm", body_key: str | None = None) -> NewEvent:
    event_id = new_id("e")
    now = datetime.now(UTC)
    job = Job(
        id=new_id("j"),
        target=target,
        trigger=Trigger(source="github", event_id=event_id),
        received_at=now,
    )
    summary = {"ref": "main"}
    return NewEvent(
        event_id, "github", dedup_key, "push", summary, now, jobs=[job], body_key=body_key
    )


@on_both
def test_the_schema_has_every_table(records: Engine) -> None:
    tables = set(inspect(records).get_table_names())
    assert {"events", "jobs", "deployments", "targets", "notifications", "ui_sessions"} <= tables


@on_both
def test_the_same_delivery_is_one_event(records: Engine) -> None:
    first, again, other = new_event("github:d1"), new_event("github:d1"), new_event("github:d2")
    with records.begin() as conn:
        stored = events.store_batch(conn, [first, again, other])
    assert [s.duplicate for s in stored] == [False, True, False]
    assert stored[1].event_id == first.id
    with records.begin() as conn:
        later = events.store_batch(conn, [new_event("github:d1")])
    assert later[0].duplicate and later[0].event_id == first.id
    with records.begin() as conn:
        assert jobs.backlog(conn) == 2  # the duplicates queued nothing


@on_both
def test_a_signed_body_is_one_event_under_any_delivery_id(records: Engine) -> None:
    """The body key catches a replay under a fresh delivery id; the delivery key catches
    a redelivery; events without a body key (unsigned sources) never collide on it."""
    first = new_event("github:b1", body_key="body:sha256:aa")
    batch = [
        first,
        new_event("github:b2", body_key="body:sha256:aa"),  # same body, new id: replay
        new_event("gitea:b3", body_key="body:sha256:aa"),  # same body, Gitea's headers
        new_event("github:b1", body_key="body:sha256:bb"),  # same delivery id
        new_event("gitlab:b4"),
        new_event("gitlab:b5"),
    ]
    with records.begin() as conn:
        stored = events.store_batch(conn, batch)
    assert [s.duplicate for s in stored] == [False, True, True, True, False, False]
    assert {s.event_id for s in stored[:4]} == {first.id}
    with records.begin() as conn:
        later = events.store_batch(conn, [new_event("github:b6", body_key="body:sha256:aa")])
        other = events.store_batch(conn, [new_event("github:b7", body_key="body:sha256:cc")])
    assert later[0].duplicate and later[0].event_id == first.id
    assert not other[0].duplicate
    with records.begin() as conn:
        assert jobs.backlog(conn) == 4


@pytest.mark.parametrize("records", ["postgresql"], indirect=True)
def test_a_replay_stored_meanwhile_by_another_writer_is_a_duplicate(records: Engine) -> None:
    """PostgreSQL: two writers race with the same body under different delivery ids; the
    second waits on the unique index, inserts nothing, and learns the first's id."""
    first = new_event("github:race1", body_key="body:sha256:race")
    second = new_event("github:race2", body_key="body:sha256:race")
    outcome: list[events.Stored] = []
    with records.begin() as conn:
        events.store_batch(conn, [first])
        racer = threading.Thread(target=lambda: outcome.extend(_store(records, second)))
        racer.start()
        time.sleep(0.5)  # the racer read no key yet and now waits on the index
        assert racer.is_alive()
    racer.join(10)
    assert [(s.event_id, s.duplicate) for s in outcome] == [(first.id, True)]


def _store(engine: Engine, item: NewEvent) -> list[events.Stored]:
    with engine.begin() as conn:
        return events.store_batch(conn, [item])


@on_both
def test_a_job_is_claimed_once_and_leaves_the_outbox(records: Engine) -> None:
    item = new_event("github:claim")
    with records.begin() as conn:
        events.store_batch(conn, [item])
    with records.begin() as conn:
        assert [j.id for j in jobs.undispatched(conn, timedelta(0))] == [item.jobs[0].id]
        assert jobs.claim(conn, item.jobs[0].id)
        assert not jobs.claim(conn, item.jobs[0].id)
        assert jobs.undispatched(conn, timedelta(0)) == []


@on_both
def test_purging_keeps_events_whose_work_is_not_done(records: Engine) -> None:
    done, waiting = new_event("github:done"), new_event("github:waiting")
    with records.begin() as conn:
        events.store_batch(conn, [done, waiting])
        jobs.claim(conn, done.jobs[0].id)
    with records.begin() as conn:
        assert events.purge_events(conn, timedelta(seconds=-1)) == 1
        assert events.get_event(conn, done.id) is None
        assert events.get_event(conn, waiting.id) is not None


@on_both
def test_one_lease_holder_and_fencing_after_expiry(records: Engine) -> None:
    with records.begin() as conn:
        first = target_records.acquire_lease(conn, "llm", "worker-a", ttl=0.5)
        assert first is not None
        assert target_records.acquire_lease(conn, "llm", "worker-b", ttl=0.5) is None
    time.sleep(0.7)
    with records.begin() as conn:
        expired = target_records.get(conn, "llm")
        assert expired is not None and expired.lease_owner == "worker-a"
        assert expired.lease_expires_at is not None and expired.lease_expires_at < utcnow()
        second = target_records.acquire_lease(conn, "llm", "worker-b", ttl=30)
        assert second == first + 1
        # The old holder is fenced out: it can neither renew nor record an outcome.
        assert not target_records.renew_lease(conn, "llm", first, 30)
        assert not target_records.record_outcome(conn, "llm", first, current="d-old")
        assert target_records.record_outcome(conn, "llm", second, current="d-new")
        target_records.release_lease(conn, "llm", first)  # a stale release changes nothing
        assert target_records.get(conn, "llm").lease_owner == "worker-b"


@on_both
def test_a_deployment_is_fenced_by_its_lease_token(records: Engine) -> None:
    item = new_event("github:dep")
    with records.begin() as conn:
        events.store_batch(conn, [item])
        deployment_id = deployments.create_queued(conn, item.jobs[0])
        token = target_records.acquire_lease(conn, "llm", "worker-a", ttl=30)
        assert token is not None
        assert not deployments.start(conn, deployment_id, token + 1, {"ref": None})
        assert deployments.start(conn, deployment_id, token, {"ref": None})
        assert deployments.update_fenced(conn, deployment_id, token, log="mine")
        assert not deployments.update_fenced(conn, deployment_id, token - 1, log="stale writer")
        assert deployments.finish(conn, deployment_id, token, "succeeded", None)
        assert not deployments.finish(conn, deployment_id, token, "failed", "too late")
        record = deployments.get(conn, deployment_id)
    assert record is not None
    assert (record.status, record.log, record.attempt) == ("succeeded", "mine", 1)
    assert record.finished_at.tzinfo is not None
    assert record.started_at <= record.finished_at


@on_both
def test_losing_the_target_lease_fences_out_the_old_writer(records: Engine) -> None:
    item = new_event("github:lost")
    with records.begin() as conn:
        events.store_batch(conn, [item])
        deployment_id = deployments.create_queued(conn, item.jobs[0])
        first = target_records.acquire_lease(conn, "llm", "worker-a", ttl=0.2)
        assert first is not None and deployments.start(conn, deployment_id, first, {})
    time.sleep(0.4)
    with records.begin() as conn:  # someone else takes the expired lease, adopting nothing
        assert target_records.acquire_lease(conn, "llm", "worker-b", ttl=30) == first + 1
        assert not deployments.update_fenced(conn, deployment_id, first, log="after losing it")
        assert not deployments.finish(conn, deployment_id, first, "succeeded", None)
        assert deployments.get(conn, deployment_id).status == "running"


@on_both
def test_queued_requests_are_superseded_by_the_newest(records: Engine) -> None:
    items = [new_event(f"github:burst{n}") for n in range(3)]
    with records.begin() as conn:
        events.store_batch(conn, items)
        ids = [deployments.create_queued(conn, item.jobs[0]) for item in items]
        assert [d.id for d in deployments.queued(conn, "llm")] == ids
        token = target_records.acquire_lease(conn, "llm", "worker", ttl=30)
        assert token is not None
        deployments.supersede(conn, ids[:2], ids[2], token + 1)  # not the holder: nothing
        assert len(deployments.queued(conn, "llm")) == 3
        deployments.supersede(conn, ids[:2], ids[2], token)
        assert [d.id for d in deployments.queued(conn, "llm")] == [ids[2]]
        assert deployments.get(conn, ids[0]).superseded_by == ids[2]
        history = deployments.history(conn, "llm", 10)
    assert [d.id for d in history] == list(reversed(ids))


@on_both
def test_a_dashboard_session_lives_until_it_expires_or_is_deleted(records: Engine) -> None:
    now = utcnow()
    alive = UiSession("a" * 64, "alice", "10.0.0.7", now, now + timedelta(hours=12))
    expired = UiSession("b" * 64, "bob", None, now - timedelta(hours=13), now - timedelta(hours=1))
    with records.begin() as conn:
        ui_sessions.create(conn, alive)
        ui_sessions.create(conn, expired)
    with records.begin() as conn:
        assert ui_sessions.get(conn, alive.id) == alive
        assert ui_sessions.get(conn, expired.id) is None  # past its time: no session
        assert ui_sessions.get(conn, "c" * 64) is None
        assert ui_sessions.delete_expired(conn) == 1
        ui_sessions.delete_one(conn, alive.id)
        assert ui_sessions.get(conn, alive.id) is None
