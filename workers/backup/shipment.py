"""A deployment's backup made ready to leave the host: staged by hard links, not copied.

A deployment backup (``store``) is the data as the old version left it, taken with the
app stopped: the copy worth sending off-host before an upgrade. Its files are rollhook's
own and never written again, so the stage links to them instead of copying: staging a
1 GB backup costs a directory walk. The stage looks like any other (``staging``): each
source at its recorded real path under ``tree/``, the manifest beside them, and the link
index of the backup (live inode and ctime per file, the same format), so the next stage
built from the live data links what did not change since.

The backup's tree is walked by descriptor without following links, like everything
else: a symlink the app planted in its data was copied into the backup as a link and is
staged as one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
import stat
from collections.abc import Mapping
from pathlib import Path

from workers.backup import files, paths
from workers.backup.contents import MANIFEST_DIR, SnapshotContents, StagedSource
from workers.backup.files import join
from workers.backup.model import BackupInfo, SourceInfo
from workers.backup.running import INDEX as BACKUP_INDEX
from workers.backup.staging import (
    INDEX,
    INDEX_FORMAT,
    NEXT,
    OLD,
    TREE,
    Stage,
    Staged,
    _io,
    _write_json,
)
from workers.errors import InfrastructureError


def stage_backup(
    stage: Stage,
    target: str,
    backup_dir: Path,
    info: BackupInfo,
    mounts: Mapping[str, str] | None = None,
) -> Staged:
    """Stage the complete backup in ``backup_dir``; the result holds the stage's lock."""
    lock_fd = stage._lock()
    try:
        return Staged(stage.root / TREE, *_build(stage, target, backup_dir, info, mounts), lock_fd)
    except BaseException:
        os.close(lock_fd)
        raise


def _build(
    stage: Stage,
    target: str,
    backup_dir: Path,
    info: BackupInfo,
    mounts: Mapping[str, str] | None,
) -> tuple[tuple[str, ...], SnapshotContents]:
    root = str(stage.root)
    tree, nxt = join(root, TREE), join(root, NEXT)
    for entry in _io("list", root, os.listdir, root):
        if entry == NEXT or entry.startswith(OLD):
            _io("remove", join(root, entry), files.remove, join(root, entry))
    root_fd = _io("open", root, os.open, root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _io("create", nxt, os.mkdir, nxt, 0o700)
        staged: list[StagedSource] = []
        for source in sorted(info.sources, key=lambda s: _location(s).count("/")):
            staged.append(_source(source, backup_dir, nxt, staged))
        staged = [dataclasses.replace(s, mount=(mounts or {}).get(s.name)) for s in staged]
        contents = SnapshotContents(
            target, info.created_at, tuple(sorted(staged, key=lambda s: s.name))
        )
        _write_json(join(nxt, f"{MANIFEST_DIR}/manifest.json"), contents.to_json())
        _write_json(join(nxt, INDEX), {"format": INDEX_FORMAT, "sources": _index(backup_dir)})
        _io("sync", root, files.syncfs, root_fd)
        stage._swap(root, tree, nxt)
    finally:
        os.close(root_fd)
    located = [
        s.location.lstrip("/")
        for s in contents.sources
        if s.kind != "missing" and s.included_in is None
    ]
    return (MANIFEST_DIR, *sorted(located)), contents


def _location(source: SourceInfo) -> str:
    return posixpath.normpath(source.resolved or source.path)


def _source(
    source: SourceInfo, backup_dir: Path, nxt: str, staged: list[StagedSource]
) -> StagedSource:
    location = _location(source)
    size = source.bytes_copied + source.bytes_linked
    holder = next(
        (
            s
            for s in staged
            if s.kind != "missing"
            and s.included_in is None
            and paths.within(location, s.location)
            and os.path.lexists(nxt + location)
        ),
        None,
    )
    if source.kind == "missing" or holder is not None:
        return StagedSource(
            source.name,
            source.path,
            location,
            source.kind,
            holder.name if holder is not None else None,
            source.files if holder is not None else 0,
            size if holder is not None else 0,
            (),
            source.notes,
        )
    origin = str(backup_dir / source.dir)
    dest = nxt + location
    parent = os.path.dirname(dest)
    _io("create", parent, os.makedirs, parent, 0o700, exist_ok=True)
    top = _io("read", origin, os.lstat, origin)
    if stat.S_ISREG(top.st_mode):
        _io("link", dest, os.link, origin, dest, follow_symlinks=False)
    else:
        _link_tree(origin, dest, top)
    return StagedSource(
        source.name, source.path, location, source.kind, None, source.files, size, (), source.notes
    )


def _link_tree(origin: str, dest: str, top: os.stat_result) -> None:
    """``dest`` mirrors the backup's tree ``origin``: directories made, files linked."""
    _io("create", dest, os.mkdir, dest, 0o700)
    dirs = {"": top}
    try:
        for entry in files.scan(origin):
            st, out = entry.st, join(dest, entry.rel)
            if stat.S_ISDIR(st.st_mode):
                os.mkdir(out, 0o700)
                dirs[entry.rel] = st
            elif stat.S_ISLNK(st.st_mode):
                files.copy_symlink(entry.name, out, st, src_dir_fd=entry.dir_fd)
            elif stat.S_ISREG(st.st_mode):
                os.link(entry.name, out, src_dir_fd=entry.dir_fd, follow_symlinks=False)
    except OSError as exc:
        raise InfrastructureError(f"cannot stage {origin}: {exc.strerror}") from exc
    # Directory metadata last and deepest first: adding an entry moves a dir's mtime.
    for rel in sorted(dirs, key=lambda r: r.count("/") + bool(r), reverse=True):
        where = join(dest, rel)
        _io("set metadata on", where, files.set_dir_meta, where, dirs[rel])


def _index(backup_dir: Path) -> dict[str, object]:
    """The backup's link index: what the next live stage may link to (none if unreadable)."""
    try:
        data = json.loads((backup_dir / BACKUP_INDEX).read_text())
        sources = data["sources"]
    except (OSError, ValueError, TypeError, KeyError):
        return {}
    return sources if isinstance(sources, dict) else {}
