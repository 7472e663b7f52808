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
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

from workers.backup import files
from workers.backup.files import join
from workers.backup.model import (
    BackupInfo,
    RestoreAction,
    RestoredSource,
    RestoreResult,
    SourceInfo,
)
from workers.errors import InfrastructureError

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

ASIDE = ".rollhook-aside-"
STAGED = ".rollhook-restore-"


@dataclass(frozen=True)
class _Plan:
    source: SourceInfo
    live: str  # a symlink at the source path is followed, as at backup time
    origin: str | None  # its copy in the backup; None when it was missing then
    staged: str


class Restorer:
    def __init__(self, backup_dir: Path, info: BackupInfo) -> None:
        self.info = info
        self.backup_dir = backup_dir

    def run(self) -> RestoreResult:
        began = time.monotonic()
        plans = [self._plan(s) for s in self.info.sources]
        nested = {p.source.name for p in plans if _container(p, plans) is not None}
        todo = [p for p in plans if p.source.name not in nested]
        self._check_space([p for p in todo if p.origin and not os.path.lexists(p.staged)])
        for plan in todo:
            # A staged copy left by an interrupted run is complete (it is renamed into
            # that name only once synced) and the backup never changes: reuse it.
            if plan.origin is not None and not os.path.lexists(plan.staged):
                self._io(plan.staged, _stage, plan.origin, plan.staged)
        swapped = {p.source.name: self._swap(p) for p in todo}
        results = tuple(
            swapped[p.source.name] if p.source.name in swapped else self._included(p) for p in plans
        )
        seconds = time.monotonic() - began
        log.info("restored backup %s in %.1fs", self.info.id, seconds)
        return RestoreResult(backup_id=self.info.id, sources=results, seconds=round(seconds, 3))

    @staticmethod
    def _included(plan: _Plan) -> RestoredSource:
        # anything-llm's documented layout mounts <storage>/.env as a file *and* <storage>
        # as a directory: the directory's restore brings the file back with it (both were
        # copied in the same final pass), and swapping the file too would put a stale
        # staged copy or an aside inside the freshly restored directory.
        src = plan.source
        size = src.bytes_copied + src.bytes_linked
        return RestoredSource(src.name, plan.live, "included", None, src.files, size)

    def _plan(self, source: SourceInfo) -> _Plan:
        live = os.path.realpath(source.path)
        origin = None if source.kind == "missing" else str(self.backup_dir / source.dir)
        if origin is not None and not os.path.lexists(origin):
            raise InfrastructureError(f"backup {self.info.id} lacks its copy of {source.path}")
        return _Plan(source, live, origin, f"{live}{STAGED}{self.info.id}")

    def _swap(self, plan: _Plan) -> RestoredSource:
        """Set the live data aside and put the staged copy in its place.

        Every source is swapped on every run, also one an interrupted run had already
        swapped: nothing here can tell whether the app ran since, so only a full swap
        guarantees the result (the redundant aside copy costs space until prune).
        """
        live = plan.live
        base = f"{live}{ASIDE}{self.info.id}"
        aside: str | None
        if os.path.lexists(live):
            aside = _free_name(base)
            log.info("restore %s: setting %s aside as %s", self.info.id, live, aside)
            set_aside(live, aside)
        elif plan.origin is not None and os.path.lexists(plan.staged):
            aside = _last_name(base)  # an interrupted run set it aside, if anything
        else:
            aside = None
        if plan.origin is not None:
            put_in_place(plan.staged, live)
        parent = os.path.dirname(live)
        self._io(parent, files.fsync_path, parent)
        action: RestoreAction
        if plan.origin is None:
            action = "removed" if aside else "absent"
        else:
            action = "replaced" if aside else "recreated"
        src = plan.source
        count, size = (src.files, src.bytes_copied + src.bytes_linked) if plan.origin else (0, 0)
        log.info("restore %s: %s %s", self.info.id, action, live)
        return RestoredSource(src.name, live, action, aside, count, size)

    def _check_space(self, plans: Iterable[_Plan]) -> None:
        """Refuse before touching anything when a staged copy cannot fit."""
        need: dict[int, tuple[str, int]] = {}
        for plan in plans:
            where = _existing_ancestor(os.path.dirname(plan.live))
            dev = self._io(where, os.stat, where).st_dev
            size = plan.source.bytes_copied + plan.source.bytes_linked
            size += 4096 * (plan.source.dirs + plan.source.files)
            need[dev] = (where, need.get(dev, (where, 0))[1] + size)
        for where, size in need.values():
            free = shutil.disk_usage(where).free
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


