"""Data from elsewhere made into a complete backup: a remote snapshot, restored here.

``BackupStore.adopt(backup_id, fill)`` claims ``<id>.partial`` as a backup being written
(so prune leaves it alone while this process lives), lets ``fill`` write into an empty
``incoming/`` directory inside it (a ``restic restore``) and say where each of the
target's sources lies in what it wrote, then moves every source's data into ``data/<n>``
by rename, never copying, and seals the backup as ``store.start``/``finish`` would: a
manifest, one syncfs, one rename. From then on it is an ordinary backup, restored by
``BackupStore.restore`` with all its checks.

A source whose data lies inside another's (anything-llm's ``storage/.env``) stays in
that directory, where the restore of the directory puts it back, and gets a linked copy
of its own for the manifest.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from workers.backup import files
from workers.backup.files import join
from workers.backup.model import FORMAT, BackupInfo, Source, SourceInfo, SourceKind
from workers.backup.running import INDEX, MANIFEST
from workers.errors import InfrastructureError

INCOMING = "incoming"

Fill = Callable[[Path], Sequence[tuple[Source, Path | None]]]


def seal(partial: Path, final: Path, backup_id: str, fill: Fill, note: str) -> BackupInfo:
    """Fill ``partial`` and rename it to ``final``; ``partial`` exists, empty but for data/."""
    began = time.monotonic()
    created_at = _now()
    incoming = partial / INCOMING
    try:
        incoming.mkdir(mode=0o700)
    except OSError as exc:
        raise InfrastructureError(f"cannot create {incoming}: {exc.strerror}") from exc
    placed = list(fill(incoming))
    origins = [str(origin) for _, origin in placed if origin is not None]
    infos: list[SourceInfo] = []
    for n, (source, origin) in enumerate(placed):
        dest = str(partial / "data" / str(n))
        if origin is None or not os.path.lexists(origin):
            infos.append(_info(source, n, "missing", note=note))
            continue
        nested = any(_inside(str(origin), other) for other in origins)
        try:
            if nested:
                link_copy(str(origin), dest)
            else:
                os.rename(origin, dest)
            kind, count, dirs, links, size = _measure(dest)
        except OSError as exc:
            raise InfrastructureError(f"cannot adopt {origin}: {exc.strerror}") from exc
        infos.append(
            _info(source, n, kind, count=count, dirs=dirs, links=links, size=size, note=note)
        )
    try:
        files.remove(str(incoming))
        info = BackupInfo(
            id=backup_id,
            created_at=created_at,
            finished_at=_now(),
            sources=tuple(infos),
            files=sum(s.files for s in infos),
            bytes_copied=sum(s.bytes_copied for s in infos),
            bytes_linked=0,
            pass1_seconds=round(time.monotonic() - began, 3),
            final_seconds=0.0,
            pass1_bytes_written=sum(s.bytes_copied for s in infos),
            final_bytes_written=0,
            final_bytes_compared=0,
            linked_from=None,
            complete=True,
        )
        _write(partial / INDEX, {"format": FORMAT, "sources": {}})  # nothing to link to
        _write(partial / MANIFEST, info.to_json())
        fd = os.open(partial, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            files.syncfs(fd)
        finally:
            os.close(fd)
        os.rename(partial, final)
        files.fsync_path(str(final.parent))
    except OSError as exc:
        raise InfrastructureError(f"cannot seal backup {final}: {exc.strerror}") from exc
    return info


def _info(
    source: Source,
    n: int,
    kind: SourceKind,
    *,
    count: int = 0,
    dirs: int = 0,
    links: int = 0,
    size: int = 0,
    note: str,
) -> SourceInfo:
    return SourceInfo(
        name=source.name,
        path=str(source.path),
        kind=kind,
        dir=f"data/{n}",
        files=count,
        dirs=dirs,
        symlinks=links,
        bytes_copied=size,
        bytes_linked=0,
        notes=(note,),
    )


def _inside(path: str, other: str) -> bool:
    return path != other and path.startswith(other.rstrip("/") + "/")


def link_copy(origin: str, dest: str) -> None:
    top = os.lstat(origin)
    if not stat.S_ISDIR(top.st_mode):
        os.link(origin, dest, follow_symlinks=False)
        return
    os.mkdir(dest, 0o700)
    for entry in files.scan(origin):
        out = join(dest, entry.rel)
        if stat.S_ISDIR(entry.st.st_mode):
            os.mkdir(out, 0o700)
        else:
            os.link(entry.name, out, src_dir_fd=entry.dir_fd, follow_symlinks=False)
    files.set_dir_meta(dest, top)


def _measure(path: str) -> tuple[SourceKind, int, int, int, int]:
    """Kind, files, directories, symlinks and bytes of a source's data."""
    top = os.lstat(path)
    if not stat.S_ISDIR(top.st_mode):
        return "file", 1, 0, 0, top.st_size
    count = dirs = links = size = 0
    for entry in files.scan(path):
        mode = entry.st.st_mode
        if stat.S_ISDIR(mode):
            dirs += 1
        elif stat.S_ISLNK(mode):
            links += 1
        elif stat.S_ISREG(mode):
            count += 1
            size += entry.st.st_size
    return "dir", count, dirs, links, size


def _write(path: Path, data: object) -> None:
    with open(path, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=1)
        out.flush()
        os.fsync(out.fileno())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
