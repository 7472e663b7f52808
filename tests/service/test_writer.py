"""Group commit in the writer process: a batch is one transaction, each event its own outcome.

These drive the writer's commit logic in this process; tests/service/test_recorder.py
drives the real writer process through the web side's Recorder.
"""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pytest
from sqlalchemy import Engine, event, func, select

from rollhook.events import NewEvent
from rollhook.ids import new_id
from rollhook.jobs import Job, Trigger
from rollhook.records import db
from rollhook.records import targets as target_records
from rollhook.records.events import get_event, store_batch
from rollhook.records.schema import events, jobs
from service.writelock import lock_path
from service.writer import (
    Duplicate,
    Failed,
    Frames,
    GroupCommit,
    Paused,
    Queued,
    Recorded,
    frame,
    from_wire,
    to_wire,
)


@pytest.fixture(autouse=True)
def _targets_a_and_b(records: Engine) -> None:
    with records.begin() as conn:
        target_records.ensure(conn, ["a", "b"])


def new_event(
    *targets: str,
    key: str | None = None,
    action: Literal["deploy", "rollback"] = "deploy",
    summary: Any = None,
    manual: bool = False,
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
            Job(
                id=new_id("j"),
                target=t,
                action=action,
                trigger=trigger,
                received_at=now,
                manual=manual,
            )
            for t in targets
        ],
    )


def write(records: Engine, items: list[NewEvent]) -> list[Recorded | Failed]:
    commit = GroupCommit(records, lock_path(records))
    try:
        return commit.write(items)
    finally:
        commit.close()


def count(records: Engine, table: Any) -> int:
    with records.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_a_batch_is_one_commit(records: Engine) -> None:
    commits: list[int] = []
    event.listen(records, "commit", lambda conn: commits.append(1))
    outcomes = write(records, [new_event("a") for _ in range(60)])
    assert all(isinstance(o, Queued) for o in outcomes)
    assert count(records, events) == 60
    assert count(records, jobs) == 60
    assert len(commits) == 1


def test_what_is_stored_reads_back_through_sqlalchemy(records: Engine) -> None:
    """SQLite rows are written through the driver's cursor: they must read as if written
    by SQLAlchemy (JSON summary, timezone-aware UTC times, the job as its JSON)."""
    item = new_event("a", "b", summary={"targets": ["a", "b"], "pushes": [{"after": None}]})
    write(records, [item])
    with records.connect() as conn:
        stored = get_event(conn, item.id)
        payloads = dict(conn.execute(select(jobs.c.id, jobs.c.payload)).all())
        created = set(conn.execute(select(jobs.c.created_at)).scalars())
    assert stored is not None
    assert stored["summary"] == item.summary
    assert stored["received_at"] == item.received_at
    assert stored["received_at"].tzinfo is not None
    assert (stored["source"], stored["dedup_key"], stored["kind"]) == (
        "github",
        item.dedup_key,
        "push",
    )
    assert payloads == {job.id: job.to_json() for job in item.jobs}
    assert created == {item.received_at}
    assert [j["dispatched_at"] for j in stored["jobs"]] == [None, None]


def test_duplicates_answer_the_first_event(records: Engine) -> None:
    first = new_event("a", key="github:same")
    (stored,) = write(records, [first])
    outcomes = write(
        records, [new_event("a", key="github:same"), new_event("b", key="github:same")]
    )
    assert stored == Queued(first.id, tuple(first.jobs))
    assert outcomes == [Duplicate(first.id), Duplicate(first.id)]
    assert count(records, jobs) == 1


def test_duplicates_within_one_batch(records: Engine) -> None:
    outcomes = write(records, [new_event("a", key="github:twice") for _ in range(3)])
    queued = [o for o in outcomes if isinstance(o, Queued)]
    assert len(queued) == 1
    assert all(o == Duplicate(queued[0].event_id) for o in outcomes if not isinstance(o, Queued))


