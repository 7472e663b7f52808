"""One source mirrored into a backup: the bulk pass while the app runs, the final pass once stopped.

Pass 1 copies everything (or hard-links it from the previous backup) and remembers, for
each file, the source's stat taken *before* its data was read. The final pass walks the
source again with the app stopped:

- a file that is not live is trusted when (size, mtime, inode, ctime) still match: a
  write during or after the pass-1 copy moves at least the ctime, which no program can
  set back;
- a live file (a SQLite database or companion, LanceDB's mutable metadata, the runtime
  ``.env``) is compared with its pass-1 copy chunk by chunk and patched, whatever its
  stat says: these are rewritten in place constantly, and a write landing in the same
  timestamp tick as our stat would otherwise go unnoticed;
- new entries are copied and vanished ones removed.

So the final pass costs a stat walk plus reading the live files, whatever the data size.
A file in the backup may be a hard link shared with an older backup: it is never written
in place, only replaced by rename.

The source is read as the app may have left it: its path is resolved by the rule in
``paths`` (a symlink inside another source's data on the way to it is refused), its tree
is read by file descriptor (``files.scan``) and never crosses into another mount.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from workers.backup import files, paths
from workers.backup.files import Key, join, key_of, parent_of
from workers.backup.links import Previous
from workers.backup.model import Source, SourceInfo, SourceKind
from workers.errors import InfrastructureError

# An entry's place in the live data: the open directory holding it and its name there.
At = tuple[int, str]

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

MAX_NOTES = 20
_TMP_PREFIX = ".rollhook-tmp-"


@dataclass(slots=True)
class _Entry:
    kind: str  # "dir", "file" or "link"
    key: Key  # the source's stat when its copy was made
    live: bool = False
    linked: bool = False


def _kind(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "link"
    return None  # sockets, FIFOs, devices: nothing a backup can hold


def _describe(mode: int) -> str:
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    return "device node"


class Mirror:
    def __init__(
        self,
        source: Source,
        dest: str,
        previous: Previous | None,
        exclude: frozenset[tuple[int, int]],
        roots: frozenset[str],
    ) -> None:
        self.source = source
        self.roots = roots  # the real paths of all the service's sources (paths.resolve)
        self.src_root = ""  # its real path, fixed by pass 1 (messages only: I/O is by fd)
        self.dst_root = dest
        self.previous = previous
        self.exclude = exclude
        self.kind: SourceKind = "missing"
        self.entries: dict[str, _Entry] = {}
        self.dir_stats: dict[str, os.stat_result] = {}
        self.final = False
        self.notes: list[str] = []
        self.skipped = 0
        self.pass1_written = 0
        self.final_written = 0
        self.final_compared = 0
        self._touched: set[str] = set()  # dirs whose entries or metadata changed

    # -- the two passes -------------------------------------------------------------

    def first_pass(self) -> None:
        with self._resolve() as top:
            st = self._stat_top(top)
            if st is None:
                return
            self._visit("", st, (top.dir_fd, top.name))
            if self.kind == "dir":
                self._visit_tree(top, st, strict=False)
        self._settle_dirs(self.dir_stats.keys())

    def final_pass(self) -> None:
        self.final = True
        self._touched.clear()
        self.notes.clear()  # they describe what the backup holds: the final pass redoes them
        self.skipped = 0
        was = self.kind
        with self._resolve() as top:
            st = self._stat_top(top)
            if st is None:
                if was != "missing":
                    self._remove("")
                return
            seen = {""}
            self._visit("", st, (top.dir_fd, top.name))
            if self.kind == "dir":
                seen |= self._visit_tree(top, st, strict=True)
        # Shallow first: removing a directory takes its subtree (and its entries) along.
        for rel in sorted(set(self.entries) - seen, key=len):
            if rel in self.entries:
                self._remove(rel)
        self._settle_dirs(self._touched)

    def _visit_tree(self, top: paths.Resolved, st: os.stat_result, *, strict: bool) -> set[str]:
        """Visit everything below a directory source; returns the relative paths seen."""
        seen: set[str] = set()
        try:
            fd = files.open_dir(top.name, dir_fd=top.dir_fd, expect=st)
        except OSError as exc:
            self._changed(self.src_root, exc)
            return seen
        try:
            for entry in self._walk(fd, strict=strict):
                seen.add(entry.rel)
                self._visit(entry.rel, entry.st, (entry.dir_fd, entry.name))
        finally:
            os.close(fd)
        return seen

    # -- what it produced ----------------------------------------------------------

    def info(self, index: int) -> SourceInfo:
        counts = {"file": 0, "dir": 0, "link": 0}
        copied = linked = 0
        for entry in self.entries.values():
            counts[entry.kind] += 1
            if entry.kind == "file":
                if entry.linked:
                    linked += entry.key.size
                else:
                    copied += entry.key.size
        notes = list(self.notes)
        if self.skipped > MAX_NOTES:
            notes.append(f"... and {self.skipped - MAX_NOTES} more entries skipped")
        return SourceInfo(
            name=self.source.name,
            path=str(self.source.path),
            kind=self.kind,
            dir=f"data/{index}",
            files=counts["file"],
            dirs=counts["dir"],
            symlinks=counts["link"],
            bytes_copied=copied,
            bytes_linked=linked,
            notes=tuple(notes),
            resolved=self.src_root,
        )

    def seen_index(self) -> dict[str, list[int]]:
        """Inode and ctime of every file that may be linked by the next backup."""
        return {
            rel: [e.key.ino, e.key.ctime_ns]
            for rel, e in self.entries.items()
            if e.kind == "file" and not e.live
        }

    # -- one entry -----------------------------------------------------------------

    def _visit(self, rel: str, st: os.stat_result, at: At) -> None:
        kind = _kind(st.st_mode)
        old = self.entries.get(rel)
        if kind is None:
            self._skip(rel, st.st_mode)
            if old is not None:
                self._remove(rel)
            return
        if old is not None and old.kind != kind:
            self._remove(rel)
            old = None
        if not rel:
            self.kind = "dir" if kind == "dir" else "file"
        if kind == "dir":
            self._visit_dir(rel, st, old)
        elif kind == "link":
            self._visit_link(rel, st, old, at)
        elif old is None:
            self._copy(rel, at)
        elif old.live:
            self._check_live(rel, old, at)
        elif old.key != key_of(st):
            self._copy(rel, at)

    def _visit_dir(self, rel: str, st: os.stat_result, old: _Entry | None) -> None:
        if old is None:
            dst = join(self.dst_root, rel)
            self._io("create directory", dst, os.mkdir, dst, 0o700)
            self._touch_parent(rel)
        if old is None or old.key != key_of(st):
            self._touched.add(rel)  # its metadata is (re)applied once its entries are in
        self.entries[rel] = _Entry("dir", key_of(st))
        self.dir_stats[rel] = st

    def _visit_link(self, rel: str, st: os.stat_result, old: _Entry | None, at: At) -> None:
        if old is not None and old.key == key_of(st):
            return
        src, dst = join(self.src_root, rel), join(self.dst_root, rel)
        if old is not None:
            self._io("replace", dst, os.unlink, dst)
        try:
            files.copy_symlink(at[1], dst, st, src_dir_fd=at[0])
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.EINVAL):  # EINVAL: no longer a link
                raise InfrastructureError(f"cannot copy symlink {src}: {exc.strerror}") from exc
            self._changed(src, exc)
            return
        self._touch_parent(rel)
        self.entries[rel] = _Entry("link", key_of(st))

    def _copy(self, rel: str, at: At) -> None:
        """Copy (or link from the previous backup) a file not yet in the backup or changed.

        In the final pass the new copy is written aside and renamed over the old one,
        which may be a hard link that an older backup shares.
        """
        src = join(self.src_root, rel)
        dst = join(self.dst_root, rel)
        fd = self._open(src, at)
        if fd is None:
            return
        try:
            target = self._temp_for(dst) if self.final else dst
            pre = os.fstat(fd)
            if not stat.S_ISREG(pre.st_mode):
                self._changed(src, None)
                return
            live = self.kind == "file" or files.is_live_name(rel) or files.has_sqlite_magic(fd)
            prev = self.previous
            linked = not live and prev is not None and prev.link(rel, pre, target)
            if not linked:
                out = self._io("create", target, files.create_file, target)
                try:
                    moved = self._io(f"copy {src} to", target, files.copy_data, fd, out)
                    self._io("set metadata on", target, files.set_file_meta, out, pre)
                    if self.final:
                        self._io("sync", target, os.fsync, out)
                finally:
                    os.close(out)
                self._count_written(moved)
        except OSError as exc:
            raise InfrastructureError(f"cannot back up {src}: {exc.strerror}") from exc
        finally:
            os.close(fd)
        if self.final:
            self._io("replace", dst, os.replace, target, dst)
        self._touch_parent(rel)
        self.entries[rel] = _Entry("file", key_of(pre), live=live, linked=linked)

    def _check_live(self, rel: str, old: _Entry, at: At) -> None:
        """The final pass for a live file: compare content with the pass-1 copy, patch it."""
        src = join(self.src_root, rel)
        dst = join(self.dst_root, rel)
        mine = self._io("stat", dst, os.lstat, dst)
        if mine.st_nlink > 1 or not stat.S_ISREG(mine.st_mode):
            # Never write into an inode another backup may share: copy it afresh.
            self._copy(rel, at)
            return
        fd = self._open(src, at)
        if fd is None:
            return
        try:
            pre = self._io("stat", src, os.fstat, fd)
            out = self._io("open", dst, os.open, dst, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                written, compared = self._io(
                    f"compare {src} with", dst, files.patch, fd, out, pre.st_size
                )
                if written or not files.same_meta(mine, pre):
                    self._io("set metadata on", dst, files.set_file_meta, out, pre)
                    self._io("sync", dst, os.fsync, out)
            finally:
                os.close(out)
        finally:
            os.close(fd)
        self.final_written += written
        self.final_compared += compared
        old.key = key_of(pre)

    def _remove(self, rel: str) -> None:
        dst = join(self.dst_root, rel)
        self._io("remove", dst, files.remove, dst)
        if not rel:
            self.entries.clear()
            self.dir_stats.clear()
            self.kind = "missing"
            return
        prefix = rel + "/"
        for gone in [r for r in self.entries if r == rel or r.startswith(prefix)]:
            del self.entries[gone]
            self.dir_stats.pop(gone, None)
        self._touch_parent(rel)

    def _settle_dirs(self, rels: Iterable[str]) -> None:
        """Directory metadata goes on last and deepest first: adding an entry moves mtime."""
        for rel in sorted(rels, key=lambda r: r.count("/") + bool(r), reverse=True):
            st = self.dir_stats.get(rel)
            if st is None:
                continue
            dst = join(self.dst_root, rel)
            self._io("set metadata on", dst, files.set_dir_meta, dst, st)
            if self.final:
                self._io("sync", dst, files.fsync_path, dst)

    # -- helpers -------------------------------------------------------------------

    def _resolve(self) -> paths.Resolved:
        """Where the source path leads now (``paths``: a symlink at the top is followed,
        as Docker does; one inside another source's data is refused)."""
        path = self.source.path
        top = paths.resolve_for("backup", path, self.roots)
        if not self.src_root:
            self.src_root = top.path
        elif top.path != self.src_root:
            top.close()
            raise InfrastructureError(
                f"{path} led to {self.src_root} in pass 1 and to {top.path} now: "
                "a symlink on the way changed during the backup"
            )
        return top

    def _stat_top(self, top: paths.Resolved) -> os.stat_result | None:
        st = top.st
        if st is None:
            note = f"{self.source.path} does not exist; nothing to back up"
            if self.final and self.kind != "missing":
                note = f"{self.source.path} disappeared before the final pass"
            self._note(note)
            return None
        if _kind(st.st_mode) not in ("dir", "file"):
            self._note(f"{self.source.path} is neither a directory nor a file; skipped")
            return None
        return st

    def _walk(self, fd: int, *, strict: bool) -> Iterator[files.Entry]:
        try:
            yield from files.scan(
                fd,
                path=self.src_root,
                exclude=self.exclude,
                strict=strict,
                skipped=self._not_crossed,
            )
        except FileNotFoundError as exc:
            self._changed(str(exc.filename), exc)
        except OSError as exc:
            raise InfrastructureError(f"cannot list {exc.filename}: {exc.strerror}") from exc

    def _not_crossed(self, rel: str) -> None:
        path = join(str(self.source.path), rel)
        self._note(f"skipped {path}: another filesystem is mounted there (not crossed)")

    def _open(self, src: str, at: At) -> int | None:
        """Open a listed file; None if it vanished while the app still ran (pass 1)."""
        try:
            return files.open_for_reading(at[1], dir_fd=at[0])
        except (FileNotFoundError, NotADirectoryError) as exc:
            self._changed(src, exc)
            log.debug("%s vanished during pass 1 (%s)", src, exc.strerror)
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # became a symlink
                self._changed(src, exc)
                return None
            raise InfrastructureError(f"cannot read {src}: {exc.strerror}") from exc

    def _changed(self, path: str, exc: OSError | None) -> None:
        """Fine while the app runs (pass 1: the final pass sees it again); not after."""
        if self.final:
            raise InfrastructureError(
                f"{path} changed during the final backup pass, while the app was stopped: "
                "is something else writing to this data?"
            ) from exc

    def _skip(self, rel: str, mode: int) -> None:
        self.skipped += 1
        if self.skipped <= MAX_NOTES:
            what = _describe(mode)
            self._note(f"skipped {what} {join(str(self.source.path), rel)}")

    def _note(self, note: str) -> None:
        if note not in self.notes:
            self.notes.append(note)
            log.info("backup of %s: %s", self.source.name, note)

    def _touch_parent(self, rel: str) -> None:
        parent = parent_of(rel)
        if parent is not None:
            self._touched.add(parent)

    def _count_written(self, n: int) -> None:
        if self.final:
            self.final_written += n
        else:
            self.pass1_written += n

    @staticmethod
    def _temp_for(dst: str) -> str:
        head, _, name = dst.rpartition("/")
        tmp = f"{head}/{_TMP_PREFIX}{name}"
        files.remove(tmp)
        return tmp

    @staticmethod
    def _io(what: str, path: str, fn: Callable[P, R], *args: P.args, **kw: P.kwargs) -> R:
        try:
            return fn(*args, **kw)
        except OSError as exc:
            raise InfrastructureError(f"cannot {what} {path}: {exc.strerror}") from exc
