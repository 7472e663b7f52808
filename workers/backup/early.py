"""The rollback's copy of the data, made from the backup's pass 1 while the app still runs.

A rollback puts the data back as the snapshot holds it, and the slow part of a restore is
the copy out of the backup. Once pass 1 is done the backup changes only by the final
pass, which writes just what the app changed since (a file it rewrites gets a new ctime,
one it replaces a new inode). So the copy is made in two halves:

- **from pass 1** (``copy``), before the app stops: each source's copy in the partial
  backup is copied next to the live path as ``<path>.rollhook-restore-<id>.pass1``, and
  the inode and ctime of every file copied is remembered (in this process only);
- **the final pass's delta** (``refresh``), once the snapshot is sealed, while the new
  version boots and is gated: the sealed backup is walked; a file whose inode and ctime
  are those remembered is kept, any other is copied again, and what the backup no longer
  holds is removed. The tree is then synced (syncfs) and renamed to the staged name
  ``<path>.rollhook-restore-<id>``, which a restore takes as complete.

A ``.pass1`` copy is never used as it is: only the staged name is, and it appears by one
rename once its content equals the sealed backup and is durable. A ``.pass1`` left by a
dead worker, or by a backup that was never sealed, is removed by the next ``copy`` (one
deployment of a target at a time), by ``discard_staged`` (the gate passed, or a rollback
restored), and by prune. A process that did not make the copy (no memory of what it
copied) never refreshes it: the restore copies the backup whole.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from workers import failpoints
from workers.backup import files
from workers.backup.files import parent_of
from workers.backup.restore import (
    STAGED,
    StagingCancelled,
    copy_tree,
    open_below,
    set_dir_meta,
    stage_copy,
)

EARLY = ".pass1"

Seen = dict[str, tuple[int, int]]  # rel -> (inode, ctime_ns) of the backup's file copied


@dataclass
class EarlyCopy:
    """What ``copy`` made for one backup: per source name, the files copied."""

    backup_id: str
    seen: dict[str, Seen] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)  # the .pass1 copies, for discard
    seconds: float = 0.0

    def discard(self) -> None:
        """The backup was never sealed (the deployment failed before it started)."""
        for path in self.paths:
            with contextlib.suppress(OSError):  # prune removes it later
                files.remove(path)
        self.paths.clear()
        self.seen.clear()


def early_name(staged: str) -> str:
    return f"{staged}{EARLY}"


def is_early(name: str) -> bool:
    return STAGED in name and name.endswith(EARLY)


def copy(origin: str, parent_fd: int, name: str, cancelled: Callable[[], bool]) -> Seen:
    """Copy the partial backup's ``origin`` to ``name`` under ``parent_fd``; returns what
    was copied. Synced now, while the app runs, so that ``refresh``'s sync before the
    rename has only the delta to write."""
    files.remove(name, dir_fd=parent_fd)  # a dead worker's, half-built or stale
    seen: Seen = {}
    top = os.lstat(origin)
    if stat.S_ISREG(top.st_mode):
        files.copy_file(origin, name, sync=False, dst_dir_fd=parent_fd)
        seen[""] = (top.st_ino, top.st_ctime_ns)
    elif stat.S_ISDIR(top.st_mode):
        copy_tree(origin, parent_fd, name, top, cancelled, seen=seen)
    failpoints.reach(failpoints.EARLY_COPY)
    files.syncfs(parent_fd)
    return seen


def refresh(
    origin: str,
    parent_fd: int,
    early: str,
    staged: str,
    *,
    seen: Seen,
    cancelled: Callable[[], bool],
) -> None:
    """Bring the ``early`` copy to what the sealed backup's ``origin`` holds, sync it and
    rename it to ``staged``. Anything unexpected (a file source, a kind that changed)
    falls back to a whole copy (``stage_copy``)."""
    top = os.lstat(origin)
    kept = os.stat(early, dir_fd=parent_fd, follow_symlinks=False)
    if not (stat.S_ISDIR(top.st_mode) and stat.S_ISDIR(kept.st_mode)):
        files.remove(early, dir_fd=parent_fd)
        stage_copy(origin, parent_fd, staged, cancelled)
        return
    root = files.open_dir(early, dir_fd=parent_fd)
    try:
        _apply_delta(origin, root, top, seen, cancelled)
    finally:
        os.close(root)
    files.syncfs(parent_fd)
    os.rename(early, staged, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
    os.fsync(parent_fd)


def _apply_delta(
    origin: str, root: int, top: os.stat_result, seen: Seen, cancelled: Callable[[], bool]
) -> None:
    wanted: set[str] = set()
    dirs = {"": top}
    here, fd = "", os.dup(root)
    try:
        for entry in files.scan(origin):
            if cancelled():
                raise StagingCancelled(origin)
            parent = parent_of(entry.rel) or ""
            if parent != here:
                os.close(fd)
                fd = -1
                fd = open_below(root, parent)
                here = parent
            wanted.add(entry.rel)
            if stat.S_ISDIR(entry.st.st_mode):
                dirs[entry.rel] = entry.st
            _bring(entry, fd, seen)
    finally:
        if fd >= 0:
            os.close(fd)
    _remove_extra(root, wanted)
    set_dir_meta(root, dirs)


def _bring(entry: files.Entry, fd: int, seen: Seen) -> None:
    """One entry of the sealed backup into the copy's directory ``fd``."""
    st, name = entry.st, entry.name
    try:
        have: os.stat_result | None = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        have = None
    if stat.S_ISDIR(st.st_mode):
        if have is None or not stat.S_ISDIR(have.st_mode):
            files.remove(name, dir_fd=fd)
            os.mkdir(name, 0o700, dir_fd=fd)
    elif stat.S_ISREG(st.st_mode):
        same = seen.get(entry.rel) == (st.st_ino, st.st_ctime_ns)
        if same and have is not None and stat.S_ISREG(have.st_mode):
            return  # untouched by the final pass since it was copied
        files.remove(name, dir_fd=fd)
        files.copy_file(name, name, sync=False, src_dir_fd=entry.dir_fd, dst_dir_fd=fd)
    elif stat.S_ISLNK(st.st_mode):
        files.remove(name, dir_fd=fd)
        files.copy_symlink(name, name, st, src_dir_fd=entry.dir_fd, dst_dir_fd=fd)


def _remove_extra(root: int, wanted: set[str]) -> None:
    """What the backup no longer holds (removed by the final pass), shallowest first."""
    extra = sorted((e.rel for e in files.scan(root) if e.rel not in wanted), key=len)
    gone: list[str] = []
    for rel in extra:
        if any(rel.startswith(f"{g}/") for g in gone):
            continue  # went with its directory
        where = open_below(root, parent_of(rel) or "")
        try:
            files.remove(os.path.basename(rel), dir_fd=where)
        finally:
            os.close(where)
        gone.append(rel)
