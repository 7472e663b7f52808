"""The web side of group commit, with the real writer process behind it.

Concurrent requests share commits, each learns its own outcome, a slow database costs a
503 rather than a hung request, and a writer that dies is replaced.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine, func, select

from rollhook.records import targets as target_records
from rollhook.records.schema import events, jobs
from service.recorder import Queued, Recorder, StoreFailed
from service.writer import WriterSettings
from tests.harness.ports import free_port
from tests.service.test_writer import new_event

T = TypeVar("T")


@pytest.fixture(autouse=True)
def _targets_a_and_b(records: Engine) -> None:
    with records.begin() as conn:
        target_records.ensure(conn, ["a", "b"])


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def with_recorder(
    url: str, broker_url: str, body: Callable[[Recorder], Awaitable[T]], **options: Any
) -> T:
    async def main() -> T:
        recorder = Recorder(WriterSettings(url, broker_url), **options)
        await recorder.start()
        try:
            return await body(recorder)
        finally:
            await recorder.stop()

    return asyncio.run(main())


def hold_write_lock(engine: Engine, seconds: float) -> threading.Thread:
    """Another writer holds SQLite's lock for a while (returns once it has it)."""
    taken = threading.Event()

    def hold() -> None:
        with engine.begin():
            taken.set()
            threading.Event().wait(seconds)

    holder = threading.Thread(target=hold)
    holder.start()
    taken.wait(10)
    return holder


def test_events_are_committed_by_the_writer_process(records: Engine, broker_url: str) -> None:
    engine, url = records, str(records.url)
    item = new_event("a", "b")
    dispatched: list[tuple[int, int]] = []

    async def body(recorder: Recorder) -> Any:
        outcome = await recorder.record(item)
        for _ in range(400):  # the publisher reports once the broker took the jobs
            if dispatched:
                break
            await asyncio.sleep(0.05)
        return outcome

    outcome = with_recorder(
        url, broker_url, body, on_dispatch=lambda s, f: dispatched.append((s, f))
    )
    assert outcome == Queued(item.id, tuple(item.jobs))
    assert count(engine, events) == 1
    assert count(engine, jobs) == 2
    assert dispatched == [(2, 0)]


def test_concurrent_requests_share_commits(records: Engine, broker_url: str) -> None:
    engine, url = records, str(records.url)
    commits: list[int] = []

    async def body(recorder: Recorder) -> list[Any]:
        holder = hold_write_lock(engine, 0.5)
        tasks = []
        for _ in range(60):  # one at a time, each in its own frame, while the writer waits
            tasks.append(asyncio.create_task(recorder.record(new_event("a"))))
            await asyncio.sleep(0.002)
        outcomes = await asyncio.gather(*tasks)
        await asyncio.to_thread(holder.join)
        return outcomes

    outcomes = with_recorder(url, broker_url, body, on_commit=commits.append)
    assert all(isinstance(o, Queued) for o in outcomes)
    assert count(engine, events) == 60
    # The first request's commit, then everything that queued meanwhile: at most two more
    # (the writer may have taken a few before the holder let go), never one per event.
    assert sum(commits) == 60
    assert len(commits) <= 3


def test_a_slow_database_answers_in_time(records: Engine, broker_url: str) -> None:
    engine, url = records, str(records.url)

    async def body(recorder: Recorder) -> BaseException | None:
        holder = hold_write_lock(engine, 1.0)
        try:
            await recorder.record(new_event("a"))
        except StoreFailed as exc:
            return exc
        finally:
            await asyncio.to_thread(holder.join)
        return None

    failure = with_recorder(url, broker_url, body, timeout=0.3)
    assert isinstance(failure, StoreFailed)
    # It was stored after all, late (stop waits for the writer): a redelivery will be
    # answered as a duplicate.
    assert count(engine, events) == 1


def test_stopping_stores_what_was_handed_over(records: Engine, broker_url: str) -> None:
    engine, url = records, str(records.url)

    async def main() -> list[Any]:
        recorder = Recorder(WriterSettings(url, broker_url))
        await recorder.start()
        tasks = [asyncio.create_task(recorder.record(new_event("a"))) for _ in range(20)]
        await asyncio.sleep(0)  # the requests hand their events over ...
        await recorder.stop()  # ... and the process is told to stop at once
        return await asyncio.gather(*tasks)

    outcomes = asyncio.run(main())
    assert all(isinstance(o, Queued) for o in outcomes)
    assert count(engine, events) == 20


def test_a_dead_writer_is_replaced(records: Engine, broker_url: str) -> None:
    engine, url = records, str(records.url)

    async def body(recorder: Recorder) -> tuple[bool, Any]:
        first = recorder._process
        assert first is not None
        first.kill()
        refused = False
        for _ in range(200):  # while it is gone: 503, at once
            try:
                outcome = await recorder.record(new_event("a"))
            except StoreFailed:
                refused = True
                await asyncio.sleep(0.05)
            else:
                return refused, outcome
        raise AssertionError("no new writer")

    refused, outcome = with_recorder(url, broker_url, body)
    assert refused
    assert isinstance(outcome, Queued)
    assert count(engine, events) == 1


def test_readiness_learns_the_broker_state_from_the_writer(records: Engine) -> None:
    url = str(records.url)
    nowhere = f"redis://127.0.0.1:{free_port()}/0"

    async def body(recorder: Recorder) -> str:
        for _ in range(200):
            if recorder.broker_state != "unknown":
                break
            await asyncio.sleep(0.05)
        return recorder.broker_state

    assert with_recorder(url, nowhere, body) == "down"
