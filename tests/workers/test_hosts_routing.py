"""Several hosts: each target's work goes to its host's queue, and only a worker of that
host runs it (README "Several hosts")."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine

from cli.processes import _argv
from rollhook import broker
from rollhook.events import NewEvent
from rollhook.ids import new_id
from rollhook.jobs import Job, Trigger
from rollhook.records import deployments, events
from rollhook.records import targets as target_records
from rollhook.settings import Settings
from rollhook.targets import Target, parse_targets
from workers import housekeeping, reconcile
from workers.context import WorkerContext
from workers.dispatcher import kick_targets
from workers.intake import take_job
from workers.runner import run_target

TARGET = {
    "repo": "file:///srv/git/infra",
    "project": "app",
    "service": "app",
}


def targets_on(**hosts: str) -> dict[str, Target]:
    body = {name: {**TARGET, "project": name, "host": host} for name, host in hosts.items()}
    targets, problems = parse_targets(yaml.safe_dump({"targets": body}))
    assert problems == []
    return targets


class Published:
    """A stand-in Celery app that keeps what was sent, and where to."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[Any], str | None]] = []

    def send_task(self, name: str, args: list[Any], queue: str | None = None, **_: Any) -> None:
        self.sent.append((name, args, queue))


def test_the_local_host_keeps_the_queue_names_of_one_host_installs() -> None:
    assert broker.worker_queues("local") == ["deploy", "notify", "housekeeping", "backup"]
    assert broker.worker_queues("b") == ["deploy.b", "notify", "housekeeping", "backup.b"]
    worker = _argv("worker", Settings(), "127.0.0.1", 8000, "edge-2")
    assert worker[worker.index("-Q") + 1] == "deploy.edge-2,notify,housekeeping,backup.edge-2"


@pytest.mark.parametrize("name", ["B", "a_b", "-a", "a" * 64, "a.b", ""])
def test_a_host_name_must_be_usable_in_a_queue_name(name: str) -> None:
    body = {"targets": {"llm": {**TARGET, "host": name}}}
    _, problems = parse_targets(yaml.safe_dump(body))
    assert len(problems) == 1 and "host" in problems[0]


def test_a_target_without_host_is_on_the_local_host() -> None:
    _, problems = parse_targets(yaml.safe_dump({"targets": {"llm": TARGET}}))
    assert problems == []
    assert parse_targets(yaml.safe_dump({"targets": {"llm": TARGET}}))[0]["llm"].host == "local"


def test_host_tasks_go_to_their_targets_host_and_the_others_by_their_route() -> None:
    targets = targets_on(web="a", db="b", old="local")
    app = Published()
    send = broker.sender(app, lambda name: targets[name].host)  # type: ignore[arg-type]
    send(broker.RUN_TARGET, ["db"])
    send(broker.RUN_TARGET, ["old"])
    send(broker.OFFSITE_SNAPSHOT, ["web", "schedule"])
    send(broker.OFFSITE_SHIP, ["db", "b1"])
    send(broker.DRILL, ["web"])
    send(broker.NOTIFY, ["n1"])
    send(broker.PROCESS_JOBS, [["{}"]])
    assert [queue for *_, queue in app.sent] == [
        "deploy.b", "deploy", "backup.a", "backup.b", "backup.a", None, None,
    ]  # fmt: skip


def _context(
    records: Engine, tmp_path: Path, host: str, targets: dict[str, Target]
) -> tuple[WorkerContext, Published]:
    app = Published()
    send = broker.sender(app, lambda name: targets[name].host)  # type: ignore[arg-type]
    ctx = WorkerContext(
        records=records, data_dir=tmp_path, targets=targets, docker_host=None,
        lease_seconds=30, send=send, host=host,
    )  # fmt: skip
    with records.begin() as conn:
        target_records.ensure(conn, list(targets))
    return ctx, app


def _queue(ctx: WorkerContext, target: str) -> str:
    now = datetime.now(UTC)
    event_id = new_id("e")
    job = Job(id=new_id("j"), target=target, trigger=Trigger(source="api", event_id=event_id),
              received_at=now)  # fmt: skip
    with ctx.records.begin() as conn:
        events.store_batch(
            conn, [NewEvent(event_id, "api", new_id("k"), "push", {}, now, jobs=[job])]
        )
    assert take_job(ctx, job.to_json()) == target  # any worker records it
    return job.id


def test_a_worker_never_runs_another_hosts_target(records: Engine, tmp_path: Path) -> None:
    ctx, _ = _context(records, tmp_path, "a", targets_on(db="b"))
    _queue(ctx, "db")
    run_target(ctx, "db")  # a message that reached host a's worker somehow
    with records.begin() as conn:
        [record] = deployments.history(conn, "db", 10)
        state = target_records.get(conn, "db")
    # Still queued for host b, and no lease was taken.
    assert record.status == "queued"
    assert state is not None and state.lease_owner is None


def test_recovery_sends_each_target_to_its_own_host(records: Engine, tmp_path: Path) -> None:
    # The worker that runs beat's kick is on host a; db's worker (host b) died.
    ctx, app = _context(records, tmp_path, "a", targets_on(web="a", db="b"))
    _queue(ctx, "web")
    _queue(ctx, "db")
    assert sorted(kick_targets(ctx)) == ["db", "web"]
    kicks = sorted((args[0], queue) for task, args, queue in app.sent if task == broker.RUN_TARGET)
    assert kicks == [("db", "deploy.b"), ("web", "deploy.a")]


def test_housekeeping_sends_each_other_hosts_target_to_that_host(
    records: Engine, tmp_path: Path
) -> None:
    ctx, app = _context(records, tmp_path, "a", targets_on(db="b", cache="c"))
    housekeeping.run(ctx)  # host a has no target of its own: nothing tidied here
    sent = sorted((task, args[0], queue) for task, args, queue in app.sent)
    assert sent == [
        (broker.TIDY_TARGET, "cache", "deploy.c"),
        (broker.TIDY_TARGET, "db", "deploy.b"),
    ]


def test_a_tick_asks_each_other_host_to_compare_its_targets(
    records: Engine, tmp_path: Path
) -> None:
    ctx, app = _context(records, tmp_path, "a", targets_on(db="b"))
    reconcile.poll(ctx, list(ctx.targets.values()), reconcile.TickReport(), raise_changes=False)
    assert [(task, args, queue) for task, args, queue in app.sent] == [
        (broker.INSPECT_TARGET, ["db"], "deploy.b")
    ]
