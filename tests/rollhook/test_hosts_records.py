"""Several hosts: heartbeats on the records database's clock, a host down after 30 s
without one, and each change of state told once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, update

from rollhook.records import hosts
from rollhook.records.schema import db_now, host_workers
from rollhook.records.schema import hosts as hosts_table

BACKENDS = pytest.mark.parametrize("records", ["sqlite", "postgres"], indirect=True)


def _beat(records: Engine, worker: str, host: str) -> None:
    with records.begin() as conn:
        hosts.beat(conn, worker=worker, host=host, rollhook_version="0.1.0", engine_version="27.3")


def _silence(records: Engine, worker: str, seconds: float) -> None:
    """The worker's last beat was ``seconds`` ago (it died then)."""
    with records.begin() as conn:
        now = db_now(conn)
        conn.execute(
            update(host_workers)
            .where(host_workers.c.worker == worker)
            .values(last_beat=now - timedelta(seconds=seconds))
        )


@BACKENDS
def test_a_host_is_down_30s_after_its_last_worker_beat(records: Engine) -> None:
    _beat(records, "m1:10", "a")
    _beat(records, "m1:11", "a")
    _beat(records, "m2:10", "b")
    _silence(records, "m1:10", 31)  # one of a's two workers died: a is still up
    _silence(records, "m2:10", 29)
    with records.begin() as conn:
        found = {view.name: view for view in hosts.views(conn, {"a", "b"})}
        assert hosts.down(conn, {"a", "b"}) == set()
    assert [w.worker for w in found["a"].workers] == ["m1:11"]
    assert found["a"].as_dict()["versions"] == ["rollhook 0.1.0, engine 27.3"]
    _silence(records, "m2:10", 31)
    with records.begin() as conn:
        assert hosts.down(conn, {"a", "b"}) == {"b"}
        [b] = [view for view in hosts.views(conn, set()) if view.name == "b"]
    assert b.state == "down" and b.workers == [] and b.last_seen is not None


@BACKENDS
def test_the_beat_is_on_the_databases_clock(records: Engine) -> None:
    with records.begin() as conn:
        before = db_now(conn)
        at = hosts.beat(conn, worker="m:1", host="a", rollhook_version=None, engine_version=None)
        [view] = hosts.views(conn, set())
    assert view.last_seen == at and before <= at <= before + timedelta(seconds=5)


def test_a_change_of_state_is_told_once(records: Engine) -> None:
    _beat(records, "m2:10", "b")
    with records.begin() as conn:
        assert hosts.changes(conn, {"b"}) == []  # first seen up: nothing to tell
    _silence(records, "m2:10", 31)
    with records.begin() as conn:
        assert hosts.changes(conn, {"b"}) == [("b", "down")]
    with records.begin() as conn:
        assert hosts.changes(conn, {"b"}) == []  # told already
    _beat(records, "m2:20", "b")  # a worker of b is back
    with records.begin() as conn:
        assert hosts.changes(conn, {"b"}) == [("b", "up")]
        assert hosts.changes(conn, {"b"}) == []


def test_a_host_never_seen_waits_and_is_told_down_after_the_grace_not_at_a_cold_start(
    records: Engine,
) -> None:
    with records.begin() as conn:
        # A one-host install whose worker has not started yet: nothing waits, nothing told.
        assert hosts.down(conn, {"local"}) == set()
        assert hosts.changes(conn, {"local"}) == []
        # A host the targets name whose worker never came: its targets wait; at first it is
        # told nothing (at a cold start the workers come up a little after beat) ...
        assert hosts.down(conn, {"c", "d"}) == {"c", "d"}
        assert hosts.changes(conn, {"c", "d"}) == []
    _age_told(records, 29)
    with records.begin() as conn:
        assert hosts.changes(conn, {"c", "d"}) == []
    _beat(records, "m4:10", "d")  # d's worker came up during the grace: no news
    _age_told(records, 31)
    with records.begin() as conn:
        # ... but still unseen after DOWN_AFTER, it is told down, once.
        assert hosts.changes(conn, {"c", "d"}) == [("c", "down")]
        assert hosts.changes(conn, {"c", "d"}) == []
    _beat(records, "m3:10", "c")
    with records.begin() as conn:
        assert hosts.changes(conn, {"c", "d"}) == [("c", "up")]  # told back
        assert hosts.changes(conn, {"local"}) == []


def _age_told(records: Engine, seconds: float) -> None:
    """Each host's state as last told was recorded ``seconds`` ago."""
    with records.begin() as conn:
        conn.execute(
            update(hosts_table).values(changed_at=db_now(conn) - timedelta(seconds=seconds))
        )
