"""``rollhook up`` in a terminal: quiet while idle, and Ctrl-C ends every process in 10 s."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.cli.upstack import Up, still_running

IDLE_SECONDS = 120

CONFIG = yaml.safe_dump(
    {
        "targets": {
            "app": {
                "repo": "https://git.example.test/acme/infra.git",
                "path": "app",
                "project": "app",
                "service": "app",
                "health": {"url": "http://127.0.0.1:9/api/ping"},
            }
        }
    }
)


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    running = Up(tmp_path, CONFIG)
    try:
        yield running
    finally:
        running.kill()


def _periodic_runs(broker: Path) -> int:
    """Messages beat sent to the embedded broker for the outbox dispatch (consumed ones
    stay until housekeeping purges them)."""
    with sqlite3.connect(broker) as conn:
        rows = conn.execute("SELECT payload FROM kombu_message").fetchall()
    return sum("rollhook.dispatch_outbox" in row[0] for row in rows)


@pytest.mark.slow
def test_an_idle_rollhook_writes_at_most_a_line_a_minute_and_stops_on_ctrl_c(up: Up) -> None:
    up.start()
    up.wait_ready()
    time.sleep(5)  # the start-up banners and the first runs of every periodic task
    runs_before = _periodic_runs(up.data_dir / "broker.sqlite")
    window_start = time.monotonic()
    time.sleep(IDLE_SECONDS)
    idle = [line for at, line in up.lines if at >= window_start]
    # Beat kept working (the outbox every 2 s), and said nothing about it.
    assert _periodic_runs(up.data_dir / "broker.sqlite") - runs_before >= IDLE_SECONDS / 4
    assert len(idle) <= IDLE_SECONDS // 60, "\n".join(idle)
    # Root is required on the Docker host; Celery's warning about it is noise there.
    assert "superuser" not in up.text

    processes = up.descendants()
    assert len(processes) >= 6, processes  # web + its writer, worker + pool, beat
    took = up.interrupt()
    assert took < 10, up.text
    assert still_running(processes) == [], up.text
    assert up.text.splitlines()[-1] == "rollhook up: stopped"
    assert up.proc is not None and up.proc.returncode == 0
