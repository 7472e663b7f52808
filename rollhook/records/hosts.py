"""Several hosts: the workers' heartbeats and each host's state.

Every time here is the records database's clock (:func:`db_now`), never a worker's: two
hosts' clocks may disagree, the database is one. A host is ``up`` while one of its
workers beat within :data:`DOWN_AFTER` seconds, else ``down``; ``hosts`` keeps the state
as last told, so that beat tells a change once (:func:`changes`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from rollhook.records.schema import db_now, host_workers, hosts
from rollhook.settings import LOCAL_HOST

DOWN_AFTER = 30.0  # seconds without a heartbeat from any of its workers
FORGET_AFTER = timedelta(days=7)  # a worker row not seen for this long is deleted

State = Literal["up", "down"]


@dataclass(frozen=True)
class WorkerBeat:
    worker: str
    host: str
    rollhook_version: str | None
    engine_version: str | None
    started_at: datetime
    last_beat: datetime


@dataclass(frozen=True)
class HostView:
    name: str
    state: State
    last_seen: datetime | None
    workers: list[WorkerBeat] = field(default_factory=list)  # the live ones

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "last_seen": self.last_seen,
            "workers": [
                {"id": w.worker, "last_beat": w.last_beat, "started_at": w.started_at}
                for w in self.workers
            ],
            "versions": sorted(
                {
                    f"rollhook {w.rollhook_version or '?'}, engine {w.engine_version or '?'}"
                    for w in self.workers
                }
            ),
        }


def beat(
    conn: Connection,
    *,
    worker: str,
    host: str,
    rollhook_version: str | None,
    engine_version: str | None,
) -> datetime:
    """Record a worker's heartbeat now (the database's now); returns it."""
    now = db_now(conn)
    values = {
        "host": host,
        "rollhook_version": rollhook_version,
        "engine_version": engine_version,
        "last_beat": now,
    }
    done = conn.execute(update(host_workers).where(host_workers.c.worker == worker).values(values))
    if done.rowcount == 0:  # the worker id is one process's: nobody else inserts it
        conn.execute(insert(host_workers).values(worker=worker, started_at=now, **values))
    return now


def gone(conn: Connection, worker: str) -> None:
    """A worker stopping on purpose: its heartbeat ends now, not 30 s later."""
    conn.execute(delete(host_workers).where(host_workers.c.worker == worker))


def views(conn: Connection, extra: set[str] | frozenset[str] = frozenset()) -> list[HostView]:
    """Every host seen (and ``extra``: the hosts the targets name), by name."""
    now = db_now(conn)
    since = now - timedelta(seconds=DOWN_AFTER)
    rows = [WorkerBeat(**row._mapping) for row in conn.execute(select(host_workers))]
    names = sorted({row.host for row in rows} | set(extra))
    found = []
    for name in names:
        mine = [row for row in rows if row.host == name]
        live = sorted((row for row in mine if row.last_beat >= since), key=lambda w: w.worker)
        last = max((row.last_beat for row in mine), default=None)
        found.append(HostView(name, "up" if live else "down", last, live))
    return found


def waits(view: HostView) -> bool:
    """Whether work for this host waits for it: it is down, and it is not the local host
    of a one-host install whose worker has simply not started yet (never seen)."""
    return view.state == "down" and (view.last_seen is not None or view.name != LOCAL_HOST)


def down(conn: Connection, names: set[str]) -> set[str]:
    """Which of these hosts are down now (their targets' work waits for them)."""
    return {view.name for view in views(conn, names) if view.name in names and waits(view)}


def changes(conn: Connection, names: set[str]) -> list[tuple[str, State]]:
    """The hosts whose state changed since it was last told: (host, new state), recorded.

    A host seen for the first time is recorded as it is, told only if already down. One
    that the targets name but whose workers never beat is recorded ``unseen`` at the first
    look, and told down once it stays unseen for :data:`DOWN_AFTER` (at a cold start the
    workers come up a little after beat: that is no news). The one-host install's ``local``
    never seen is not news at all (:func:`waits`). Updates are conditional on the old
    state, so two ticks at once tell a change once.
    """
    now = db_now(conn)
    told = {row.name: (row.state, row.changed_at) for row in conn.execute(select(hosts))}
    result: list[tuple[str, State]] = []
    for view in views(conn, names):
        before, since = told.get(view.name, (None, now))
        if view.last_seen is None:
            if not waits(view):
                continue
            if before is None:
                _first_look(conn, view.name, "unseen", now)
            elif (
                before == "unseen"
                and (now - since).total_seconds() >= DOWN_AFTER
                and _move(conn, view.name, before, "down", now)
            ):
                result.append((view.name, "down"))
            continue
        if before == view.state:
            continue
        if before is None:
            # Another tick may have been first; a first sight is news only when down.
            if _first_look(conn, view.name, view.state, now) and view.state == "down":
                result.append((view.name, view.state))
            continue
        # unseen -> up is a worker coming up at a cold start: recorded, not told.
        if _move(conn, view.name, before, view.state, now) and (before, view.state) != (
            "unseen",
            "up",
        ):
            result.append((view.name, view.state))
    return result


def _first_look(conn: Connection, name: str, state: str, now: datetime) -> bool:
    """Record a host's first state; False when another tick recorded it first."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    first = conn.execute(
        dialect.insert(hosts)
        .values(name=name, state=state, changed_at=now)
        .on_conflict_do_nothing()
    )
    return bool(first.rowcount == 1)


def _move(conn: Connection, name: str, before: str, state: str, now: datetime) -> bool:
    """Record a change of state, only if it is still ``before`` (one tick tells it)."""
    moved = conn.execute(
        update(hosts)
        .where(hosts.c.name == name, hosts.c.state == before)
        .values(state=state, changed_at=now)
    )
    return bool(moved.rowcount == 1)


def forget_old(conn: Connection) -> int:
    """Delete the rows of workers not seen for a week (housekeeping)."""
    since = db_now(conn) - FORGET_AFTER
    return int(conn.execute(delete(host_workers).where(host_workers.c.last_beat < since)).rowcount)
