"""A worker killed with SIGKILL mid-rollout: another one finishes the job from the records.

The dying worker runs in a forked process; the test kills it at a chosen step, waits for
its lease to expire, and runs the target again as a second worker would. The app must
end on the old or the new version, serving, and the record must be final.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from rollhook.records.schema import deployments
from tests.workers.deployer import Deployer
from workers.runner import run_target

pytestmark = pytest.mark.engine

LEASE = 3.0


@pytest.fixture
def deployer(
    tmp_path: Path, git_server: Any, docker_host: str, standin: Any, registry: Any
) -> Iterator[Deployer]:
    repo = git_server.create_repo("infra")
    target = Deployer(
        tmp_path,
        repo=repo,
        docker_host=docker_host,
        standin=standin,
        registry_host=registry.host,
        lease_seconds=LEASE,
    )
    yield target
    target.down()


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
        steps = deployer.record(deployment_id)["steps"]
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
    assert deployer.deploy()["status"] == "succeeded"
    if step == "backup":  # enough data that the first backup pass takes a while
        with open(deployer.storage / "documents" / "big.bin", "wb") as handle:
            for _ in range(300):
                handle.write(b"\1" * (1 << 20))
    deployer.commit("2.0.0-slow")  # boots in 3s: the gate is still running when we kill
    deployment_id = deployer.queue()

    _kill_at(deployer, deployment_id, step)
    assert deployer.record(deployment_id)["status"] == "running"
    # Nobody can take the target while the dead worker's lease is still valid...
    run_target(deployer.ctx, deployer.name)
    assert deployer.record(deployment_id)["status"] == "running"

    time.sleep(LEASE + 0.5)  # ...and once it expired, the next worker finishes the job.
    run_target(deployer.ctx, deployer.name)

    record = deployer.record(deployment_id)
    assert record["status"] in {"succeeded", "rolled_back"}, record["log"]
    assert record["attempt"] == 2
    assert deployer.app_version() in {"1.0.0", "2.0.0-slow"}
    assert "recovery" in record["log"] or record["status"] == "succeeded"
    assert deployer.state()["lease_owner"] is None


def test_after_too_many_worker_deaths_the_old_version_serves(deployer: Deployer) -> None:
    deployer.commit("1.0.0")
    assert deployer.deploy()["status"] == "succeeded"
    deployer.commit("2.0.0-slow")
    deployment_id = deployer.queue()
    _kill_at(deployer, deployment_id, "gate")
    with deployer.records.begin() as conn:  # as if it had died twice before
        conn.execute(update(deployments).where(deployments.c.id == deployment_id).values(attempt=3))
    time.sleep(LEASE + 0.5)
    run_target(deployer.ctx, deployer.name)

    record = deployer.record(deployment_id)
    assert record["status"] == "rolled_back", record["log"]
    assert "gave up after 3 worker deaths" in record["reason"]
    assert deployer.app_version() == "1.0.0"
    assert deployer.schema() == 1  # the new version's migration was undone
