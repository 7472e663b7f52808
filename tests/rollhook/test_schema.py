"""The records' schema: the typed records follow it, and migrations keep old rows valid."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from rollhook.records import notifications, schema
from rollhook.records.db import make_engine, migrate
from rollhook.records.deployments import DeploymentRecord
from rollhook.records.sync import SyncState
from rollhook.records.targets import TargetState


def test_typed_records_follow_the_tables_columns() -> None:
    # The API answers a record's fields in this order; a field out of place changes it.
    assert [f.name for f in fields(DeploymentRecord)] == [c.name for c in schema.deployments.c]
    assert [f.name for f in fields(TargetState)] == [c.name for c in schema.targets.c]
    assert [f.name for f in fields(SyncState)] == [c.name for c in schema.sync.c]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_notifications_made_before_subjects_existed_stay_valid(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'records.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_server").create_database()
    engine = make_engine(url)
    migrate(engine, tmp_path, "0002")  # the revision before notification subjects
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO notifications (id, deployment_id, target, channel, status, attempts,"
                " external, history, created_at) VALUES ('n1', 'd1', 'llm', 'slack', 'delivered',"
                ' 1, \'{"slack": {"ts": "1.2"}}\', \'[]\', :now)'
            ),
            {"now": datetime(2026, 11, 30, 12, 0)},
        )
    migrate(engine, tmp_path)
    with engine.begin() as conn:
        about = notifications.About("deployment", "deployment", "d1")
        [(channel, old)] = notifications.of_subject(conn, about).items()
        assert (channel, old.subject_kind, old.deployment_id, old.target) == (
            "slack", "deployment", "d1", "llm",
        )  # fmt: skip
        assert old.external == {"slack": {"ts": "1.2"}} and old.status == "delivered"
        # A notice about a host has neither a deployment nor a target.
        host_down = notifications.About("host_down", "host", "box-2")
        notifications.create(conn, host_down, "slack", status="pending", external={}, history=[])
        assert list(notifications.of_subject(conn, host_down)) == ["slack"]
    engine.dispose()
