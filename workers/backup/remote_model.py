"""What the restic adapter (``remote``) speaks: its configuration, values and errors."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from workers.backup.contents import SIZE_TAG, TARGET_TAG
from workers.errors import InfrastructureError, OperatorError

_SIZE = re.compile(rf"{SIZE_TAG}\d+\Z")


class WrongPassword(OperatorError):
    """The repository's password is not the one in the password file."""


class RepositoryMissing(OperatorError):
    """Nothing is at the configured repository location (``init_if_missing`` creates it)."""


class RepositoryUnreachable(InfrastructureError):
    """The repository's server or storage did not answer."""


class RepositoryLocked(InfrastructureError):
    """Another restic holds the repository's lock (a live one: stale locks are removed)."""


@dataclass(frozen=True)
class RemoteConfig:
    repository: str  # as restic takes it: /path, sftp:user@host:/path, s3:..., rest:...
    password_file: Path
    env: Mapping[str, str] = field(default_factory=dict)  # RESTIC_*, AWS_*, B2_*, ...
    options: Mapping[str, str] = field(default_factory=dict)  # -o key=value (sftp.command)
    cache_dir: Path | None = None  # restic's default: $HOME/.cache/restic
    restic: str = "restic"


@dataclass(frozen=True)
class Snapshot:
    id: str
    short_id: str
    time: datetime  # when it was taken (restic's clock, with its offset)
    host: str
    paths: tuple[str, ...]  # what restic was given (absolute)
    tags: tuple[str, ...]
    parent: str | None
    size: int | None = None  # bytes of the files it holds; None: not known
    files: int | None = None  # files it holds (snapshot() only)
    data_added: int | None = None  # bytes the repository grew by (snapshot() only)
    duration: float | None = None  # seconds restic took (snapshot() only)
    incomplete: bool = False  # some files could not be read (restic's exit status 3)

    @property
    def target(self) -> str | None:
        for tag in self.tags:
            if tag.startswith(TARGET_TAG):
                return tag.removeprefix(TARGET_TAG)
        return None

    def age(self, now: datetime | None = None) -> timedelta:
        return (now or datetime.now(UTC)) - self.time

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Snapshot:
        tags = data.get("tags") or ()
        return cls(
            id=str(data["id"]),
            short_id=str(data.get("short_id") or str(data["id"])[:8]),
            time=datetime.fromisoformat(str(data["time"])),
            host=str(data.get("hostname", "")),
            paths=tuple(data.get("paths") or ()),
            tags=tuple(tags),
            parent=data.get("parent"),
            size=next((int(t[len(SIZE_TAG) :]) for t in tags if _SIZE.match(t)), None),
        )


@dataclass(frozen=True)
class Retention:
    """Which snapshots ``forget`` keeps (restic's --keep-*); the rest are removed."""

    last: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0

    def flags(self) -> list[str]:
        counts = {"last": self.last, "daily": self.daily}
        counts |= {"weekly": self.weekly, "monthly": self.monthly}
        if any(n < 0 for n in counts.values()):
            raise OperatorError(f"retention counts must be 0 or more: {counts}")
        if not any(counts.values()):
            raise OperatorError("a retention must keep something (last, daily, weekly, monthly)")
        return [f"--keep-{k}={n}" for k, n in counts.items() if n]


@dataclass(frozen=True)
class Forgotten:
    kept: tuple[Snapshot, ...]
    removed: tuple[Snapshot, ...]
    pruned: bool  # the data only the removed snapshots used is gone too


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    problems: tuple[str, ...]  # restic's own lines about what is wrong
    read_data: str | None  # the subset of pack files read back, if any