def set_aside(live: str, aside: str) -> None:
    try:
        os.rename(live, aside)
    except OSError as exc:
        raise InfrastructureError(f"cannot move {live} aside: {exc.strerror}") from exc


def put_in_place(staged: str, live: str) -> None:
    try:
        os.rename(staged, live)
    except OSError as exc:
        raise InfrastructureError(f"cannot move {staged} to {live}: {exc.strerror}") from exc


def _stage(origin: str, staged: str) -> None:
    """A full, synced copy of a backed-up source, renamed to ``staged`` once complete."""
    tmp = f"{staged}.partial"
    parent = os.path.dirname(staged)
    files.remove(tmp)  # a crash left it half-built
    os.makedirs(parent, exist_ok=True)
    # Opened before copying, so that syncfs on it reports write-back errors of the copy.
    parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        top = os.lstat(origin)
        if stat.S_ISREG(top.st_mode):
            files.copy_file(origin, tmp)
        else:
            _copy_tree(origin, tmp, top)
            files.syncfs(parent_fd)
        os.rename(tmp, staged)
        os.fsync(parent_fd)
    finally:
        os.close(parent_fd)


def _copy_tree(origin: str, tmp: str, top: os.stat_result) -> None:
    os.mkdir(tmp, 0o700)
    dirs = {"": top}
    for rel, st in files.walk(origin):
        src, dst = join(origin, rel), join(tmp, rel)
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(dst, 0o700)
            dirs[rel] = st
        elif stat.S_ISLNK(st.st_mode):
            files.copy_symlink(src, dst, st)
        elif stat.S_ISREG(st.st_mode):
            files.copy_file(src, dst, sync=False)
    # Directory metadata last and deepest first: adding an entry moves a dir's mtime.
    for rel in sorted(dirs, key=lambda r: r.count("/") + bool(r), reverse=True):
        files.set_dir_meta(join(tmp, rel), dirs[rel])


def _container(plan: _Plan, plans: Iterable[_Plan]) -> _Plan | None:
    """Another restored directory source that holds this source's path, if any."""
    for other in plans:
        holds = other.origin is not None and other.source.kind == "dir"
        if holds and plan.live.startswith(other.live + "/"):
            return other
    return None


def _free_name(base: str) -> str:
    """``base``, or ``base.2``, ``base.3``...: a second restore keeps the first's aside copy."""
    name, n = base, 1
    while os.path.lexists(name):
        n += 1
        name = f"{base}.{n}"
    return name


def _last_name(base: str) -> str | None:
    """The newest of ``base``, ``base.2``, ``base.3``... that exists."""
    last, n = None, 1
    name = base
    while os.path.lexists(name):
        last, n = name, n + 1
        name = f"{base}.{n}"
    return last


def _existing_ancestor(path: str) -> str:
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def find_leftovers(paths: Iterable[str]) -> Iterator[tuple[str, str]]:
    """Set-aside and staged copies next to these source paths, with their backup ids."""
    for path in paths:
        live = os.path.realpath(path)
        parent, name = os.path.split(live)
        try:
            entries = list(os.scandir(parent))
        except OSError:
            continue
        for entry in entries:
            for marker in (ASIDE, STAGED):
                prefix = f"{name}{marker}"
                if entry.name.startswith(prefix):
                    yield entry.path, entry.name[len(prefix) :].split(".")[0]
