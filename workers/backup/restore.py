"""Restoring a backup by rename, so that a source is never half old and half new.

For each source, a full copy of the backup (copies, never links into the backup) is
staged next to the live path, on the same filesystem: ``<path>.rollhook-restore-<id>``,
built as ``….partial`` and renamed once synced. Then the live path is renamed aside to
``<path>.rollhook-aside-<id>`` (kept for forensics until prune) and the staged copy is
renamed into place. All sources are staged before any is swapped, so the swaps follow
each other within milliseconds.

A restore that crashed midway is finished by running it again: a complete staged copy
is reused, a half-built one rebuilt, a source set aside but not yet replaced gets its
copy, and a source already swapped is swapped again (nothing can tell whether the app
ran since, and the result must equal the backup).

The live data is the app's, and the app may have left symlinks in it. A restore writes
only where the backup was taken: every source path must still lead (``paths.resolve``)
to the real path recorded in the backup, with no symlink inside another source's data on
the way; otherwise it changes nothing at all and raises ``UnsafeSymlink``. A source
inside another one (anything-llm's ``storage/.env``; nesting is decided on the recorded
real paths) comes back with that directory and is never touched by itself. The rest
happens relative to each source's open parent directory: renames, the staged copy, the
fsync; a directory swapped for a symlink meanwhile is not followed.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from workers import failpoints
from workers.backup import files, paths
from workers.backup.files import join, parent_of
from workers.backup.model import (
    BackupInfo,
    RestoreAction,
    RestoredSource,
    RestoreResult,
    SourceInfo,
)
from workers.errors import InfrastructureError

if TYPE_CHECKING:
    from workers.backup.early import EarlyCopy

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

ASIDE = ".rollhook-aside-"
STAGED = ".rollhook-restore-"
# A copy made while the app still runs (stage_early) leaves this share of the disk free.
EARLY_HEADROOM = 0.05


@dataclass
class _Plan:
    source: SourceInfo
    live: str  # the real path the source was backed up from, and still leads to
    origin: str | None  # its copy in the backup; None when it was missing then
    at: paths.Resolved  # where the source path leads now, held open
    parent_fd: int | None  # the live path's parent, open; None while it does not exist
    nested: bool = False  # inside another source: restored as part of it

    @property
    def name(self) -> str:
        return self.at.name

    @property
    def parent(self) -> str:
        return os.path.dirname(self.live)


class Restorer:
    def __init__(self, backup_dir: Path, info: BackupInfo) -> None:
        self.info = info
        self.backup_dir = backup_dir

    def run(self) -> RestoreResult:
        began = time.monotonic()
        with ExitStack() as held:
            plans = self._plans(held)  # every check, before anything changes
            todo = [p for p in plans if not p.nested]
            self._stage_all(todo, held, lambda: False)
            failpoints.reach(failpoints.RESTORE_SWAP)
            swapped = {p.source.name: self._swap(p) for p in todo}
        results = tuple(
            swapped[p.source.name] if p.source.name in swapped else self._included(p) for p in plans
        )
        seconds = time.monotonic() - began
        log.info("restored backup %s in %.1fs", self.info.id, seconds)
        return RestoreResult(backup_id=self.info.id, sources=results, seconds=round(seconds, 3))

    def stage(self, cancelled: Callable[[], bool], early: EarlyCopy | None = None) -> int:
        """Only stage the copies (same checks as ``run``), for a later ``run`` that then
        only swaps them in. Returns how many were copied now (the rest were staged).
        ``early``: what was copied from this backup's pass 1 (``workers.backup.early``);
        only the final pass's changes are copied into it.
        """
        with ExitStack() as held:
            plans = self._plans(held)
            return self._stage_all([p for p in plans if not p.nested], held, cancelled, early)

    def stage_early(self, cancelled: Callable[[], bool]) -> EarlyCopy:
        """From a backup between its passes (``backup_dir`` is the partial one, ``info``
        what pass 1 found): copy each source next to its live path as ``.pass1``."""
        from workers.backup import early  # noqa: PLC0415 (it builds on this module)

        made = early.EarlyCopy(self.info.id)
        with ExitStack() as held:
            plans = [p for p in self._plans(held) if not p.nested]
            self._discard_early(plans)
            # The old version still serves and writes there: leave it room.
            self._check_space([p for p in plans if p.origin], headroom=EARLY_HEADROOM)
            for plan in plans:
                if plan.origin is None:
                    continue
                parent = self._make_parent(plan, held)
                name = early.early_name(self._staged(plan))
                path = join(plan.parent, name)
                made.paths.append(path)
                made.seen[plan.source.name] = self._io(
                    path, early.copy, plan.origin, parent, name, cancelled
                )
        return made

    def _discard_early(self, plans: list[_Plan]) -> None:
        """``.pass1`` copies beside these sources, of any backup: a dead worker's (one
        deployment of a target runs at a time, and they are never used as they are)."""
        from workers.backup.early import is_early  # noqa: PLC0415

        for plan in plans:
            if plan.parent_fd is None:
                continue
            names = self._io(plan.parent, os.listdir, plan.parent_fd)
            for name in names:
                if name.startswith(f"{plan.name}{STAGED}") and is_early(name):
                    self._io(join(plan.parent, name), files.remove, name, dir_fd=plan.parent_fd)

    def _stage_all(
        self,
        todo: list[_Plan],
        held: ExitStack,
        cancelled: Callable[[], bool],
        early: EarlyCopy | None = None,
    ) -> int:
        from workers.backup import early as halves  # noqa: PLC0415 (it builds on this module)

        ahead = early.seen if early is not None and early.backup_id == self.info.id else {}

        def half_made(plan: _Plan) -> bool:
            return plan.source.name in ahead and self._has(
                plan, halves.early_name(self._staged(plan))
            )

        self._check_space(
            [p for p in todo if p.origin and not self._is_staged(p) and not half_made(p)]
        )
        copied = 0
        for plan in todo:
            # A staged copy left by an interrupted run, or staged ahead of a rollback, is
            # complete (it is renamed into that name only once synced) and the backup never
            # changes: reuse it.
            if plan.origin is not None and not self._is_staged(plan):
                parent = self._make_parent(plan, held)
                staged = self._staged(plan)
                where = join(plan.parent, staged)
                if half_made(plan):
                    seen = ahead[plan.source.name]
                    first = halves.early_name(staged)
                    self._io(
                        where,
                        halves.refresh,
                        plan.origin,
                        parent,
                        first,
                        staged,
                        seen=seen,
                        cancelled=cancelled,
                    )
                else:
                    self._io(where, stage_copy, plan.origin, parent, staged, cancelled)
                copied += 1
        return copied

    def discard_staged(self) -> list[str]:
        """Remove the copies staged for this backup (and half-built ones); return them."""
        removed = []
        for path, owner in find_leftovers(restored_places(self.info)):
            if owner == self.info.id and STAGED in os.path.basename(path):
                self._io(path, files.remove, path)
                removed.append(path)
        return removed

    @staticmethod
    def _included(plan: _Plan) -> RestoredSource:
        # anything-llm's documented layout mounts <storage>/.env as a file *and* <storage>
        # as a directory: the directory's restore brings the file back with it (both were
        # copied in the same final pass), and swapping the file too would put a stale
        # staged copy or an aside inside the freshly restored directory.
        src = plan.source
        size = src.bytes_copied + src.bytes_linked
        return RestoredSource(src.name, plan.live, "included", None, src.files, size)

    def _plans(self, held: ExitStack) -> list[_Plan]:
        """Where each source goes; refuses (changing nothing) what the rule forbids."""
        sources = self.info.sources
        recorded = {s.resolved for s in sources if s.resolved}
        try:
            roots = paths.settle([s.path for s in sources], recorded)
        except paths.UnsafeSymlink as exc:
            raise paths.UnsafeSymlink(self._refused(str(exc))) from exc
        plans = []
        for source in sources:
            try:
                at = paths.resolve(source.path, roots)
            except paths.UnsafeSymlink as exc:  # planted since the check just above
                raise paths.UnsafeSymlink(self._refused(str(exc))) from exc
            except OSError as exc:
                raise InfrastructureError(
                    f"restore of backup {self.info.id}: cannot resolve {source.path}: "
                    f"{exc.strerror}; nothing was changed"
                ) from exc
            held.callback(at.close)
            # Backups from before the real path was recorded: where it leads now.
            live = source.resolved or at.path
            if at.path != live:
                raise paths.UnsafeSymlink(
                    self._refused(
                        f"{source.path} now leads to {at.path}, not to {live} where it was "
                        "backed up: a symlink on the way changed since"
                    )
                )
            origin = None if source.kind == "missing" else str(self.backup_dir / source.dir)
            if origin is not None and not os.path.lexists(origin):
                raise InfrastructureError(f"backup {self.info.id} lacks its copy of {source.path}")
            parent_fd = at.dir_fd if at.parent_exists else None
            plans.append(_Plan(source, live, origin, at, parent_fd))
        for plan in plans:
            plan.nested = any(_inside(plan.live, other.live) for other in plans)
        return plans

    def _refused(self, why: str) -> str:
        return f"restore of backup {self.info.id} refused: {why}; nothing was changed"

    def _staged(self, plan: _Plan) -> str:
        return f"{plan.name}{STAGED}{self.info.id}"

    def _is_staged(self, plan: _Plan) -> bool:
        return self._has(plan, self._staged(plan))

    def _has(self, plan: _Plan, name: str) -> bool:
        if plan.parent_fd is None:
            return False
        return self._io(plan.parent, files.exists, name, dir_fd=plan.parent_fd)

    def _make_parent(self, plan: _Plan, held: ExitStack) -> int:
        """The live path's parent, created if missing (a source recreated from scratch)."""
        if plan.parent_fd is None:
            at = plan.at
            fd = self._io(plan.parent, paths.open_dirs, at.dir_fd, at.rest[:-1], create=True)
            held.callback(os.close, fd)
            plan.parent_fd = fd
        return plan.parent_fd

    def _swap(self, plan: _Plan) -> RestoredSource:
        """Set the live data aside and put the staged copy in its place.

        Every source is swapped on every run, also one an interrupted run had already
        swapped: nothing here can tell whether the app ran since, so only a full swap
        guarantees the result (the redundant aside copy costs space until prune).
        """
        src, live, parent = plan.source, plan.live, plan.parent_fd
        if parent is None:  # no parent, so nothing there; and nothing to put there
            log.info("restore %s: absent %s", self.info.id, live)
            return RestoredSource(src.name, live, "absent", None, 0, 0)
        name, staged = plan.name, self._staged(plan)
        base = f"{name}{ASIDE}{self.info.id}"
        aside: str | None
        if self._io(live, files.exists, name, dir_fd=parent):
            aside = self._io(live, _free_name, parent, base)
            log.info("restore %s: setting %s aside as %s", self.info.id, live, aside)
            self._io(live, set_aside, parent, name, aside)
        elif plan.origin is not None and self._io(live, files.exists, staged, dir_fd=parent):
            aside = self._io(live, _last_name, parent, base)  # set aside by an interrupted run
        else:
            aside = None
        if plan.origin is not None:
            self._io(live, put_in_place, parent, staged, name)
        self._io(plan.parent, os.fsync, parent)
        action: RestoreAction
        if plan.origin is None:
            action = "removed" if aside else "absent"
        else:
            action = "replaced" if aside else "recreated"
        count, size = (src.files, src.bytes_copied + src.bytes_linked) if plan.origin else (0, 0)
        log.info("restore %s: %s %s", self.info.id, action, live)
        where = join(plan.parent, aside) if aside else None
        return RestoredSource(src.name, live, action, where, count, size)

    def _check_space(self, plans: Iterable[_Plan], headroom: float = 0.0) -> None:
        """Refuse before touching anything when a staged copy cannot fit, leaving
        ``headroom`` (a share of the filesystem) free after it."""
        need: dict[int, tuple[int, str, int]] = {}
        for plan in plans:
            fd, where = plan.at.dir_fd, plan.at.dir_path  # the deepest existing directory
            dev = self._io(where, os.fstat, fd).st_dev
            size = plan.source.bytes_copied + plan.source.bytes_linked
            size += 4096 * (plan.source.dirs + plan.source.files)
            need[dev] = (fd, where, need.get(dev, (fd, where, 0))[2] + size)
        for fd, where, size in need.values():
            usage = shutil.disk_usage(fd)
            free = usage.free - int(usage.total * headroom)
            if free < size:
                raise InfrastructureError(
                    f"restore of backup {self.info.id} needs {size >> 20} MiB next to the "
                    f"live data under {where}, {free >> 20} MiB free; nothing was changed"
                )

    @staticmethod
    def _io(path: str, fn: Callable[P, R], *args: P.args, **kw: P.kwargs) -> R:
        try:
            return fn(*args, **kw)
        except OSError as exc:
            raise InfrastructureError(f"restore: failed at {path}: {exc.strerror}") from exc


