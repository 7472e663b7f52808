"""Scheduled snapshots of a deployed target, on a local repository and over SFTP: the tick
publishes them when due, they are taken from the live data under the target's lease,
and the retention prunes the old ones. A deployment's backup goes off-host too."""

from __future__ import annotations

import fcntl
import os
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from rollhook.broker import OFFSITE_SHIP, OFFSITE_SNAPSHOT
from rollhook.records import targets as target_records
from rollhook.targets import Target
from tests.workers.deployer import Deployer
from tests.workers.offsite.conftest import Clock, Remote, needs_restic, notices_of, state_of
from workers.context import WorkerContext
from workers.dispatcher import targets_needing_a_worker
from workers.lease import Heartbeat
from workers.offsite import snapshots, tasks
from workers.offsite.repository import lock_path
from workers.offsite.snapshots import SnapshotResult
from workers.offsite.ticker import tick

pytestmark = [pytest.mark.engine, *needs_restic]


def run_tick(deployer: Deployer, clock: Clock) -> list[str]:
    deployer.sent.clear()
    tick(deployer.ctx, clock())
    return [args[0] for task, args in deployer.sent if task == OFFSITE_SNAPSHOT]


def test_scheduled_snapshots_are_taken_and_pruned_by_the_retention(
    offsite_deployer: Callable[..., Deployer], remote: Remote, clock: Clock
) -> None:
    deployer = offsite_deployer(
        remote, schedule="daily 03:00", retention={"daily": 2, "weekly": 0, "monthly": 0}
    )
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"
    target = deployer.target
    env_before = (deployer.dirs.work / ".env").read_text()
    (deployer.storage / "models").mkdir()
    (deployer.storage / "models" / "model.bin").write_bytes(os.urandom(2_000_000))

    assert run_tick(deployer, clock) == []  # 01:00: the schedule starts, next at 03:00
    assert state_of(deployer).next_due_at == clock.now.replace(hour=3)
    taken = []
    for day in range(3):
        clock.to(datetime(2026, 5, 4 + day, 3, 0, 40, tzinfo=UTC))
        assert run_tick(deployer, clock) == ["llm"]
        result = snapshots.take(deployer.ctx, target, scheduled=True, clock=clock)
        assert result.status == "taken", result.detail
        assert result.downtime_seconds == 0.0  # final_pass: none: the app kept serving
        assert result.snapshot is not None
        taken.append(result.snapshot)
        state = state_of(deployer)
        assert state.last_snapshot_id == result.snapshot.id
        assert state.last_success_at == clock.now
        assert state.last_size and state.last_size > 0 and state.last_duration
        assert state.next_due_at == datetime(2026, 5, 5 + day, 3, 0, tzinfo=UTC)
        assert state.running_since is None and state.failures == 0
        assert run_tick(deployer, clock) == []  # taken: not due again until tomorrow

    # Daily 2: the first day's snapshot is gone, and with it data only it used.
    kept = remote.snapshots()
    assert [s.id for s in kept] == [taken[2].id, taken[1].id]
    assert [s.time.astimezone(UTC).date().day for s in kept] == [6, 5]
    assert taken[2].data_added is not None and taken[0].data_added is not None
    # Unchanged data (the model) is not uploaded again: only what the app wrote since.
    assert taken[0].data_added > 2_000_000 > 50 * taken[2].data_added
    # What the snapshot holds: the manifest maps it onto the target's sources.
    contents = remote.repo().contents(kept[0].id)
    assert contents.target == "llm"
    by_mount = {s.mount: s for s in contents.sources}
    assert set(by_mount) == {"/app/server/storage", "/app/server/.env"}
    env = remote.repo().dump(kept[0].id, by_mount["/app/server/.env"].location)
    assert env.decode().startswith(env_before.strip())
    assert notices_of(deployer) == []


