"""A worker killed with SIGKILL mid-rollout: another one finishes the job from the records.

The dying worker runs in a forked process; the test kills it at a chosen step, waits for
its lease to expire, and runs the target again as a second worker would. The app must
end on the old or the new version, serving, and the record must be final.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from rollhook.records import targets as target_records
from rollhook.records.schema import deployments, targets
from tests.workers.deployer import Deployer
from workers.compose import find_compose
from workers.runner import run_target

LEASE = 3.0

pytestmark = [
    pytest.mark.engine,
    pytest.mark.parametrize(
        "deployer", [{"lease_seconds": LEASE}], indirect=True, ids=["short-lease"]
    ),
]


def _worker(deployer: Deployer) -> None:
    deployer.ctx.records.dispose(close=False)
    deployer.ctx.refresh_owner()
    run_target(deployer.ctx, deployer.name)
    os._exit(0)


def _kill_at(deployer: Deployer, deployment_id: str, step: str) -> None:
    """Run the target in a forked worker and SIGKILL it once `step` is running."""
    child = multiprocessing.get_context("fork").Process(target=_worker, args=(deployer,))
    child.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        steps = deployer.record(deployment_id).steps
        if any(s["name"] == step and s["outcome"] == "running" for s in steps):
            break
        assert child.is_alive(), "the worker finished before the step it should die in"
        time.sleep(0.05)
    else:
        raise AssertionError(f"step {step} never started")
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join()


@pytest.mark.parametrize("step", ["backup", "start", "gate"])
def test_a_killed_worker_is_recovered_and_the_app_serves(deployer: Deployer, step: str) -> None:
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"
    if step == "backup":  # enough data that the first backup pass takes a while
        with open(deployer.storage / "documents" / "big.bin", "wb") as handle:
            for _ in range(300):
                handle.write(b"\1" * (1 << 20))
    deployer.commit("2.0.0-slow")  # boots in 3s: the gate is still running when we kill
    deployment_id = deployer.queue()

    _kill_at(deployer, deployment_id, step)
    assert deployer.record(deployment_id).status == "running"
    # Nobody can take the target while the dead worker's lease is still valid...
    run_target(deployer.ctx, deployer.name)
    assert deployer.record(deployment_id).status == "running"

    time.sleep(LEASE + 0.5)  # ...and once it expired, the next worker finishes the job.
    run_target(deployer.ctx, deployer.name)

    record = deployer.record(deployment_id)
    assert record.status in {"succeeded", "rolled_back"}, record.log
    assert record.attempt == 2
    assert deployer.app_version() in {"1.0.0", "2.0.0-slow"}
    assert "recovery" in record.log or record.status == "succeeded"
    assert deployer.state().lease_owner is None


def test_after_too_many_worker_deaths_the_old_version_serves(deployer: Deployer) -> None:
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"
    deployer.commit("2.0.0-slow")
    deployment_id = deployer.queue()
    _kill_at(deployer, deployment_id, "gate")
    with deployer.records.begin() as conn:  # as if it had died twice before
        conn.execute(update(deployments).where(deployments.c.id == deployment_id).values(attempt=3))
    time.sleep(LEASE + 0.5)
    run_target(deployer.ctx, deployer.name)

    record = deployer.record(deployment_id)
    assert record.status == "rolled_back", record.log
    assert "gave up after 3 worker deaths" in record.reason
    assert deployer.app_version() == "1.0.0"
    assert deployer.schema() == 1  # the new version's migration was undone


def _orphan(deployer: Deployer, deployment_id: str, steps: list[str]) -> None:
    """Make a deployment look like a dead worker's, which got as far as ``steps``."""
    now = datetime.now(UTC).isoformat()
    journal = [
        {"name": n, "outcome": "ok", "started_at": now, "finished_at": now, "detail": None}
        for n in steps
    ]
    with deployer.records.begin() as conn:
        state = target_records.get(conn, deployer.name)
        conn.execute(
            update(deployments)
            .where(deployments.c.id == deployment_id)
            .values(status="running", steps=journal, attempt=1, lease_token=99,
                    previous_deployment_id=state.current_deployment_id)
        )  # fmt: skip
        conn.execute(
            update(targets)
            .where(targets.c.name == deployer.name)
            .values(lease_owner="dead-worker", lease_token=99,
                    lease_expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )  # fmt: skip


def test_an_app_stopped_by_a_dead_worker_serves_again_even_if_the_retry_fails(
    deployer: Deployer,
) -> None:
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"
    deployer.commit("2.0.0")
    deployment_id = deployer.queue()
    _orphan(deployer, deployment_id, ["sync", "plan", "preflight", "backup", "stop"])
    subprocess.run(  # what the dead worker had done: the old version is stopped
        [*find_compose(), "-p", deployer.target.project, "stop"],
        env={"DOCKER_HOST": deployer.docker_host, "PATH": "/usr/bin:/bin"},
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert deployer.app_version() is None
    deployer.target.repo = "http://127.0.0.1:9/unreachable.git"  # the retry will fail

    run_target(deployer.ctx, deployer.name)

    record = deployer.record(deployment_id)
    assert record.status == "failed", record.log
    assert "restart-previous" in [s["name"] for s in record.steps]
    assert deployer.app_version() == "1.0.0"


def test_losing_the_lease_mid_gate_leaves_the_app_to_the_new_holder(deployer: Deployer) -> None:
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"
    deployer.commit("2.0.0-slow")
    deployment_id = deployer.queue()
    worker = threading.Thread(target=deployer.run)
    worker.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        steps = deployer.record(deployment_id).steps
        if steps and steps[-1]["name"] == "gate" and steps[-1]["outcome"] == "running":
            break
        time.sleep(0.05)
    with deployer.records.begin() as conn:  # the lease expires and somebody else takes it
        conn.execute(
            update(targets).where(targets.c.name == deployer.name)
            .values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )  # fmt: skip
        taken = target_records.acquire_lease(conn, deployer.name, "other-worker", 3)
    assert taken is not None
    worker.join(timeout=60)
    assert not worker.is_alive()

    record = deployer.record(deployment_id)
    assert record.status == "running"  # not rolled back, not failed: not ours any more
    assert "rollback" not in [s["name"] for s in record.steps]
    time.sleep(3.5)  # the other holder's lease runs out; recovery finishes the deployment
    run_target(deployer.ctx, deployer.name)
    record = deployer.record(deployment_id)
    assert record.status == "succeeded", record.log
    assert deployer.app_version() == "2.0.0-slow"
