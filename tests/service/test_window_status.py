"""A change held by a closed deploy window is ``pending`` in the target's sync status, with
the reason (the window and when it opens): the sync view read at a given clock, then
``GET /targets/{name}`` and ``rollhook status`` on a target whose window never opens."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from cli.api import Client, _dispatch
from cli.main import parser
from rollhook.ids import new_id
from rollhook.jobs import Job, Trigger
from rollhook.records import deployments
from rollhook.records import targets as target_records
from rollhook.records.targets import TargetState
from rollhook.targets import parse_targets
from service.syncview import sync_view
from tests.service.support import API_TOKEN, TARGETS_YAML, Served

WINDOWED = """
targets:
  llm:
    repo: https://github.com/acme/llm.git
    project: llm
    service: web
    windows: [{deny: "Mon-Fri 08:00-18:00", tz: Europe/Berlin}]
"""
WEDNESDAY_NOON = datetime(2026, 12, 2, 11, 0, tzinfo=UTC)  # 12:00 in Berlin: closed
WEDNESDAY_EVENING = datetime(2026, 12, 2, 17, 0, tzinfo=UTC)  # 18:00 in Berlin: open


def queue(engine: Engine, target: str, *, manual: bool = False) -> str:
    job = Job(
        id=new_id("j"),
        target=target,
        trigger=Trigger(source="poll" if not manual else "api", event_id=new_id("e")),
        received_at=datetime.now(UTC),
        manual=manual,
    )
    with engine.begin() as conn:
        return deployments.create_queued(conn, job)


def test_a_change_held_by_the_window_is_pending_with_the_reason(records: Engine) -> None:
    found, problems = parse_targets(WINDOWED)
    assert problems == []
    target = found["llm"]
    with records.begin() as conn:
        target_records.ensure(conn, [target.name])
    held = queue(records, target.name)
    with records.connect() as conn:
        state = target_records.get(conn, target.name) or TargetState(target.name)
        closed = sync_view(conn, target, state, now=WEDNESDAY_NOON)
        opened = sync_view(conn, target, state, now=WEDNESDAY_EVENING)
    assert closed["status"] == "pending"
    assert closed["pending"]["reason"] == (
        "deploy window closed (deny Mon-Fri 08:00-18:00 Europe/Berlin); "
        "opens Wed 2026-12-02 18:00 CET"
    )
    assert [d["deployment"] for d in closed["pending"]["deployments"]] == [held]
    assert opened["status"] == "progressing" and opened["pending"] is None

    queue(records, target.name, manual=True)  # a person's request passes the window
    with records.connect() as conn:
        assert sync_view(conn, target, state, now=WEDNESDAY_NOON)["status"] == "progressing"


def test_get_target_and_rollhook_status_say_pending_and_why(
    serve: Callable[..., Served],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    config = tmp_path / "rollhook.yml"
    config.write_text(
        TARGETS_YAML
        + """
  closed:
    repo: https://github.com/acme/closed.git
    project: closed
    service: web
    windows: [{deny: "00:00-24:00"}]
"""
    )
    app = serve(config=config)
    held = queue(app.records, "closed")
    sync = app.api("GET", "/targets/closed").json()["sync"]
    assert sync["status"] == "pending"
    reason = "deploy window closed (deny 00:00-24:00 UTC); it does not open within a week"
    assert sync["pending"]["reason"] == reason
    assert [d["deployment"] for d in sync["pending"]["deployments"]] == [held]

    client = Client(app.url, API_TOKEN)
    request.addfinalizer(client.http.close)
    assert _dispatch(client, parser().parse_args(["status"])) == 0
    [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith("closed ")]
    assert f"pending ({reason})" in line
