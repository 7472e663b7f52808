"""A real Redis between web and workers: jobs reach it, and a broker outage costs no event."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from rollhook.broker import HOUSEKEEPING_QUEUE
from tests.harness.ports import free_port
from tests.harness.redis import RedisServer
from tests.service.support import Served, fresh_push, wait_for


def queued_job_ids(url: str) -> set[str]:
    """Job ids in the queue every worker consumes (housekeeping: recording jobs needs no
    host), read from kombu's messages as a worker would get them."""
    ids = set()
    with redis.Redis.from_url(url) as client:
        for message in client.lrange(HOUSEKEEPING_QUEUE, 0, -1):
            body = json.loads(base64.b64decode(json.loads(message)["body"]))
            (batch,) = body[0]  # rollhook.process_jobs takes one argument: a list of jobs
            ids.update(json.loads(job)["id"] for job in batch)
    return ids


def dispatched(app: Served, event_id: str) -> bool:
    return all(job["dispatched_at"] is not None for job in app.jobs_of(event_id))


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, to stop and start without disturbing anyone else's."""
    server = RedisServer(tmp_path / "redis", tmp_path)
    server.start()
    yield server
    server.stop()


def test_jobs_reach_the_broker(serve: Callable[..., Served], broker_url: str) -> None:
    app = serve()
    event_id = app.github(fresh_push()).json()["id"]
    wait_for(lambda: dispatched(app, event_id), what="dispatch")
    [job] = app.jobs_of(event_id)
    assert job["id"] in queued_job_ids(broker_url)
    assert app.client.get("/readyz").json() == {"status": "ready", "records": "ok", "broker": "up"}


def test_broker_down_still_answers_202_and_keeps_the_job(serve: Callable[..., Served]) -> None:
    app = serve(redis_url=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    response = app.github(fresh_push())
    assert response.status_code == 202
    event_id = response.json()["id"]
    wait_for(lambda: app.jobs_of(event_id)[0]["dispatch_attempts"] >= 1, what="a dispatch attempt")
    [job] = app.jobs_of(event_id)
    assert job["dispatched_at"] is None  # still in the outbox, for beat or for later
    ready = app.client.get("/readyz")
    assert ready.status_code == 200  # the outbox absorbs the outage: not gated on
    assert ready.json()["broker"] == "down"


def test_events_during_an_outage_are_sent_when_the_broker_returns(
    serve: Callable[..., Served], own_redis: RedisServer
) -> None:
    app = serve(redis_url=own_redis.url)
    first = app.github(fresh_push()).json()["id"]
    wait_for(lambda: dispatched(app, first), what="dispatch before the outage")
    with own_redis.stopped():
        during = [app.github(fresh_push()) for _ in range(3)]
        assert [r.status_code for r in during] == [202, 202, 202]
        ids = [r.json()["id"] for r in during]
        wait_for(lambda: app.client.get("/readyz").json()["broker"] == "down", what="the outage")
        assert not any(dispatched(app, i) for i in ids)
    # Redis is back (empty): nobody sends anything new, yet the waiting jobs go out.
    wait_for(lambda: all(dispatched(app, i) for i in ids), timeout=20, what="recovery")
    expected = {job["id"] for i in ids for job in app.jobs_of(i)}
    assert expected <= queued_job_ids(own_redis.url)
