"""A repository that refuses the password or does not answer: every snapshot fails loudly
(recorded, told once, never the password), and deployments go on meanwhile."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rollhook.broker import OFFSITE_SHIP
from rollhook.records import notifications
from tests.harness.sshd import SftpServer
from tests.workers.deployer import Deployer
from tests.workers.offsite.conftest import (
    PASSWORD,
    Clock,
    Remote,
    needs_restic,
    notices_of,
    state_of,
)
from workers.backup.remote import RemoteConfig, Repository
from workers.notify import deliver
from workers.offsite import snapshots
from workers.offsite.snapshots import SnapshotResult
from workers.offsite.ticker import tick

pytestmark = [pytest.mark.engine, *needs_restic]

OTHER_PASSWORD = "the-repositorys-real-password-8e2d"
ENV_SECRET = "aws-secret-key-3c9d71"


def test_a_wrong_password_fails_loudly_is_told_once_and_never_blocks_deployments(
    offsite_deployer: Callable[..., Deployer],
    local_remote: Remote,
    clock: Clock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    real = tmp_path / "real-password"
    real.write_text(OTHER_PASSWORD)
    Repository(RemoteConfig(local_remote.repository, real)).init_if_missing()
    deployer = offsite_deployer(local_remote, schedule="daily 03:00")
    deployer.ctx.restic_env = {"AWS_SECRET_ACCESS_KEY": ENV_SECRET}  # handed to restic only
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"

    first = snapshots.take(deployer.ctx, deployer.target, scheduled=True, clock=clock)
    assert first.status == "failed"
    assert "wrong password" in first.detail and str(local_remote.password_file) in first.detail
    assert PASSWORD not in first.detail
    state = state_of(deployer)
    assert state.failures == 1 and state.last_error == first.detail
    assert state.running_since is None
    assert state.next_due_at == datetime(2026, 5, 4, 3, 0, tzinfo=UTC)  # the schedule moved on
    [(event, detail)] = notices_of(deployer)
    assert event == "failed" and "wrong password" in detail
    with deployer.records.begin() as conn:
        [row] = notifications.of_target(conn, "llm", "backup")
    delivered = deliver(deployer.records, deployer.ctx.notifiers, row.id)
    assert delivered.status == "delivered", delivered

    # A deployment meanwhile: it runs, succeeds, and queues its backup for off-host.
    deployer.commit("2.0.0")
    deployer.sent.clear()
    second = deployer.deploy()
    assert second.status == "succeeded", second.log
    assert deployer.app_version() == "2.0.0"
    assert (OFFSITE_SHIP, ["llm", second.backup_id]) in deployer.sent
    shipped = snapshots.ship(deployer.ctx, deployer.target, second.backup_id, clock=clock)
    assert shipped.status == "failed" and "wrong password" in shipped.detail
    assert deployer.record(second.id).status == "succeeded"  # the deployment is untouched
    again = snapshots.take(deployer.ctx, deployer.target, clock=clock)
    assert again.status == "failed"
    assert state_of(deployer).failures == 3
    assert len(notices_of(deployer)) == 1  # the first failure of the run is told, once

    # The operator fixes the password: the next snapshot works, the run of failures ends.
    local_remote.password_file.write_text(OTHER_PASSWORD)
    fixed = snapshots.take(deployer.ctx, deployer.target, clock=clock)
    assert fixed.status == "taken", fixed.detail
    state = state_of(deployer)
    assert state.failures == 0 and state.last_error is None and state.last_success_at

    # Neither password nor the backend's secret reached a log line, a record or a notice.
    with deployer.records.begin() as conn:
        told = notifications.of_target(conn, "llm", "backup")
    written = caplog.text + repr(state_of(deployer)) + repr(told) + repr(deployer.record(second.id))
    for secret in (PASSWORD, OTHER_PASSWORD, ENV_SECRET):
        assert secret not in written


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word (an SSH server that hangs)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_an_unreachable_repository_fails_and_a_deployment_runs_meanwhile(
    offsite_deployer: Callable[..., Deployer],
    sftp_server: SftpServer,
    silent_port: int,
    tmp_path: Path,
    clock: Clock,
) -> None:
    password = tmp_path / "password"
    password.write_text(PASSWORD)
    where = tmp_path / "never-reached"
    remote = Remote(
        tmp_path, sftp_server.repository(where), sftp_server.options(silent_port), password, where
    )
    deployer = offsite_deployer(remote, schedule="hourly")
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"
    tick(deployer.ctx, clock())

    outcome: list[SnapshotResult] = []
    stuck = threading.Thread(
        target=lambda: outcome.append(
            snapshots.take(deployer.ctx, deployer.target, scheduled=True, clock=clock)
        )
    )
    stuck.start()
    try:
        deployer.commit("2.0.0")
        second = deployer.deploy()  # while restic waits for a server that never answers
        assert second.status == "succeeded", second.log
        assert stuck.is_alive(), "the snapshot should still be waiting for the server"
    finally:
        stuck.join(timeout=120)
    [result] = outcome
    assert result.status == "failed"
    assert "timed out" in result.detail.lower() or "unable" in result.detail.lower()
    assert [event for event, _ in notices_of(deployer)] == ["failed"]
    assert deployer.app_version() == "2.0.0"
    assert not where.exists()
