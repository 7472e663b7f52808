"""A target's data staged for an off-host snapshot: consistent, at its host paths, ours alone.

restic never reads the app's live data. It walks by path and would follow a directory
the app swaps for a symlink mid-walk (out of the data: rollhook runs as root), and it
would read a live SQLite database byte by byte (a torn copy). So the data is first staged
into a tree that only rollhook writes, read the way ``workers.backup`` reads it (sources
resolved by ``paths``, every tree walked by descriptor with ``O_NOFOLLOW`` by
``files.scan``; symlinks kept as links, never followed), with:

- each SQLite database (found by its 16-byte header, whatever its name) copied with
  SQLite's online backup API (``sqlite``), its ``-wal``/``-shm``/``-journal`` left out:
  the copy holds every committed transaction and needs none of them;
- the runtime ``.env`` and the files apps rewrite in place (``files.is_live_name``) copied;
- every other file hard-linked from the previous stage when unchanged since (same live
  inode and ctime, ``links.Previous``), else copied. The live inodes are only read
  (``O_NOATIME``): linking them would move their ctime, which the deployment backups use
  to decide what they may link.

A stage is kept until the next one replaces it, so restic sees unchanged files with the
same inode, size and mtime every time and reads only what changed (its ctime check is off:
a link moves the ctime of an inode whose content never changes, as nothing writes into
a staged file). That costs one copy of the data on disk per target.

```
<root>/.lock                          held while a stage is built and snapshotted
<root>/tree/                          the current stage: restic's working directory
<root>/tree/<real path of a source>   its data, e.g. tree/srv/anythingllm/storage/...
<root>/tree/.rollhook/manifest.json   SnapshotContents: /.rollhook/manifest.json in a snapshot
<root>/tree/.rollhook-index.json      live inode + ctime per staged file (never snapshotted)
<root>/next/, <root>/old-*            a stage being built, one being removed
```
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import logging
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from workers.backup import files, paths, sqlite
from workers.backup.contents import MANIFEST_DIR, SnapshotContents, StagedSource
from workers.backup.files import join, parent_of
from workers.backup.links import Previous
from workers.backup.model import Source, SourceKind
from workers.closeable import Closeable
from workers.errors import DeployError, InfrastructureError, OperatorError

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

TREE = "tree"
NEXT = "next"
OLD = "old-"
INDEX = ".rollhook-index.json"
INDEX_FORMAT = 1
MAX_NOTES = 20


@dataclass
class Staged(Closeable):
    """A built stage, locked until closed: give restic ``paths`` with ``tree`` as cwd."""

    tree: Path
    paths: tuple[str, ...]  # relative to tree: the manifest's directory and each source
    contents: SnapshotContents
    _lock_fd: int = field(repr=False)

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


class Stage:
    """One target's staging area (``root``: rollhook's own, e.g. <state>/stage/<target>)."""

    def __init__(self, root: Path, *, sqlite_timeout: float = 60.0) -> None:
        self.root = Path(root)
        self.sqlite_timeout = sqlite_timeout

    def build(
        self, target: str, sources: Sequence[Source], mounts: Mapping[str, str] | None = None
    ) -> Staged:
        """Stage ``sources`` while the app runs; the result holds the stage's lock.

        ``mounts``: where the service sees each source (by name), for the manifest: a new
        host matches its sources to the snapshot's by it when their host paths differ.
        Raises UnsafeSymlink (a symlink inside a source's data on the way to another
        source), DeployError (another build holds the stage), InfrastructureError.
        """
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise OperatorError(f"stage of {target}: two sources share a name: {names}")
        try:
            roots = paths.settle([s.path for s in sources])
        except paths.UnsafeSymlink as exc:
            raise paths.UnsafeSymlink(f"stage of {target} refused: {exc}") from exc
        created_at = datetime.now(UTC).isoformat(timespec="milliseconds")
        lock_fd = self._lock()
        try:
            staged = self._build(target, sources, roots, created_at, mounts or {})
            return Staged(self.root / TREE, *staged, lock_fd)
        except BaseException:
            os.close(lock_fd)
            raise

    def remove(self) -> None:
        """Remove the whole staging area (the target is gone)."""
        lock_fd = self._lock()
        try:
            _io("remove", str(self.root), files.remove, str(self.root))
        finally:
            os.close(lock_fd)

    # -- internals -------------------------------------------------------------------

    def _lock(self) -> int:
        root = str(self.root)
        _io("create", root, os.makedirs, root, 0o700, exist_ok=True)
        path = join(root, ".lock")
        fd = _io("open", path, os.open, path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DeployError(f"{root} is being staged by another process") from exc
            raise InfrastructureError(f"cannot lock {path}: {exc.strerror}") from exc
        return fd

    def _build(
        self,
        target: str,
        sources: Sequence[Source],
        roots: frozenset[str],
        created_at: str,
        mounts: Mapping[str, str],
    ) -> tuple[tuple[str, ...], SnapshotContents]:
        root, tree, nxt = str(self.root), join(str(self.root), TREE), join(str(self.root), NEXT)
        for entry in _io("list", root, os.listdir, root):
            if entry == NEXT or entry.startswith(OLD):
                _io("remove", join(root, entry), files.remove, join(root, entry))
        # Opened before anything is written: syncfs on it reports every write-back error.
        root_fd = _io("open", root, os.open, root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            _io("create", nxt, os.mkdir, nxt, 0o700)
            index = _read_index(tree)
            exclude = _exclude(root)
            staged: list[StagedSource] = []
            seen: dict[str, dict[str, list[int]]] = {}
            with contextlib.ExitStack() as held:
                resolved = [(s, held.enter_context(_resolve(s, roots))) for s in sources]
                # Shallow first: a source inside another one's directory comes with it.
                for source, at in sorted(resolved, key=lambda pair: pair[1].path.count("/")):
                    outer = _holder(at.path, staged, nxt)
                    if outer is not None:
                        staged.append(_included(source, at, outer))
                        continue
                    previous = None
                    if isinstance(index.get(source.name), dict) and os.path.isdir(tree):
                        previous = Previous(tree + at.path, index[source.name])
                    stager = _SourceStager(
                        source,
                        at,
                        nxt,
                        previous=previous,
                        exclude=exclude,
                        sqlite_timeout=self.sqlite_timeout,
                    )
                    staged.append(stager.run())
                    seen[source.name] = stager.seen
            staged = [dataclasses.replace(s, mount=mounts.get(s.name)) for s in staged]
            contents = SnapshotContents(target, created_at, tuple(sorted(staged, key=_order)))
            _write_json(join(nxt, f"{MANIFEST_DIR}/manifest.json"), contents.to_json())
            _write_json(join(nxt, INDEX), {"format": INDEX_FORMAT, "sources": seen})
            _io("sync", root, files.syncfs, root_fd)
            self._swap(root, tree, nxt)
        finally:
            os.close(root_fd)
        located = [s.location.lstrip("/") for s in contents.sources if _stands_alone(s)]
        return (MANIFEST_DIR, *sorted(located)), contents

    @staticmethod
    def _swap(root: str, tree: str, nxt: str) -> None:
        old = join(root, f"{OLD}{os.urandom(4).hex()}")
        if os.path.lexists(tree):
            _io("set aside", tree, os.rename, tree, old)
        _io("replace", tree, os.rename, nxt, tree)
        _io("sync", root, files.fsync_path, root)
        _io("remove", old, files.remove, old)


def _order(source: StagedSource) -> str:
    return source.name


def _stands_alone(source: StagedSource) -> bool:
    return source.kind != "missing" and source.included_in is None


@contextlib.contextmanager
def _resolve(source: Source, roots: frozenset[str]) -> Iterator[paths.Resolved]:
    with paths.resolve_for("stage", source.path, roots) as at:
        yield at


def _holder(location: str, staged: Iterable[StagedSource], nxt: str) -> StagedSource | None:
    """A source already staged whose copy holds ``location``: the .env in storage/, or the
    same path configured twice. Only if the copy really has it: the walk never crosses
    into a mount point.
    """
    for other in staged:
        if (
            other.kind != "missing"
            and other.included_in is None
            and paths.within(location, other.location)
            and os.path.lexists(nxt + location)
        ):
            return other
    return None


def _included(source: Source, at: paths.Resolved, outer: StagedSource) -> StagedSource:
    kind: SourceKind = "missing"
    if at.st is not None:
        kind = "dir" if stat.S_ISDIR(at.st.st_mode) else "file"
    return StagedSource(source.name, str(source.path), at.path, kind, outer.name, 0, 0, ())


class _SourceStager:
    """Stages one source into ``<next><real path>``."""

    def __init__(
        self,
        source: Source,
        at: paths.Resolved,
        nxt: str,
        *,
        previous: Previous | None,
        exclude: frozenset[tuple[int, int]],
        sqlite_timeout: float,
    ) -> None:
        self.source, self.at, self.previous = source, at, previous
        self.nxt = nxt
        self.dest = nxt + at.path
        self.exclude = exclude
        self.sqlite_timeout = sqlite_timeout
        self.files = self.bytes = self.skipped = 0
        self.databases: list[str] = []
        self.notes: list[str] = []
        self.seen: dict[str, list[int]] = {}  # rel -> live [inode, ctime]: what may be linked
        self.dirs: dict[str, os.stat_result] = {}

    def run(self) -> StagedSource:
        st = self.at.st
        kind: SourceKind = "missing"
        if st is None:
            self._note(f"{self.source.path} does not exist; nothing to stage")
        elif stat.S_ISREG(st.st_mode):
            kind = "file"
            self._make_parent()
            self._file("", self.at.dir_fd, self.at.name, self.at.dir_path)
        elif stat.S_ISDIR(st.st_mode):
            kind = "dir"
            self._make_parent()
            self._tree(st)
        else:
            self._note(f"{self.source.path} is neither a directory nor a file; skipped")
        if self.skipped > MAX_NOTES:
            self._note(f"... and {self.skipped - MAX_NOTES} more entries skipped")
        return StagedSource(
            name=self.source.name,
            path=str(self.source.path),
            location=self.at.path,
            kind=kind,
            included_in=None,
            files=self.files,
            bytes=self.bytes,
            databases=tuple(self.databases),
            notes=tuple(self.notes),
        )

    def _make_parent(self) -> None:
        parts = self.at.path.strip("/").split("/")[:-1]
        nxt_fd = _io("open", self.nxt, files.open_dir, self.nxt)
        try:
            fd = _io("create", self.dest, paths.open_dirs, nxt_fd, parts, create=True)
            os.close(fd)
        finally:
            os.close(nxt_fd)

    def _tree(self, st: os.stat_result) -> None:
        _io("create", self.dest, os.mkdir, self.dest, 0o700)
        self.dirs[""] = st
        try:
            fd = files.open_dir(self.at.name, dir_fd=self.at.dir_fd, expect=st)
        except OSError as exc:
            self._note(f"{self.source.path} changed while being staged ({exc.strerror})")
            return
        try:
            scan = files.scan(
                fd, path=self.at.path, exclude=self.exclude, strict=False, skipped=self._not_crossed
            )
            for entry in scan:
                self._entry(entry)
        except OSError as exc:
            raise InfrastructureError(f"cannot list {exc.filename}: {exc.strerror}") from exc
        finally:
            os.close(fd)
        # Directory metadata last and deepest first: adding an entry moves a dir's mtime.
        for rel in sorted(self.dirs, key=lambda r: r.count("/") + bool(r), reverse=True):
            dst = join(self.dest, rel)
            _io("set metadata on", dst, files.set_dir_meta, dst, self.dirs[rel])

    def _entry(self, entry: files.Entry) -> None:
        rel, st = entry.rel, entry.st
        dst = join(self.dest, rel)
        base = sqlite.base_of_companion(entry.name)
        if base is not None and sqlite.is_database(entry.dir_fd, base):
            return  # staged with its database, whatever it is
        if stat.S_ISDIR(st.st_mode):
            _io("create", dst, os.mkdir, dst, 0o700)
            self.dirs[rel] = st
        elif stat.S_ISLNK(st.st_mode):
            try:
                files.copy_symlink(entry.name, dst, st, src_dir_fd=entry.dir_fd)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.EINVAL):  # EINVAL: no longer a link
                    why = exc.strerror
                    raise InfrastructureError(f"cannot stage symlink {dst}: {why}") from exc
        elif stat.S_ISREG(st.st_mode):
            parent = parent_of(rel) or ""
            self._file(rel, entry.dir_fd, entry.name, join(self.at.path, parent))
        else:
            self.skipped += 1
            if self.skipped <= MAX_NOTES:
                self._note(f"skipped {join(str(self.source.path), rel)}: not a file or directory")

    def _file(self, rel: str, dir_fd: int, name: str, dir_path: str) -> None:
        dst = join(self.dest, rel)
        fd = self._open(name, dir_fd)
        if fd is None:
            return
        try:
            pre = os.fstat(fd)
            if not stat.S_ISREG(pre.st_mode):
                return
            if files.has_sqlite_magic(fd):
                database = True
            else:
                database = False
                self._copy_or_link(rel, fd, pre, dst)
        finally:
            os.close(fd)  # before SQLite opens the file: closing would drop its locks
        if database:
            self._database(rel, dir_fd, name, dir_path, dst)

    def _copy_or_link(self, rel: str, fd: int, pre: os.stat_result, dst: str) -> None:
        live = rel == "" or files.is_live_name(rel)
        if live or self.previous is None or not self.previous.link(rel, pre, dst):
            out = _io("create", dst, files.create_file, dst)
            try:
                src = join(self.at.path, rel)
                _io(f"copy {src} to", dst, files.copy_data, fd, out)
                _io("set metadata on", dst, files.set_file_meta, out, pre)
            finally:
                os.close(out)
        if not live:
            self.seen[rel] = [pre.st_ino, pre.st_ctime_ns]
        self.files += 1
        self.bytes += pre.st_size

    def _database(self, rel: str, dir_fd: int, name: str, dir_path: str, dst: str) -> None:
        try:
            copied = sqlite.copy_database(
                dir_fd, name, dir_path=dir_path, dest=dst, timeout=self.sqlite_timeout
            )
        except sqlite.NotCopied as why:
            path = join(dir_path, name)
            self._note(
                f"{path}: copied byte for byte with its journal, not with SQLite's online "
                f"backup ({why}): it may not be consistent"
            )
            self._plain_database(dir_fd, name, dst)
            return
        log.info("staged SQLite database %s (%d KiB)", join(dir_path, name), copied.bytes >> 10)
        self.databases.append(rel or name)
        self.files += 1
        self.bytes += copied.bytes

    def _plain_database(self, dir_fd: int, name: str, dst: str) -> None:
        folder = os.path.dirname(dst)
        for entry in (name, *(name + suffix for suffix in sqlite.COMPANIONS)):
            try:
                st = os.stat(entry, dir_fd=dir_fd, follow_symlinks=False)
                target = join(folder, entry)
                if stat.S_ISREG(st.st_mode):
                    files.copy_file(entry, target, sync=False, src_dir_fd=dir_fd)
                elif stat.S_ISLNK(st.st_mode):
                    files.copy_symlink(entry, target, st, src_dir_fd=dir_fd)
                else:
                    continue
            except (FileNotFoundError, NotADirectoryError):
                continue  # gone meanwhile (a journal is deleted at each commit)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    continue  # swapped for a symlink since its stat: never followed
                raise InfrastructureError(f"cannot stage {entry}: {exc.strerror}") from exc
            self.files += 1
            self.bytes += st.st_size

    def _open(self, name: str, dir_fd: int) -> int | None:
        """A listed file, or None if it vanished or became a symlink while the app runs."""
        try:
            return files.open_for_reading(name, dir_fd=dir_fd)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return None
            raise InfrastructureError(f"cannot read {name}: {exc.strerror}") from exc

    def _not_crossed(self, rel: str) -> None:
        path = join(str(self.source.path), rel)
        self._note(f"skipped {path}: another filesystem is mounted there (not crossed)")

    def _note(self, note: str) -> None:
        if note not in self.notes:
            self.notes.append(note)
            log.info("stage of %s: %s", self.source.name, note)


def _exclude(root: str) -> frozenset[tuple[int, int]]:
    """The staging area itself, should it lie inside a source."""
    st = os.stat(root)
    return frozenset({(st.st_dev, st.st_ino)})


def _read_index(tree: str) -> dict[str, Any]:
    try:
        with open(join(tree, INDEX), encoding="utf-8") as handle:
            data = json.load(handle)
        sources = data["sources"]
    except (OSError, ValueError, TypeError, KeyError):
        return {}  # nothing is linked: everything is copied afresh
    return sources if isinstance(sources, dict) else {}


def _write_json(path: str, data: object) -> None:
    folder = os.path.dirname(path)
    _io("create", folder, os.makedirs, folder, 0o700, exist_ok=True)
    fd = _io("create", path, files.create_file, path)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=1)


def _io(what: str, path: str, fn: Callable[P, R], *args: P.args, **kw: P.kwargs) -> R:
    try:
        return fn(*args, **kw)
    except OSError as exc:
        raise InfrastructureError(f"cannot {what} {path}: {exc.strerror}") from exc
