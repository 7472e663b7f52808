"""What a worker process needs, built once from the settings and passed down as plain values."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from rollhook.datadir import prepare_data_dir
from rollhook.offsite import restic_environment
from rollhook.records import sync as sync_records
from rollhook.records import targets as target_records
from rollhook.records.db import make_engine, migrate
from rollhook.settings import LOCAL_HOST, Settings
from rollhook.targets import Target, check_host_name, host_of, load_targets
from workers.compose import find_compose
from workers.notify import Notifiers, build_notifiers


@dataclass
class WorkerContext:
    records: Engine
    data_dir: Path
    targets: dict[str, Target]
    docker_host: str | None
    lease_seconds: float
    send: Callable[[str, list[Any]], None]  # publish a task by name
    git_token: str | None = None
    git_ssh_key: str | None = None
    git_known_hosts: Path | None = None
    compose_argv: list[str] = field(default_factory=list)
    notifiers: Notifiers = field(default_factory=Notifiers)
    broker_file: Path | None = None  # the embedded broker's SQLite file, if embedded
    event_retention_days: float = 30.0
    # restic's backend variables (rollhook/offsite.py), read once; and RESTIC_PASSWORD_FILE,
    # the repositories' password file when a target names none.
    restic_env: dict[str, str] = field(default_factory=dict)
    restic_password_file: Path | None = None
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    proxy_dir: Path | None = None  # the front proxy's sockets; None: <data_dir>/proxy
    # The wall clock deploy windows are read on; tests give their own.
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # The host this worker serves (`rollhook worker --host`): only its targets run here.
    host: str = LOCAL_HOST

    def here(self, name: str) -> bool:
        """Whether target ``name`` is on this worker's host (an unknown one is not)."""
        target = self.targets.get(name)
        return target is not None and target.host == self.host

    def host_of(self, name: str) -> str:
        return host_of(self.targets, name)

    def refresh_owner(self) -> None:
        """Prefork children inherit the parent's context; each names itself."""
        self.owner = f"{socket.gethostname()}:{os.getpid()}"


def build_context(settings: Settings, send: Callable[[str, list[Any]], None]) -> WorkerContext:
    """Read everything a worker needs from the settings, once; migrate the records."""
    prepare_data_dir(settings.data_dir)
    records = make_engine(settings.records_url())
    migrate(records, settings.data_dir)
    targets = load_targets(settings.config)
    with records.begin() as conn:
        target_records.ensure(conn, list(targets))
        sync_records.ensure(conn, list(targets))
    return WorkerContext(
        records=records,
        data_dir=settings.data_dir.resolve(),
        targets=targets,
        docker_host=settings.docker_host,
        lease_seconds=settings.lease_seconds,
        send=send,
        git_token=settings.git_token.get_secret_value() if settings.git_token else None,
        git_ssh_key=settings.git_ssh_key.get_secret_value() if settings.git_ssh_key else None,
        git_known_hosts=settings.git_known_hosts,
        compose_argv=find_compose(),
        notifiers=build_notifiers(settings),
        broker_file=(settings.data_dir / "broker.sqlite").resolve()
        if settings.embedded_broker
        else None,
        event_retention_days=settings.event_retention_days,
        restic_env=restic_environment(os.environ),
        restic_password_file=Path(os.environ["RESTIC_PASSWORD_FILE"])
        if os.environ.get("RESTIC_PASSWORD_FILE")
        else None,
        host=check_host_name(settings.worker_host),
    )
