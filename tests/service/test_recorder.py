"""Group commit: concurrent events share a transaction, each request learns its own outcome."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pytest
from sqlalchemy import Engine, event, func, select

from rollhook.ids import new_id
from rollhook.jobs import Job, Trigger
from rollhook.records import db
from rollhook.records import targets as target_records
from rollhook.records.events import NewEvent, store_batch
from rollhook.records.schema import events, jobs
from service.recorder import Duplicate, Outcome, Paused, Queued, Recorder, StoreFailed


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'records.sqlite'}")
    db.migrate(engine, tmp_path)
    with engine.begin() as conn:
        target_records.ensure(conn, ["a", "b"])
    yield engine
    engine.dispose()


def new_event(
    *targets: str,
    key: str | None = None,
    action: Literal["deploy", "rollback"] = "deploy",
    summary: Any = None,
) -> NewEvent:
    event_id = new_id("e")
    now = datetime.now(UTC)
    trigger = Trigger(source="github", event_id=event_id, delivery_id="d")
    return NewEvent(
        id=event_id,
        source="github",
        dedup_key=key or f"github:{event_id}",
        kind="push",
        summary=summary if summary is not None else {"targets": list(targets)},
        received_at=now,
        delivery_id="d",
        jobs=[
            Job(id=new_id("j"), target=t, action=action, trigger=trigger, received_at=now)
            for t in targets
        ],
    )


def record_all(
    engine: Engine, items: list[NewEvent], **options: Any
) -> tuple[list[Outcome | BaseException], list[Job]]:
    committed: list[Job] = []

    async def main() -> list[Outcome | BaseException]:
        recorder = Recorder(engine, committed.extend, **options)
        recorder.start(asyncio.get_running_loop())
        try:
            return await asyncio.gather(
                *(recorder.record(i) for i in items), return_exceptions=True
            )
        finally:
            await asyncio.to_thread(recorder.stop)

    return asyncio.run(main()), committed


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_concurrent_events_share_one_commit(engine: Engine) -> None:
    commits: list[int] = []
    event.listen(engine, "commit", lambda conn: commits.append(1))
    lock_taken, release = threading.Event(), threading.Event()

    def hold_write_lock() -> None:
        # While another writer holds SQLite's lock, every request queues behind it.
        with engine.begin():
            lock_taken.set()
            release.wait(10)

    holder = threading.Thread(target=hold_write_lock)
    holder.start()
    lock_taken.wait(10)
    commits.clear()
    threading.Timer(0.3, release.set).start()
    outcomes, committed = record_all(engine, [new_event("a") for _ in range(60)])
    holder.join()
    assert all(isinstance(o, Queued) for o in outcomes)
    assert count(engine, events) == 60
    assert len(committed) == 60
    # The first request's commit, then everything that queued meanwhile: at most two more
    # (the writer may have taken a few before the holder let go), never one per event.
    assert len(commits) <= 3


def test_duplicates_answer_the_first_event(engine: Engine) -> None:
    first = new_event("a", key="github:same")
    (stored,), _ = record_all(engine, [first])
    again = [new_event("a", key="github:same"), new_event("b", key="github:same")]
    outcomes, committed = record_all(engine, again)
    assert stored == Queued(first.id, tuple(first.jobs))
    assert outcomes == [Duplicate(first.id), Duplicate(first.id)]
    assert committed == []
    assert count(engine, jobs) == 1


def test_duplicates_within_one_batch(engine: Engine) -> None:
    items = [new_event("a", key="github:twice") for _ in range(3)]
    outcomes, _ = record_all(engine, items)
    queued = [o for o in outcomes if isinstance(o, Queued)]
    assert len(queued) == 1
    assert all(o == Duplicate(queued[0].event_id) for o in outcomes if not isinstance(o, Queued))


def test_paused_targets_are_not_queued(engine: Engine) -> None:
    with engine.begin() as conn:
        target_records.set_paused(conn, "a", True, "incident")
    only_paused, both = new_event("a"), new_event("a", "b")
    outcomes, committed = record_all(engine, [only_paused, both])
    assert outcomes[0] == Paused(("a",))
    assert isinstance(outcomes[1], Queued)
    assert [j.target for j in committed] == ["b"]
    with engine.connect() as conn:
        summary = conn.execute(select(events.c.summary).where(events.c.id == both.id)).scalar_one()
    assert summary["paused"] == ["a"]
    assert count(engine, events) == 1


def test_a_new_deploy_event_clears_a_hold_a_rollback_does_not(engine: Engine) -> None:
    with engine.begin() as conn:
        target_records.set_held(conn, "a", True)
        target_records.set_held(conn, "b", True)
    record_all(engine, [new_event("a"), new_event("b", action="rollback")])
    with engine.connect() as conn:
        states = target_records.all_states(conn)
    assert (states["a"]["held"], states["b"]["held"]) == (False, True)


def test_one_bad_event_does_not_fail_its_batch(engine: Engine) -> None:
    bad = new_event("a", summary={"not json": {1, 2}})
    good = [new_event("a") for _ in range(3)]
    outcomes, committed = record_all(engine, [good[0], bad, *good[1:]])
    assert isinstance(outcomes[1], StoreFailed)
    assert [type(o) for o in outcomes[:1] + outcomes[2:]] == [Queued] * 3
    assert len(committed) == 3


def test_an_unusable_database_fails_every_request(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'empty.sqlite'}")  # never migrated
    outcomes, committed = record_all(engine, [new_event("a"), new_event("b")])
    engine.dispose()
    assert all(isinstance(o, StoreFailed) for o in outcomes)
    assert committed == []


def test_a_slow_database_answers_in_time(engine: Engine) -> None:
    release = threading.Event()
    lock_taken = threading.Event()

    def hold() -> None:
        with engine.begin():
            lock_taken.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    lock_taken.wait(10)
    threading.Timer(1.0, release.set).start()  # after the request gave up
    outcomes, _ = record_all(engine, [new_event("a")], timeout=0.3)
    holder.join()
    assert isinstance(outcomes[0], StoreFailed)
    # It was stored after all, late: a redelivery will be answered as a duplicate.
    assert count(engine, events) == 1


# -- PostgreSQL: no database-wide write lock, so RETURNING settles races -------------------


@pytest.fixture(scope="module")
def pg_engine(postgres_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = db.make_engine(postgres_server.create_database())
    db.migrate(engine, tmp_path_factory.mktemp("pg-lock"))
    with engine.begin() as conn:
        target_records.ensure(conn, ["a", "b"])
    yield engine
    engine.dispose()


def test_postgres_group_commit_and_duplicates(pg_engine: Engine) -> None:
    first = new_event("a", key="pg:same")
    outcomes, committed = record_all(
        pg_engine, [first, new_event("b", key="pg:same"), new_event("a", "b")]
    )
    assert outcomes[0] == Queued(first.id, tuple(first.jobs))
    assert outcomes[1] == Duplicate(first.id)
    assert isinstance(outcomes[2], Queued)
    assert len(committed) == 3
    (again,), _ = record_all(pg_engine, [new_event("a", key="pg:same")])
    assert again == Duplicate(first.id)


def test_postgres_another_writer_storing_the_same_key_first(pg_engine: Engine) -> None:
    """Between our read of the keys and our insert, another web process stores one."""
    rival = new_event("a", key="pg:race")
    ours = new_event("a", key="pg:race")

    def store_rival_first(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT INTO events") and not raced:
            raced.append(True)
            with pg_engine.begin() as other:
                store_batch(other, [rival])

    raced: list[bool] = []
    event.listen(pg_engine, "before_cursor_execute", store_rival_first)
    try:
        (outcome,), committed = record_all(pg_engine, [ours])
    finally:
        event.remove(pg_engine, "before_cursor_execute", store_rival_first)
    assert raced
    assert outcome == Duplicate(rival.id)
    assert committed == []
