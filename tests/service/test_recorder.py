"""The web side of group commit, with the real writer process behind it.

Concurrent requests share commits, each learns its own outcome, a slow database costs a
503 rather than a hung request, and a writer that dies is replaced.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine, func, select

from rollhook.records import targets as target_records
from rollhook.records.schema import events, jobs
from service.recorder import Queued, Recorder, StoreFailed
from service.writer import WriterSettings, shared_address
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


def test_web_processes_share_one_writer(records: Engine, broker_url: str) -> None:
    """The second web process finds the first one's writer: one process commits for both,
    and each request learns its own event's outcome."""
    engine, url = records, str(records.url)

    async def main() -> tuple[Any, ...]:
        first, second = (Recorder(WriterSettings(url, broker_url)) for _ in range(2))
        await first.start()
        await second.start()
        try:
            items = [new_event("a") for _ in range(60)]
            recorders = [first, second] * 30
            outcomes = await asyncio.gather(
                *(r.record(item) for r, item in zip(recorders, items, strict=True))
            )
            return first._process, second._process, items, outcomes
        finally:
            await second.stop()
            await first.stop()

    first_writer, second_writer, items, outcomes = asyncio.run(main())
    assert first_writer is not None and second_writer is None  # found, not started
    assert outcomes == [Queued(item.id, tuple(item.jobs)) for item in items]
    assert count(engine, events) == 60


def test_when_the_shared_writer_stops_the_others_start_their_own(
    records: Engine, broker_url: str
) -> None:
    engine, url = records, str(records.url)

    async def main() -> tuple[Any, Any, bool]:
        first, second = (Recorder(WriterSettings(url, broker_url)) for _ in range(2))
        await first.start()
        await second.start()
        try:
            assert isinstance(await second.record(new_event("a")), Queued)
            await first.stop()  # its writer stores what it has and ends
            refused = False
            for _ in range(200):
                try:
                    outcome = await second.record(new_event("a"))
                except StoreFailed:  # 503 while there is no writer, never a false 202
                    refused = True
                    await asyncio.sleep(0.05)
                else:
                    return outcome, second._process, refused
            raise AssertionError("no new writer")
        finally:
            await second.stop()

    outcome, own_writer, _ = asyncio.run(main())
    assert isinstance(outcome, Queued)
    assert own_writer is not None
    # 503s only while no writer answered (often none: it starts one at once); those
    # events were never handed over, so exactly the two that were answered 202 are stored.
    assert count(engine, events) == 2


def test_a_writer_refuses_a_web_process_with_other_settings(
    records: Engine, broker_url: str
) -> None:
    """Same records file, another broker: its jobs must go to its own broker."""
    url = str(records.url)
    elsewhere = broker_url.rsplit("/", 1)[0] + "/5"

    async def main() -> Any:
        first = Recorder(WriterSettings(url, broker_url))
        other = Recorder(WriterSettings(url, elsewhere))
        await first.start()
        await other.start()
        try:
            assert isinstance(await other.record(new_event("a")), Queued)
            return other._process
        finally:
            await other.stop()
            await first.stop()

    assert asyncio.run(main()) is not None  # it started its own


def test_only_this_user_reaches_the_shared_writer(records: Engine, broker_url: str) -> None:
    """The frames are pickles: the socket is a 0600 file beside the database (not an
    abstract socket, which any process on the network namespace could reach), and the
    writer checks its peer's user before reading a byte. The file goes with the writer."""
    url = str(records.url)
    address = shared_address(url)
    assert address is not None

    async def body(recorder: Recorder) -> tuple[int, subprocess.CompletedProcess[str]]:
        mode = os.stat(address).st_mode & 0o777
        attempt = await asyncio.to_thread(
            subprocess.run,
            ["/usr/bin/python3", "-c",
             "import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])",
             address],
            user="nobody", capture_output=True, text=True, check=False, timeout=30,
        )  # fmt: skip
        return mode, attempt

    mode, attempt = with_recorder(url, broker_url, body)
    assert mode == 0o600
    assert attempt.returncode != 0 and "PermissionError" in attempt.stderr, attempt.stderr
    assert not os.path.exists(address)  # removed by the writer that made it
