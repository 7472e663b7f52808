"""Targets with an off-host repository: a real restic repository on a local path or over
SFTP (the harness's sshd on loopback, key auth), and a clock the test moves."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rollhook.records import notifications, remote_backups
from tests.harness.sshd import SftpServer
from tests.workers.deployer import Deployer
from workers.backup.contents import target_tags
from workers.backup.remote import RemoteConfig, Repository
from workers.notify import Notifiers
from workers.notify.console import ConsoleNotifier

PASSWORD = "offsite-password-4f1c9e"

needs_restic = [
    pytest.mark.skipif(shutil.which("restic") is None, reason="restic is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="backups keep owners: root only"),
]


@dataclass
class Remote:
    """One repository: the target's ``backup.remote`` settings, and a direct look into it."""

    root: Path
    repository: str
    options: dict[str, str]
    password_file: Path
    where: Path  # the repository's directory on this machine

    def settings(self, **more: Any) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "password_file": str(self.password_file),
            "options": self.options,
            **more,
        }

    def repo(self) -> Repository:
        config = RemoteConfig(
            self.repository,
            self.password_file,
            options=self.options,
            cache_dir=self.root / "test-cache",
        )
        return Repository(config)

    def snapshots(self, target: str = "llm") -> list[Any]:
        return self.repo().snapshots(target_tags(target))


@pytest.fixture(params=["local", "sftp"])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Remote:
    return make_remote(request, tmp_path, request.param)


@pytest.fixture
def local_remote(request: pytest.FixtureRequest, tmp_path: Path) -> Remote:
    return make_remote(request, tmp_path, "local")


def make_remote(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> Remote:
    password = tmp_path / "restic-password"
    password.write_text(PASSWORD + "\n")
    password.chmod(0o600)
    where = tmp_path / "offsite-repo"
    if kind == "local":
        return Remote(tmp_path, str(where), {}, password, where)
    server: SftpServer = request.getfixturevalue("sftp_server")
    return Remote(tmp_path, server.repository(where), server.options(), password, where)


@dataclass
class Clock:
    """The time the test says it is: snapshots are taken, and the schedule ticks, at it."""

    now: datetime = field(default_factory=lambda: datetime(2026, 5, 4, 1, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def to(self, moment: datetime) -> datetime:
        self.now = moment
        return moment

    def forward(self, delta: timedelta) -> datetime:
        self.now += delta
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def offsite_deployer(
    make_deployer: Callable[..., Deployer],
) -> Iterator[Callable[..., Deployer]]:
    """A deployer whose target sends its data to ``remote`` and tells the console."""

    def make(remote: Remote, *, drill: Any = None, **settings: Any) -> Deployer:
        backup: dict[str, Any] = {"keep": 3, "remote": remote.settings(**settings)}
        if drill is not None:
            backup["drill"] = drill
        deployer = make_deployer(backup=backup)
        deployer.ctx.notifiers = Notifiers.of(ConsoleNotifier())
        return deployer

    yield make


def state_of(deployer: Deployer) -> remote_backups.RemoteBackupState:
    with deployer.records.begin() as conn:
        state = remote_backups.get(conn, deployer.name)
    assert state is not None
    return state


def notices_of(deployer: Deployer) -> list[tuple[str, str]]:
    """(event, detail) of each backup notice told about the target."""
    with deployer.records.begin() as conn:
        rows = notifications.of_target(conn, deployer.name, "backup")
    return [(r.external["spec"]["event"], r.external["spec"]["detail"]) for r in rows]