def set_aside(dir_fd: int, name: str, aside: str) -> None:
    os.rename(name, aside, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def put_in_place(dir_fd: int, staged: str, name: str) -> None:
    os.rename(staged, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


class StagingCancelled(Exception):
    """Staging ahead of a rollback was called off (the gate passed)."""


def stage_copy(
    origin: str, parent_fd: int, staged: str, cancelled: Callable[[], bool] = lambda: False
) -> None:
    """A full, synced copy of a backed-up source, renamed to ``staged`` once complete.

    ``parent_fd`` was opened before the copy, so that syncfs on it reports write-back
    errors of the copy.
    """
    tmp = f"{staged}.partial"
    files.remove(tmp, dir_fd=parent_fd)  # a crash left it half-built
    top = os.lstat(origin)
    if stat.S_ISREG(top.st_mode):
        files.copy_file(origin, tmp, dst_dir_fd=parent_fd)
    else:
        copy_tree(origin, parent_fd, tmp, top, cancelled)
        files.syncfs(parent_fd)
    os.rename(tmp, staged, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
    os.fsync(parent_fd)


def copy_tree(
    origin: str,
    parent_fd: int,
    tmp: str,
    top: os.stat_result,
    cancelled: Callable[[], bool] = lambda: False,
    *,
    seen: dict[str, tuple[int, int]] | None = None,
) -> None:
    """Copy the backup's tree ``origin`` to ``tmp`` under ``parent_fd``, all by fd;
    ``seen`` gets the inode and ctime of each file copied (as listed, before the copy)."""
    os.mkdir(tmp, 0o700, dir_fd=parent_fd)
    root = files.open_dir(tmp, dir_fd=parent_fd)
    try:
        dirs = {"": top}
        here, fd = "", os.dup(root)  # the copy's directory the entries being copied go to
        try:
            for entry in files.scan(origin):
                if cancelled():
                    raise StagingCancelled(origin)
                parent = parent_of(entry.rel) or ""
                if parent != here:  # scan yields a directory's entries one after another
                    os.close(fd)
                    fd = -1
                    fd = open_below(root, parent)
                    here = parent
                st, name = entry.st, entry.name
                if stat.S_ISDIR(st.st_mode):
                    os.mkdir(name, 0o700, dir_fd=fd)
                    dirs[entry.rel] = st
                elif stat.S_ISLNK(st.st_mode):
                    files.copy_symlink(name, name, st, src_dir_fd=entry.dir_fd, dst_dir_fd=fd)
                elif stat.S_ISREG(st.st_mode):
                    files.copy_file(name, name, sync=False, src_dir_fd=entry.dir_fd, dst_dir_fd=fd)
                    if seen is not None:
                        seen[entry.rel] = (st.st_ino, st.st_ctime_ns)
        finally:
            if fd >= 0:
                os.close(fd)
        set_dir_meta(root, dirs)
    finally:
        os.close(root)


def set_dir_meta(root: int, dirs: dict[str, os.stat_result]) -> None:
    """Give each copied directory below ``root`` its backed-up metadata: last and deepest
    first, since adding an entry moves a directory's mtime."""
    for rel in sorted(dirs, key=lambda r: r.count("/") + bool(r), reverse=True):
        fd = open_below(root, rel)
        try:
            files.set_file_meta(fd, dirs[rel])
        finally:
            os.close(fd)


def open_below(root: int, rel: str) -> int:
    """The directory ``rel`` below the open directory ``root`` (no symlink followed)."""
    return paths.open_dirs(root, rel.split("/") if rel else [], create=False)


def _inside(path: str, other: str) -> bool:
    """``path`` lies strictly below ``other`` (real paths, compared lexically)."""
    return path != other and paths.within(path, other)


def _free_name(dir_fd: int, base: str) -> str:
    """``base``, or ``base.2``, ``base.3``...: a second restore keeps the first's aside copy."""
    name, n = base, 1
    while files.exists(name, dir_fd=dir_fd):
        n += 1
        name = f"{base}.{n}"
    return name


def _last_name(dir_fd: int, base: str) -> str | None:
    """The newest of ``base``, ``base.2``, ``base.3``... that exists."""
    last, n = None, 1
    name = base
    while files.exists(name, dir_fd=dir_fd):
        last, n = name, n + 1
        name = f"{base}.{n}"
    return last


def restored_places(info: BackupInfo) -> list[str]:
    """The live paths a restore of this backup swaps: where its leftovers may lie.

    Never through a symlink the app may have planted: the real paths recorded in the
    backup (or, for older backups, resolved by the same rule), without the sources
    nested in another (never swapped by themselves).
    """
    recorded = {s.resolved for s in info.sources if s.resolved}
    roots = paths.settle([s.path for s in info.sources], recorded, strict=False)
    places = []
    for source in info.sources:
        if source.resolved:
            places.append(source.resolved)
            continue
        try:
            with paths.resolve(source.path, roots) as at:
                places.append(at.path)
        except (paths.UnsafeSymlink, OSError):
            continue  # a restore would refuse it too: it left nothing beside it
    return [p for p in places if not any(_inside(p, other) for other in places)]


def find_leftovers(places: Iterable[str]) -> Iterator[tuple[str, str]]:
    """Set-aside and staged copies next to these live paths, with their backup ids."""
    for path in places:
        parent, name = os.path.split(path)
        try:
            entries = list(os.scandir(parent))
        except OSError:
            continue
        for entry in entries:
            for marker in (ASIDE, STAGED):
                prefix = f"{name}{marker}"
                if entry.name.startswith(prefix):
                    yield entry.path, entry.name[len(prefix) :].split(".")[0]
