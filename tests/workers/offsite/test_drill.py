"""The restore drill: the latest remote snapshot restored into scratch and started beside
the live app on a spare port. It passes on good data, fails on a damaged repository and on
data the app cannot run on, and never touches the app that serves."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta

import pytest

from tests.workers.deployer import Deployer
from tests.workers.offsite.conftest import Clock, Remote, needs_restic, notices_of, state_of
from workers.engine import DockerEngine
from workers.offsite import snapshots
from workers.offsite.drill import run_drill

pytestmark = [pytest.mark.engine, *needs_restic]

DRILL = {"schedule": "weekly", "port_env": "SERVER_PORT"}


def live_container(deployer: Deployer) -> tuple[str, bool]:
    with DockerEngine(deployer.docker_host) as engine:
        [app] = engine.containers(deployer.target.project)
    return app.container_id, app.running


def drill_containers(deployer: Deployer) -> int:
    with DockerEngine(deployer.docker_host) as engine:
        return len(engine.containers(f"{deployer.target.project}-drill"))


def test_a_drill_passes_on_good_data_and_leaves_the_live_app_alone(
    offsite_deployer: Callable[..., Deployer], remote: Remote, clock: Clock
) -> None:
    deployer = offsite_deployer(remote, drill=DRILL)
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"
    taken = snapshots.take(deployer.ctx, deployer.target, clock=clock)
    assert taken.status == "taken", taken.detail
    assert taken.snapshot is not None
    before = live_container(deployer)

    result = run_drill(deployer.ctx, deployer.target, clock=clock)
    assert result.ok, result.detail
    assert result.snapshot_id == taken.snapshot.id
    assert result.port is not None and result.port != deployer.port
    assert f"127.0.0.1:{result.port}" in result.detail
    assert live_container(deployer) == before  # the same container, still running
    assert deployer.app_version() == "1.0.0"
    assert drill_containers(deployer) == 0  # the drill's copy is gone
    assert not any(deployer.dirs.drills.iterdir())  # and its scratch data
    state = state_of(deployer)
    assert state.drill_ok is True and state.drill_at == clock.now
    assert state.drill_snapshot_id == taken.snapshot.id
    assert notices_of(deployer) == []


def test_a_drill_fails_on_a_corrupted_snapshot(
    offsite_deployer: Callable[..., Deployer], local_remote: Remote, clock: Clock
) -> None:
    deployer = offsite_deployer(local_remote, drill=DRILL)
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"
    (deployer.storage / "documents" / "big.bin").write_bytes(os.urandom(3_000_000))
    taken = snapshots.take(deployer.ctx, deployer.target, clock=clock)
    assert taken.status == "taken", taken.detail
    # Bit rot on the backup server: every pack file gets a few bytes flipped.
    packs = [p for p in (local_remote.where / "data").rglob("*") if p.is_file()]
    assert packs
    for pack in packs:
        pack.chmod(0o600)
        with open(pack, "r+b") as handle:
            handle.seek(pack.stat().st_size // 2)
            chunk = handle.read(16)
            handle.seek(-len(chunk), os.SEEK_CUR)
            handle.write(bytes(b ^ 0xFF for b in chunk))
    before = live_container(deployer)

    result = run_drill(deployer.ctx, deployer.target, clock=clock)
    assert not result.ok
    assert "restic could not restore" in result.detail, result.detail
    assert live_container(deployer) == before
    assert deployer.app_version() == "1.0.0"
    assert drill_containers(deployer) == 0
    assert not any(deployer.dirs.drills.iterdir())
    state = state_of(deployer)
    assert state.drill_ok is False and state.drill_detail == result.detail
    assert [event for event, _ in notices_of(deployer)] == ["drill_failed"]


def test_a_drill_needs_to_know_how_to_move_a_host_network_port(
    offsite_deployer: Callable[..., Deployer], local_remote: Remote, clock: Clock
) -> None:
    deployer = offsite_deployer(local_remote, drill="weekly")
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"
    assert snapshots.take(deployer.ctx, deployer.target, clock=clock).status == "taken"
    result = run_drill(deployer.ctx, deployer.target, clock=clock)
    assert not result.ok
    assert result.detail.startswith(
        "targets.llm.backup.drill.port_env: anything-llm is on the host"
    )
    assert drill_containers(deployer) == 0 and deployer.app_version() == "1.0.0"


def test_a_failing_drill_is_told_once_then_once_when_it_passes_again(
    offsite_deployer: Callable[..., Deployer], local_remote: Remote, clock: Clock
) -> None:
    deployer = offsite_deployer(local_remote, drill=DRILL)
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"
    # The data as a newer version left it (the running app read its schema at start, so
    # it goes on serving): restic reads it back intact, the image that runs refuses it.
    schema = (deployer.storage / "schema_version").read_text()
    (deployer.storage / "schema_version").write_text("99\n")
    taken = snapshots.take(deployer.ctx, deployer.target, clock=clock)
    assert taken.status == "taken", taken.detail
    before = live_container(deployer)

    result = run_drill(deployer.ctx, deployer.target, clock=clock)
    assert not result.ok
    assert "did not pass the health gate" in result.detail, result.detail
    assert result.restore_seconds > 0  # restored fine: it is the app that failed on it
    assert live_container(deployer) == before and deployer.app_version() == "1.0.0"
    assert drill_containers(deployer) == 0
    assert not any(deployer.dirs.drills.iterdir())
    assert [event for event, _ in notices_of(deployer)] == ["drill_failed"]

    # The next week's drill fails the same way: recorded, not told again.
    clock.forward(timedelta(days=7))
    again = run_drill(deployer.ctx, deployer.target, clock=clock)
    assert not again.ok and "did not pass the health gate" in again.detail
    assert state_of(deployer).drill_at == clock.now
    assert [event for event, _ in notices_of(deployer)] == ["drill_failed"]

    # The data is put right and a new snapshot taken: the drill passes, and that is told once.
    (deployer.storage / "schema_version").write_text(schema)
    clock.forward(timedelta(hours=1))
    assert snapshots.take(deployer.ctx, deployer.target, clock=clock).status == "taken"
    clock.forward(timedelta(days=7))
    passed = run_drill(deployer.ctx, deployer.target, clock=clock)
    assert passed.ok, passed.detail
    assert [event for event, _ in notices_of(deployer)] == ["drill_failed", "drill_recovered"]
    clock.forward(timedelta(days=7))
    assert run_drill(deployer.ctx, deployer.target, clock=clock).ok
    assert len(notices_of(deployer)) == 2
