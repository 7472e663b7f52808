"""A worker SIGKILLed inside every step of a deployment and of its rollback, then recovered.

Each case deploys 1.0.0, then a new version, and kills the worker process at a moment seen
from outside while the journal shows the step running: a git or registry request in flight
(through a slowed server), a partial backup on disk, the old version draining after its
stop signal, a staged restore copy next to the live data, compose started, the old version
answering its rollback's gate. Beat's check then finds the target (lease + a few seconds)
and the next worker finishes the deployment. ``check_recovered`` says what must hold.

A kill before ``start`` runs the deployment again from the top (the old version is
brought back first if it was stopped); from ``start`` on it is applied again and gated; a
kill while rolling back (the new version never healthy) rolls back again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.faults.support import (
    FaultTarget,
    check_recovered,
    kill_when,
    recover,
    wait_until,
)
from tests.harness.gitserver import GitServer
from workers import failpoints
from workers.backup.early import EARLY
from workers.backup.restore import STAGED
from workers.dispatcher import targets_needing_a_worker

pytestmark = pytest.mark.fault

Moment = Callable[[FaultTarget, str], bool]  # (target, deployment id) -> kill now?
Sign = Callable[[FaultTarget, str, dict[str, Any]], bool]  # ... and the running step


def _in(step: str, sign: Sign) -> Moment:
    """While the journal shows ``step`` running, once ``sign`` is seen."""

    def moment(target: FaultTarget, deployment_id: str) -> bool:
        running = target.step(deployment_id)
        return (
            running is not None and running["name"] == step and sign(target, deployment_id, running)
        )

    return moment


def _child(what: str, count: int = 1) -> Sign:
    """``count`` child processes (``git``, ``compose``) recorded since the step began."""
    return lambda target, deployment_id, step: (
        target.children_since(deployment_id, step, what) >= count
    )


def _registry_busy() -> Sign:
    """The engine sent the registry a request after the step was first seen running."""
    base: dict[str, int] = {}

    def seen(target: FaultTarget, _id: str, step: dict[str, Any]) -> bool:
        return target.proxy.chunks > base.setdefault(step["started_at"], target.proxy.chunks)

    return seen


def _partial_backup(target: FaultTarget, _id: str, _step: dict[str, Any]) -> bool:
    return any(p.name.endswith(".partial") for p in target.dirs.backups.iterdir())


def _stop_signal(app: str) -> Sign:
    """``app`` noted a stop signal in its storage (a drain or a checkpoint begins)."""

    def seen(target: FaultTarget, _id: str, _step: dict[str, Any]) -> bool:
        signals = target.storage / "stop-signals.log"
        return signals.exists() and app in signals.read_text()

    return seen


def _staged_restore(target: FaultTarget, _id: str, _step: dict[str, Any]) -> bool:
    return any(STAGED in p.name for p in target.dirs.work.iterdir())


def _at_failpoint(sign: Sign) -> Sign:
    """A worker stopped itself at its armed failpoint, and ``sign`` holds there."""
    return lambda target, _id, step: (
        any(w.stopped() for w in target.workers) and sign(target, _id, step)
    )


def _copy_from_pass_1(target: FaultTarget, _id: str, _step: dict[str, Any]) -> bool:
    """The rollback's copy made from backup pass 1 (workers/backup/early.py), unsynced."""
    return any(STAGED in p.name and p.name.endswith(EARLY) for p in target.dirs.work.iterdir())


def _answers(version: str) -> Sign:
    return lambda target, _id, _step: target.app_version() == version


def _always(_target: FaultTarget, _id: str, _step: dict[str, Any]) -> bool:
    return True


@dataclass(frozen=True)
class Case:
    id: str
    step: str  # the journal step the worker dies in
    moment: Moment  # when, as seen from outside
    new: str = "2.0.0"
    old_env: dict[str, str] = field(default_factory=dict)  # 1.0.0's stand-in knobs
    new_env: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)  # the target's
    data_mb: int = 0  # files in the app's storage before the deployment
    slow: str | None = None  # "git" or "registry" answers slowly until the kill
    outcome: str = "succeeded"
    failpoint: str | None = None  # armed in the worker (workers/failpoints.py)


NEVER_HEALTHY = "3.0.0-never-healthy"
ROLLBACK: dict[str, Any] = {"new": NEVER_HEALTHY, "outcome": "rolled_back"}
CASES = [
    Case("sync", "sync", _in("sync", _child("git")), slow="git"),
    Case("plan", "plan", _in("plan", _registry_busy()), slow="registry"),
    Case("preflight", "preflight", _in("preflight", _registry_busy()), slow="registry"),
    Case("backup", "backup", _in("backup", _partial_backup), data_mb=120),
    Case(
        "backup-copy-from-pass-1",
        "backup",
        _in("backup", _at_failpoint(_copy_from_pass_1)),
        data_mb=120,
        failpoint=failpoints.EARLY_COPY,
    ),
    Case("stop", "stop", _in("stop", _stop_signal("1.0.0")), old_env={"STOP_DELAY": "4"}),
    Case("snapshot", "snapshot", _in("snapshot", _always), old_env={"STOP_WRITE_MB": "200"}),
    Case("start", "start", _in("start", _child("compose"))),
    Case("gate", "gate", _in("gate", _always), new="2.0.0-slow"),
    Case(
        "rollback-stop",
        "rollback",
        _in("rollback", _stop_signal(NEVER_HEALTHY)),
        new_env={"STOP_DELAY": "4"},
        **ROLLBACK,
    ),
    Case("rollback-restore", "rollback", _in("rollback", _staged_restore), data_mb=120, **ROLLBACK),
    Case(
        "rollback-restart-previous", "rollback", _in("rollback", _child("compose", 2)), **ROLLBACK
    ),
    Case(
        "rollback-gate",
        "rollback",
        _in("rollback", _answers("1.0.0")),
        options={"health": {"settle": 2}},
        **ROLLBACK,
    ),
]