def test_a_snapshot_waits_for_a_running_deployment(
    offsite_deployer: Callable[..., Deployer], local_remote: Remote, clock: Clock
) -> None:
    deployer = offsite_deployer(local_remote, schedule="daily 03:00")
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"
    kept = snapshots.take_local(deployer.ctx, deployer.target, clock=clock)
    assert kept.status == "taken", kept.detail
    backup_id = kept.detail.removeprefix("backup ").split(":")[0]
    run_tick(deployer, clock)
    clock.to(clock.now.replace(hour=3, minute=1))
    assert run_tick(deployer, clock) == ["llm"]
    with deployer.records.begin() as conn:  # a deployment holds the target
        token = target_records.acquire_lease(conn, "llm", "a-deployment", 30)
    assert token is not None
    busy = snapshots.take(deployer.ctx, deployer.target, scheduled=True, clock=clock)
    assert busy.status == "busy" and "being deployed" in busy.detail
    state = state_of(deployer)
    assert state.running_since is None and state.last_attempt_at is None
    assert local_remote.snapshots() == []
    assert run_tick(deployer, clock) == ["llm"]  # still due: the next tick tries again
    # A deployment's backup waits too (its task is retried), until the last try: then it
    # is a failure, recorded and told, never dropped in silence.
    assert tasks.ship(deployer.ctx, "llm", backup_id) == "busy"
    assert state_of(deployer).failures == 0 and notices_of(deployer) == []
    assert tasks.ship(deployer.ctx, "llm", backup_id, last_try=True) == "failed"
    state = state_of(deployer)
    assert state.failures == 1 and state.running_since is None
    assert state.last_error is not None and backup_id in state.last_error
    [(event, detail)] = notices_of(deployer)
    assert event == "failed" and "gave up" in detail and "being deployed" in detail
    with deployer.records.begin() as conn:
        target_records.release_lease(conn, "llm", token)
    done = snapshots.take(deployer.ctx, deployer.target, scheduled=True, clock=clock)
    assert done.status == "taken", done.detail
    assert run_tick(deployer, clock) == []


def test_a_final_pass_stops_the_service_briefly_and_it_serves_again(
    offsite_deployer: Callable[..., Deployer], local_remote: Remote, clock: Clock
) -> None:
    deployer = offsite_deployer(local_remote, final_pass="stop")
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"
    result = snapshots.take(deployer.ctx, deployer.target, clock=clock)
    assert result.status == "taken", result.detail
    assert 0 < result.downtime_seconds < result.staging_seconds + 30
    assert deployer.app_version() == "1.0.0"  # gated healthy again before the upload
    # The database holds the writes up to the stop: the final pass saw them.
    snap = result.snapshot
    assert snap is not None
    contents = local_remote.repo().contents(snap.id)
    [storage] = [s for s in contents.sources if s.mount == "/app/server/storage"]
    db = local_remote.repo().dump(snap.id, f"{storage.location}/anythingllm.db").decode()
    live = (deployer.storage / "anythingllm.db").read_text()
    assert "1.0.0 write" in db and live.startswith(db.split("migrated 0 -> 1")[0])


def test_a_deployments_backup_goes_off_host_after_it(
    offsite_deployer: Callable[..., Deployer], remote: Remote, clock: Clock
) -> None:
    deployer = offsite_deployer(remote)
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"
    deployer.commit("2.0.0")
    deployer.sent.clear()
    second = deployer.deploy()
    assert second.status == "succeeded" and second.backup_id
    # Queued once the deployment was over, as a task of its own.
    assert (OFFSITE_SHIP, ["llm", second.backup_id]) in deployer.sent
    shipped = snapshots.ship(deployer.ctx, deployer.target, second.backup_id, clock=clock)
    assert shipped.status == "taken", shipped.detail
    snap = shipped.snapshot
    assert snap is not None and f"backup={second.backup_id}" in snap.tags
    # It holds the data as 1.0.0 left it (schema 1), though 2.0.0 runs on schema 2 now.
    contents = remote.repo().contents(snap.id)
    [storage] = [s for s in contents.sources if s.mount == "/app/server/storage"]
    schema = remote.repo().dump(snap.id, f"{storage.location}/schema_version")
    assert schema.decode().strip() == "1" and deployer.schema() == 2
    # Timed as the backup was sealed, not as it was shipped.
    assert abs(snap.time - second.started_at) < timedelta(minutes=5)
    # A live snapshot afterwards links what the shipped stage holds.
    live = snapshots.take(deployer.ctx, deployer.target, clock=clock)
    assert live.status == "taken", live.detail
    assert live.snapshot is not None and live.snapshot.id != snap.id