def test_paused_targets_are_not_queued(records: Engine) -> None:
    with records.begin() as conn:
        target_records.set_paused(conn, "a", True, "incident")
    only_paused, both, asked = new_event("a"), new_event("a", "b"), new_event("a", manual=True)
    outcomes = write(records, [only_paused, both, asked])
    assert outcomes[0] == Paused(("a",))
    assert isinstance(outcomes[1], Queued)
    assert [j.target for j in outcomes[1].jobs] == ["b"]
    assert isinstance(outcomes[2], Queued)  # what a person asks for still goes through
    with records.connect() as conn:
        summary = conn.execute(select(events.c.summary).where(events.c.id == both.id)).scalar_one()
    assert summary["paused"] == ["a"]
    assert count(records, events) == 2


def test_a_new_deploy_event_clears_a_hold_a_rollback_does_not(records: Engine) -> None:
    with records.begin() as conn:
        target_records.set_held(conn, "a", True)
        target_records.set_held(conn, "b", True)
    write(records, [new_event("a"), new_event("b", action="rollback")])
    with records.connect() as conn:
        states = target_records.all_states(conn)
    assert (states["a"].held, states["b"].held) == (False, True)


def test_one_bad_event_does_not_fail_its_batch(records: Engine) -> None:
    bad = new_event("a", summary={"not json": {1, 2}})
    good = [new_event("a") for _ in range(3)]
    outcomes = write(records, [good[0], bad, *good[1:]])
    assert isinstance(outcomes[1], Failed)
    assert [type(o) for o in outcomes[:1] + outcomes[2:]] == [Queued] * 3
    assert count(records, events) == 3


def test_an_unusable_database_fails_every_event(tmp_path: Path) -> None:
    empty = db.make_engine(f"sqlite:///{tmp_path / 'empty.sqlite'}")  # never migrated
    outcomes = write(empty, [new_event("a"), new_event("b")])
    empty.dispose()
    assert all(isinstance(o, Failed) for o in outcomes)


def test_outcomes_cross_the_socket_as_small_tuples() -> None:
    item = new_event("a", "b")
    queued = Queued(item.id, (item.jobs[1],))  # "a" was paused
    for outcome in (queued, Duplicate("e1"), Paused(("a", "b")), Failed("disk full")):
        assert from_wire(to_wire(outcome), item) == outcome
    assert b"Job" not in pickle.dumps(to_wire(queued))  # ids only: the web side has the jobs


def test_frames_survive_any_split() -> None:
    messages = [("events", [(n, "x" * n)]) for n in range(0, 3000, 700)]
    data = b"".join(frame(m) for m in messages)
    for size in (1, 3, 4, 5, 1000, len(data)):
        frames = Frames()
        got = [
            m
            for start in range(0, len(data), size)
            for m in frames.feed(data[start : start + size])
        ]
        assert got == messages


# -- PostgreSQL: no database-wide write lock, so RETURNING settles races -------------------


on_postgres = pytest.mark.parametrize("records", ["postgresql"], indirect=True)


@on_postgres
def test_postgres_group_commit_and_duplicates(records: Engine) -> None:
    first = new_event("a", key="pg:same")
    outcomes = write(records, [first, new_event("b", key="pg:same"), new_event("a", "b")])
    assert outcomes[0] == Queued(first.id, tuple(first.jobs))
    assert outcomes[1] == Duplicate(first.id)
    assert isinstance(outcomes[2], Queued)
    assert write(records, [new_event("a", key="pg:same")]) == [Duplicate(first.id)]


@on_postgres
def test_postgres_another_writer_storing_the_same_key_first(records: Engine) -> None:
    """Between our read of the keys and our insert, another web process stores one."""
    rival = new_event("a", key="pg:race")
    ours = new_event("a", key="pg:race")

    def store_rival_first(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT INTO events") and not raced:
            raced.append(True)
            with records.begin() as other:
                store_batch(other, [rival])

    raced: list[bool] = []
    event.listen(records, "before_cursor_execute", store_rival_first)
    try:
        (outcome,) = write(records, [ours])
    finally:
        event.remove(records, "before_cursor_execute", store_rival_first)
    assert raced
    assert outcome == Duplicate(rival.id)
