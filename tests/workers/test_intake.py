"""A job from the broker is claimed once and taken as stored, not as the message says."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

from rollhook.events import NewEvent
from rollhook.ids import new_id
from rollhook.jobs import Job, Trigger
from rollhook.records import deployments, events
from workers.context import WorkerContext
from workers.intake import take_job


def test_a_job_is_taken_once_and_as_stored(records: Engine, tmp_path: Path) -> None:
    ctx = WorkerContext(
        records=records, data_dir=tmp_path, targets={}, docker_host=None,
        lease_seconds=30, send=lambda *_: None,
    )  # fmt: skip
    now = datetime.now(UTC)
    job = Job(id=new_id("j"), target="llm", trigger=Trigger(source="github", event_id="e1"),
              received_at=now)  # fmt: skip
    with records.begin() as conn:
        events.store_batch(conn, [NewEvent("e1", "github", "k1", "push", {}, now, jobs=[job])])

    # Somebody who can write to the broker rewrites the message on its way.
    tampered = job.model_copy(update={"target": "other", "action": "rollback", "manual": True})
    assert take_job(ctx, tampered.to_json()) == "llm"
    assert take_job(ctx, job.to_json()) is None  # the second delivery is a no-op

    with records.begin() as conn:
        [record] = deployments.history(conn, None, 10)
    assert (record.target, record.kind, record.requested["manual"]) == (
        "llm", "deploy", False,
    )  # fmt: skip
