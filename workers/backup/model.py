"""The values that describe a backup: what was copied, from where, and what it cost.

``BackupInfo`` is what ``manifest.json`` holds, so it stays plain and JSON-serialisable;
the CLI and the deployment record read it, and the next backup links against it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from workers.backup import paths
from workers.backup.paths import FileCreated

FORMAT = 1

SourceKind = Literal["dir", "file", "missing"]
# "included": restored as part of another source, the directory that contains it
RestoreAction = Literal["replaced", "recreated", "removed", "absent", "included"]


def _fields(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


@dataclass(frozen=True)
class Source:
    """One piece of a service's data on the host: a volume's or a bind mount's path."""

    name: str  # stable across deployments: "volume:anythingllm_storage", "bind:/srv/x/.env"
    path: Path  # a directory or a single file (anything-llm's runtime .env)

    def create_empty_file(self, sources: Iterable[Source]) -> FileCreated:
        """Create the path as an empty 0600 file if nothing is there, never through a
        symlink the app may have planted (``paths.create_empty_file``). ``sources``: all
        of the service's sources (their data is what the app can write)."""
        roots = paths.settle([s.path for s in sources], strict=False)
        return paths.create_empty_file(self.path, roots)


@dataclass(frozen=True)
class SourceInfo:
    name: str
    path: str  # the host path as given
    kind: SourceKind  # what it was once the app had stopped; "missing": nothing to keep
    dir: str  # where its copy lives inside the backup, e.g. "data/0"
    files: int
    dirs: int
    symlinks: int
    bytes_copied: int  # written for this backup
    bytes_linked: int  # hard links to the previous backup: no new disk space
    notes: tuple[str, ...] = ()
    # The real path ``path`` led to (``paths``: symlinks followed only outside the data of
    # every source). A restore goes there, and only while ``path`` still leads there.
    # None in backups made before it was recorded.
    resolved: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SourceInfo:
        known = {k: v for k, v in data.items() if k in _fields(cls)}
        return cls(**{**known, "notes": tuple(data.get("notes", ()))})


@dataclass(frozen=True)
class BackupInfo:
    id: str
    created_at: str  # ISO 8601, UTC: when pass 1 began
    finished_at: str  # when the final pass sealed it
    sources: tuple[SourceInfo, ...]
    files: int
    bytes_copied: int
    bytes_linked: int
    pass1_seconds: float  # while the app ran
    final_seconds: float  # while the app was stopped: what the backup adds to downtime
    pass1_bytes_written: int
    final_bytes_written: int  # ~0 when only small live files changed
    final_bytes_compared: int  # live files read back while the app was stopped
    linked_from: str | None  # the backup unchanged files were hard-linked from
    complete: bool
    format: int = FORMAT

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["sources"] = [asdict(s) | {"notes": list(s.notes)} for s in self.sources]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BackupInfo:
        # Fields a newer rollhook added are ignored, so its backups stay usable here.
        known = {k: v for k, v in data.items() if k in _fields(cls)}
        sources = tuple(SourceInfo.from_json(s) for s in data["sources"])
        return cls(**{**known, "sources": sources})


@dataclass(frozen=True)
class RestoredSource:
    name: str
    path: str  # the live path that now equals the backup
    action: RestoreAction  # "absent": missing in the backup and still missing now
    aside: str | None  # where the data it replaced was set aside (kept until prune)
    files: int
    bytes: int


@dataclass(frozen=True)
class RestoreResult:
    backup_id: str
    sources: tuple[RestoredSource, ...]
    seconds: float
