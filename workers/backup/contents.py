"""What an off-host snapshot holds, said inside it: enough to restore onto an empty host.

A snapshot's tree mirrors the host: each source's data lies at its real path
(``/srv/anythingllm/storage/...``), and ``/.rollhook/manifest.json`` (``SnapshotContents``)
names the target and, per source, its name, the path configured for it and where its data
is in the tree. A new host whose records are empty reads that manifest from the snapshot
(``remote.Repository.contents``) and maps it onto the target's current sources with
:func:`place`: by source name first (``volume:anythingllm_storage`` keeps its name on any
host), else by the configured path.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from workers.backup.model import Source, SourceKind
from workers.errors import OperatorError

FORMAT = 1
MANIFEST_DIR = ".rollhook"
MANIFEST_PATH = f"/{MANIFEST_DIR}/manifest.json"  # inside a snapshot
TAG = "rollhook"
TARGET_TAG = "target="
PATH_TAG = "path="
SIZE_TAG = "size="

MatchedBy = Literal["name", "path", "mount"]


@dataclass(frozen=True)
class StagedSource:
    name: str
    path: str  # the host path as configured when the snapshot was taken
    location: str  # where its data lies in the snapshot's tree: its real path then
    kind: SourceKind  # "missing": nothing was there; the snapshot holds nothing for it
    included_in: str | None  # the source whose directory holds it (the .env in storage/)
    files: int
    bytes: int
    databases: tuple[str, ...]  # relative paths copied with SQLite's online backup API
    notes: tuple[str, ...] = ()
    mount: str | None = None  # where the service saw it (its container path), if known

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StagedSource:
        known = {k: v for k, v in data.items() if k in {f.name for f in fields(cls)}}
        known["databases"] = tuple(data.get("databases", ()))
        known["notes"] = tuple(data.get("notes", ()))
        source = cls(**known)
        _check_location(source.location)
        return source


@dataclass(frozen=True)
class SnapshotContents:
    target: str
    created_at: str  # ISO 8601, UTC: when staging began
    sources: tuple[StagedSource, ...]
    format: int = FORMAT

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["sources"] = [
            asdict(s) | {"databases": list(s.databases), "notes": list(s.notes)}
            for s in self.sources
        ]
        return data

    @classmethod
    def from_json(cls, data: Any) -> SnapshotContents:
        try:
            sources = tuple(StagedSource.from_json(s) for s in data["sources"])
            return cls(str(data["target"]), str(data["created_at"]), sources, int(data["format"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise OperatorError(f"not a rollhook snapshot manifest: {exc}") from exc

    def tags(self) -> list[str]:
        """``rollhook``, ``target=<name>``, ``path=<host path>`` per source, ``size=<bytes>``.

        restic splits a tag list at commas, so a path holding one is left to the manifest.
        The size (of the sources' files) lets a listing show it without a ``restic stats``
        per snapshot: restic 0.14 keeps no size with a snapshot.
        """
        tags = [TAG, f"{TARGET_TAG}{self.target}"]
        tags += [f"{PATH_TAG}{s.path}" for s in self.sources if "," not in s.path]
        tags.append(f"{SIZE_TAG}{sum(s.bytes for s in self.sources)}")
        return tags


def target_tags(target: str) -> list[str]:
    """The tags that select one target's snapshots."""
    return [TAG, f"{TARGET_TAG}{target}"]


@dataclass(frozen=True)
class Placement:
    """One of the target's current sources and what a snapshot holds for it."""

    source: Source
    held: StagedSource | None  # None: the snapshot has no such source
    matched_by: MatchedBy | None

    def origin(self, scratch: Path) -> Path | None:
        """Where a restore into ``scratch`` put this source's data; None if it holds none."""
        if self.held is None or self.held.kind == "missing":
            return None
        return scratch / self.held.location.lstrip("/")


def place(
    contents: SnapshotContents,
    sources: Sequence[Source],
    mounts: Mapping[str, str] | None = None,
) -> tuple[list[Placement], list[StagedSource]]:
    """Map a snapshot's sources onto the target's current ones.

    Returns a placement per current source (in their order) and the snapshot's sources
    that none of them took (the target no longer has them). A source is matched by name,
    else by its configured path, else by its mount point (``mounts``: the current
    sources' by name); each snapshot source is used once, and every source is matched
    by name and path before any by mount point.
    """
    free = list(contents.sources)
    found: dict[int, tuple[StagedSource, MatchedBy]] = {}
    for n, source in enumerate(sources):
        path = posixpath.normpath(str(source.path))
        held = _take(free, lambda s: s.name == source.name)  # noqa: B023 - used at once
        if held is not None:
            found[n] = (held, "name")
            continue
        held = _take(free, lambda s: posixpath.normpath(s.path) == path)  # noqa: B023
        if held is not None:
            found[n] = (held, "path")
    for n, source in enumerate(sources):
        mount = (mounts or {}).get(source.name)
        if n not in found and mount is not None:
            held = _take(free, lambda s: s.mount == mount)  # noqa: B023
            if held is not None:
                found[n] = (held, "mount")
    placements = [
        Placement(s, *found[n]) if n in found else Placement(s, None, None)
        for n, s in enumerate(sources)
    ]
    return placements, free


def _take(free: list[StagedSource], match: Callable[[StagedSource], bool]) -> StagedSource | None:
    for i, staged in enumerate(free):
        if match(staged):
            return free.pop(i)
    return None


def _check_location(location: str) -> None:
    """A location names a place in the tree: absolute, normalised, never above its root."""
    if not location.startswith("/") or posixpath.normpath(location) != location:
        raise OperatorError(f"not a rollhook snapshot manifest: bad location {location!r}")
