"""Beat's tick for off-host backups, driven by a clock of the test's own: when snapshots
and drills are published, and when an overdue snapshot is told (once)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from rollhook.broker import DRILL, NOTIFY, OFFSITE_SNAPSHOT
from rollhook.records import notifications, remote_backups
from rollhook.targets import Target, parse_targets
from workers.context import WorkerContext
from workers.notify import Notifiers, deliver
from workers.notify.console import ConsoleNotifier
from workers.offsite.ticker import tick

MONDAY = datetime(2026, 5, 4, 1, 0, tzinfo=UTC)


def target(backup: str) -> Target:
    text = f"""
targets:
  llm:
    repo: https://git.example.com/acme/infra.git
    project: llm
    service: anything-llm
    backup: {backup}
"""
    targets, problems = parse_targets(text)
    assert problems == []
    return targets["llm"]


class Ticker:
    def __init__(self, records: Engine, tmp_path: Path, backup: str) -> None:
        self.sent: list[tuple[str, list[Any]]] = []
        self.ctx = WorkerContext(
            records=records,
            data_dir=tmp_path,
            targets={"llm": target(backup)},
            docker_host=None,
            lease_seconds=30,
            send=lambda task, args: self.sent.append((task, args)),
            notifiers=Notifiers.of(ConsoleNotifier()),
        )

    def at(self, moment: datetime) -> list[str]:
        """The tasks one tick at ``moment`` published (notifications apart)."""
        self.sent.clear()
        tick(self.ctx, moment)
        return [task for task, _ in self.sent if task != NOTIFY]

    def state(self) -> remote_backups.RemoteBackupState:
        with self.ctx.records.begin() as conn:
            state = remote_backups.get(conn, "llm")
        assert state is not None
        return state

    def notices(self) -> list[notifications.Notification]:
        with self.ctx.records.begin() as conn:
            return notifications.of_target(conn, "llm", "backup")


@pytest.fixture
def ticker(records: Engine, tmp_path: Path) -> Ticker:
    return Ticker(records, tmp_path, "{remote: {repository: /r, schedule: 'daily 03:00'}}")


def test_a_snapshot_is_published_once_due_and_not_while_one_runs(ticker: Ticker) -> None:
    assert ticker.at(MONDAY) == []
    state = ticker.state()
    assert state.schedule == "daily 03:00"
    assert state.next_due_at == MONDAY.replace(hour=3)
    assert ticker.at(MONDAY.replace(hour=2, minute=59)) == []
    due = MONDAY.replace(hour=3, minute=0, second=30)
    assert ticker.at(due) == [OFFSITE_SNAPSHOT]
    assert ticker.sent == [(OFFSITE_SNAPSHOT, ["llm", "schedule"])]
    # Not taken yet (the queue is busy): published again, the task's claim tells them apart.
    assert ticker.at(due + timedelta(minutes=1)) == [OFFSITE_SNAPSHOT]
    with ticker.ctx.records.begin() as conn:
        assert remote_backups.claim(conn, "llm", due, timedelta(hours=7))
        assert not remote_backups.claim(conn, "llm", due, timedelta(hours=7))
    assert ticker.at(due + timedelta(minutes=2)) == []
    # A claim a dead worker left is old after seven hours: due again.
    assert ticker.at(due + timedelta(hours=7, minutes=1)) == [OFFSITE_SNAPSHOT]


def test_the_schedule_follows_the_targets_file(
    ticker: Ticker, records: Engine, tmp_path: Path
) -> None:
    ticker.at(MONDAY)
    changed = Ticker(records, tmp_path, "{remote: {repository: /r, schedule: 'weekly Wed 12:00'}}")
    assert changed.at(MONDAY + timedelta(hours=5)) == []
    state = changed.state()
    assert state.schedule == "weekly Wed 12:00"
    assert state.next_due_at == datetime(2026, 5, 6, 12, 0, tzinfo=UTC)
    unscheduled = Ticker(records, tmp_path, "{remote: {repository: /r}}")
    assert unscheduled.at(datetime(2026, 5, 6, 12, 1, tzinfo=UTC)) == []
    assert unscheduled.state().schedule is None and unscheduled.state().next_due_at is None


def test_an_overdue_snapshot_is_told_once_until_one_succeeds(ticker: Ticker) -> None:
    ticker.at(MONDAY)
    with ticker.ctx.records.begin() as conn:  # the schedule's own snapshots keep failing
        remote_backups.failed(conn, "llm", at=MONDAY, error="wrong password")
    assert ticker.notices() == []
    ticker.at(MONDAY + timedelta(days=2))  # exactly twice the period: not yet
    assert ticker.notices() == []
    ticker.at(MONDAY + timedelta(days=2, minutes=1))
    [told] = ticker.notices()
    assert told.channel == "console" and told.external["spec"]["event"] == "stale"
    assert "no good snapshot for over 2 days" in told.external["spec"]["detail"]
    assert [NOTIFY, [told.id]] in [[task, args] for task, args in ticker.sent]
    result = deliver(ticker.ctx.records, ticker.ctx.notifiers, told.id)
    assert result.status == "delivered", result
    ticker.at(MONDAY + timedelta(days=2, minutes=2))
    assert len(ticker.notices()) == 1
    with ticker.ctx.records.begin() as conn:
        remote_backups.succeeded(
            conn, "llm", at=MONDAY + timedelta(days=3), snapshot_id="ab" * 32,
            duration=1.0, size=10, added=10,
        )  # fmt: skip
    ticker.at(MONDAY + timedelta(days=4))
    assert len(ticker.notices()) == 1  # the last success is a day old
    ticker.at(MONDAY + timedelta(days=5, minutes=1))
    assert len(ticker.notices()) == 2  # two days and a minute since it: overdue again


def test_a_drill_is_published_once_when_due(records: Engine, tmp_path: Path) -> None:
    ticker = Ticker(records, tmp_path, "{remote: {repository: /r}, drill: 'weekly Sun 04:00'}")
    assert ticker.at(MONDAY) == []
    assert ticker.state().drill_due_at == datetime(2026, 5, 10, 4, 0, tzinfo=UTC)
    sunday = datetime(2026, 5, 10, 4, 0, 30, tzinfo=UTC)
    assert ticker.at(sunday) == [DRILL]
    assert ticker.at(sunday + timedelta(minutes=1)) == []
    assert ticker.state().drill_due_at == datetime(2026, 5, 17, 4, 0, tzinfo=UTC)
    # Without a snapshot schedule nothing is ever overdue.
    assert ticker.notices() == []