def write_data(folder: Path, megabytes: int) -> None:
    """``megabytes`` files of 1 MiB each: a backup or a restore of them takes a while."""
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(megabytes):
        (folder / f"doc-{n:04d}.bin").write_bytes(n.to_bytes(4, "big") * (1 << 18))


@pytest.fixture
def slowed(git_server: GitServer) -> Iterator[Callable[[FaultTarget, str | None], None]]:
    """``slowed(target, "git" | "registry")``: that dependency answers slowly until reset."""
    made: list[FaultTarget] = []

    def slow(target: FaultTarget, what: str | None) -> None:
        made.append(target)
        if what == "git":
            git_server.delay = 1.0
        elif what == "registry":
            target.proxy.latency = 1.0

    yield slow
    git_server.delay = 0.0
    for target in made:
        target.proxy.latency = 0.0


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_worker_killed_inside_a_step_is_recovered(
    case: Case,
    make_target: Callable[..., FaultTarget],
    slowed: Callable[[FaultTarget, str | None], None],
    git_server: GitServer,
) -> None:
    options = {"health": {"timeout": 3}} if case.outcome == "rolled_back" else {}
    target = make_target(**(options | case.options))
    worker = target.worker(*filter(None, [case.failpoint]))  # its imports meanwhile
    target.commit("1.0.0", **case.old_env)
    assert target.deploy().status == "succeeded"
    if case.data_mb:
        write_data(target.storage / "documents", case.data_mb)
    target.commit(case.new, **case.new_env)
    before = target.database()

    deployment_id = target.queue()
    slowed(target, case.slow)
    worker.go()
    killed_at = kill_when(
        target, worker, deployment_id, lambda: case.moment(target, deployment_id), step=case.step
    )
    git_server.delay, target.proxy.latency = 0.0, 0.0
    record = recover(target, deployment_id, killed_at)

    check_recovered(
        target, record, old="1.0.0", new=case.new, before=before, allowed={case.outcome}
    )
    assert record.attempt == 2
    if case.step == "rollback":
        assert record.reason == "the worker died while rolling back; rolled back", record.log
    if case.id == "stop":  # the interrupted drain was let finish, not cut short
        drains = (target.storage / "shutdown.log").read_text()
        assert drains.count("1.0.0 shut down cleanly after 4s") == 2, drains
    wait_until(lambda: not worker.alive(), "the killed worker to be reaped")


def test_a_worker_killed_while_a_rollback_restores_the_data_is_recovered(
    make_target: Callable[..., FaultTarget],
) -> None:
    """A person's rollback to 1.0.0 with its data: killed inside its restore, the copies
    staged and none swapped in yet. Recovery puts back the snapshot of the data as 2.0.0
    left it, starts 2.0.0, and runs the rollback again."""
    target = make_target()
    worker = target.worker(failpoints.RESTORE_SWAP)  # the swap is a rename: too quick to see
    target.commit("1.0.0")
    assert target.deploy().status == "succeeded"
    write_data(target.storage / "documents", 120)  # what 1.0.0 leaves
    target.commit("2.0.0")
    upgrade = target.deploy()
    assert upgrade.status == "succeeded" and upgrade.backup_id is not None
    [left_by_1] = (target.dirs.backups / upgrade.backup_id).glob("data/*/anythingllm.db")

    rollback_id = target.queue(action="rollback", manual=True)
    worker.go()
    moment = _in("restore", _at_failpoint(_staged_restore))
    killed_at = kill_when(
        target, worker, rollback_id, lambda: moment(target, rollback_id), step="restore"
    )
    record = recover(target, rollback_id, killed_at)

    check_recovered(
        target,
        record,
        old="2.0.0",
        new="1.0.0",
        before=left_by_1.read_bytes(),
        allowed={"succeeded"},
    )
    assert record.attempt == 2 and "restart-previous" in [s["name"] for s in record.steps]
    assert b"by 2.0.0" not in target.database()  # 2.0.0's migration and writes are undone


def test_a_recovery_killed_while_it_restarts_the_old_version_is_recovered(
    make_target: Callable[..., FaultTarget],
) -> None:
    """Two deaths: the first worker in ``stop`` (1.0.0 draining), the one that recovers it
    while it starts 1.0.0 again (``restart-previous``, compose up running). The third finds
    the stop and the restart both unfinished, and still ends on a serving app."""
    target = make_target()
    first, second = target.worker(), target.worker()
    target.commit("1.0.0", STOP_DELAY="3")
    assert target.deploy().status == "succeeded"
    target.commit("2.0.0")
    before = target.database()
    deployment_id = target.queue()

    first.go()
    stopping = _in("stop", _stop_signal("1.0.0"))
    killed_at = kill_when(
        target, first, deployment_id, lambda: stopping(target, deployment_id), step="stop"
    )
    wait_until(lambda: target.name in targets_needing_a_worker(target.ctx), "the lease to expire")
    second.go()
    restarting = _in("restart-previous", _child("compose", 2))  # the stop again, then up
    killed_at = kill_when(
        target,
        second,
        deployment_id,
        lambda: restarting(target, deployment_id),
        step="restart-previous",
    )
    record = recover(target, deployment_id, killed_at)

    check_recovered(target, record, old="1.0.0", new="2.0.0", before=before, allowed={"succeeded"})
    assert record.attempt == 3