def test_a_deployment_waits_while_a_snapshot_stages_and_runs_once_it_is_done(
    offsite_deployer: Callable[..., Deployer],
    local_remote: Remote,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deployer = offsite_deployer(local_remote, final_pass="stop")
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"
    deployer.commit("2.0.0")
    seen: dict[str, object] = {}
    stage_live = snapshots._stage_live

    def a_deployment_arrives(ctx: WorkerContext, target: Target, beat: Heartbeat) -> object:
        # A push while the snapshot holds the target: a worker is told to run it.
        seen["id"] = deployer.queue()
        deployer.run()
        seen["status"] = deployer.record(str(seen["id"])).status
        seen["lease"] = deployer.state().lease_owner
        staged = stage_live(ctx, target, beat)  # both passes, the service stopped between
        seen["version"] = deployer.app_version()
        return staged

    monkeypatch.setattr(snapshots, "_stage_live", a_deployment_arrives)
    result = snapshots.take(deployer.ctx, deployer.target, clock=clock)
    assert result.status == "taken", result.detail
    assert seen["status"] == "queued"  # it did not run beside the snapshot's final pass
    assert str(seen["lease"]).endswith("/offsite")
    assert seen["version"] == "1.0.0"
    # Once the snapshot let go of the target, beat's kick finds the queued work.
    assert targets_needing_a_worker(deployer.ctx) == ["llm"]
    deployer.run()
    assert deployer.record(str(seen["id"])).status == "succeeded"
    assert deployer.app_version() == "2.0.0"


def test_uploads_and_prunes_of_a_shared_repository_take_turns(
    offsite_deployer: Callable[..., Deployer], local_remote: Remote, clock: Clock
) -> None:
    deployer = offsite_deployer(
        local_remote, retention={"last": 1, "daily": 0, "weekly": 0, "monthly": 0}
    )
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"
    first = snapshots.take(deployer.ctx, deployer.target, clock=clock)
    assert first.status == "taken", first.detail
    lock = lock_path(deployer.ctx, local_remote.repository)

    # Another target of this host prunes the repository: the upload waits for it.
    outcome: list[SnapshotResult] = []
    with open(lock, "a") as prune:
        fcntl.flock(prune, fcntl.LOCK_EX)
        clock.forward(timedelta(hours=1))
        waiting = threading.Thread(
            target=lambda: outcome.append(
                snapshots.take(deployer.ctx, deployer.target, clock=clock)
            )
        )
        waiting.start()
        time.sleep(5)
        assert waiting.is_alive() and len(local_remote.snapshots()) == 1
    waiting.join(timeout=120)
    [second] = outcome
    assert second.status == "taken", second.detail
    assert len(local_remote.snapshots()) == 1  # taken, then the retention kept the last

    # Another target of this host uploads: the retention waits for the next snapshot.
    with open(lock, "a") as upload:
        fcntl.flock(upload, fcntl.LOCK_SH)
        clock.forward(timedelta(hours=1))
        third = snapshots.take(deployer.ctx, deployer.target, clock=clock)
    assert third.status == "taken" and "retention waits" in third.detail, third.detail
    assert len(local_remote.snapshots()) == 2

    # Another host uploads into the same repository: restic holds its (shared) lock while
    # it reads its data, here a pipe that stays open; the prune is refused by restic.
    other = subprocess.Popen(
        [
            "restic",
            "--repo",
            local_remote.repository,
            "--password-file",
            str(local_remote.password_file),
            "--cache-dir",
            str(local_remote.root / "other-cache"),
            "backup",
            "--stdin",
            "--stdin-filename",
            "other-host.sql",
            "--host",
            "other-host",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        locks = local_remote.where / "locks"
        deadline = time.monotonic() + 60
        while not any(locks.iterdir()):
            assert time.monotonic() < deadline and other.poll() is None
            time.sleep(0.2)
        clock.forward(timedelta(hours=1))
        fourth = snapshots.take(deployer.ctx, deployer.target, clock=clock)
        assert fourth.status == "taken", fourth.detail
        assert "retention not applied this time" in fourth.detail and "locked" in fourth.detail
        state = state_of(deployer)
        assert state.failures == 0 and state.last_success_at == clock.now
        assert fourth.snapshot is not None and state.last_snapshot_id == fourth.snapshot.id
        assert notices_of(deployer) == []
        assert len(local_remote.snapshots()) == 3  # nothing removed under the other's lock
    finally:
        assert other.stdin is not None
        other.stdin.write(b"-- the other host's dump\n")
        other.stdin.close()
        other.wait(timeout=60)
    clock.forward(timedelta(hours=1))
    fifth = snapshots.take(deployer.ctx, deployer.target, clock=clock)
    assert fifth.status == "taken" and "retention" not in fifth.detail, fifth.detail
    assert fifth.forgotten == 3 and fifth.snapshot is not None
    assert [s.id for s in local_remote.snapshots()] == [fifth.snapshot.id]
