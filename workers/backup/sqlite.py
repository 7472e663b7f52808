"""A consistent copy of a live SQLite database, made with SQLite's online backup API.

A byte copy of a database the app is writing can be torn (half a transaction, or pages of
two). SQLite's backup API copies the pages inside one read transaction, so the copy is
the database as of one commit, whatever the app does meanwhile:

- WAL mode: the copy reads a snapshot; the app keeps writing, unblocked.
- Rollback-journal mode (anything-llm's Prisma default): the read transaction holds a
  shared lock for the copy's duration, so the app's writers wait for it (milliseconds for
  anything-llm's database; they retry within their busy timeout).

The copy is made in one backup step: copying in chunks would release the lock between
steps, and the backup restarts whenever another process writes, so a busy database might
never finish.

A WAL database nobody has open (no -wal, no -shm) is copied by descriptor instead, and
checked to be unchanged: SQLite would create both files in the app's directory to read it.

SQLite opens files by path, and the app can swap any entry of its data for a symlink. The
database is opened read-only (``mode=ro``) at its real path, and then every file SQLite
holds open is checked to be one linked in the directory that was walked by descriptor
(``dir_fd``): the database itself, or its ``-wal``, ``-shm`` or ``-journal``, all regular
files. Had a symlink been followed anywhere (the file, its companions, a directory on the
way), a file SQLite holds is not one of these and the copy is thrown away
(:class:`NotCopied`) before anything reads it. No descriptor of our own is ever opened on
the database's files while SQLite holds its locks: closing any descriptor of a file drops
every POSIX lock this process has on it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from workers.backup import files

COMPANIONS = ("-wal", "-shm", "-journal")
WAL_VERSION = 2  # header bytes 18 and 19: the file format's write and read versions


class NotCopied(Exception):
    """The online backup could not be used here; the message says why (for a note)."""


@dataclass(frozen=True)
class DatabaseCopy:
    pages: int
    page_size: int
    wal: bool  # the database is in WAL mode (the copy is too)
    seconds: float

    @property
    def bytes(self) -> int:
        return self.pages * self.page_size


def is_database(dir_fd: int, name: str) -> bool:
    """A regular file starting with SQLite's 16-byte header (found by content, not name)."""
    try:
        fd = files.open_for_reading(name, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode) and files.has_sqlite_magic(fd)
    finally:
        os.close(fd)


def base_of_companion(name: str) -> str | None:
    """``x.db`` for ``x.db-wal``, ``x.db-shm`` or ``x.db-journal``; None for other names."""
    for suffix in COMPANIONS:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def copy_database(
    dir_fd: int, name: str, *, dir_path: str, dest: str, timeout: float = 60.0
) -> DatabaseCopy:
    """Copy the database ``name`` in the open directory ``dir_fd`` to ``dest`` (not existing).

    ``dir_path``: that directory's real path, which SQLite is given (it opens by path).
    ``timeout``: how long to wait for the app's locks and copy, in all. The copy keeps
    the source's owner, mode and mtime. Raises NotCopied, leaving no ``dest`` behind.
    """
    began = time.monotonic()
    deadline = began + timeout
    wal = _check_source(dir_fd, name)
    uri = "file:" + urllib.parse.quote(f"{dir_path.rstrip('/')}/{name}") + "?mode=ro"
    try:
        copied = _idle_copy(dir_fd, name, dest) if wal else None
        if copied is None:
            copied = _backup(uri, dir_fd, name, dest, deadline)
        _check_copy(dest)
        _copy_meta(dir_fd, name, dest)
    except BaseException:
        for path in (dest, *(dest + suffix for suffix in COMPANIONS)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        raise
    pages, page_size = copied
    return DatabaseCopy(pages, page_size, wal, round(time.monotonic() - began, 3))


def _check_source(dir_fd: int, name: str) -> bool:
    """The database is a regular SQLite file; its companions are absent or regular files."""
    try:
        fd = files.open_for_reading(name, dir_fd=dir_fd)
    except OSError as exc:
        raise NotCopied(f"cannot open it: {exc.strerror}") from exc
    try:  # closed before SQLite opens the file: see the module's docstring
        if not stat.S_ISREG(os.fstat(fd).st_mode) or not files.has_sqlite_magic(fd):
            raise NotCopied("not an SQLite database")
        header = os.pread(fd, 20, 0)
    finally:
        os.close(fd)
    for suffix in COMPANIONS:
        st = _lstat(dir_fd, name + suffix)
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise NotCopied(f"{name}{suffix} is not a regular file")
    return len(header) == 20 and header[18] == WAL_VERSION


def _idle_copy(dir_fd: int, name: str, dest: str) -> tuple[int, int] | None:
    """A WAL database nobody has open, copied by descriptor; None if it is in use.

    SQLite would create its -wal and -shm to read it (in the app's data, even read-only).
    Unused, it has neither, and nothing can change it without creating them first: a
    copy with neither there before and after, and the file's stat unchanged, is complete.
    """
    if any(_lstat(dir_fd, name + suffix) for suffix in ("-wal", "-shm")):
        return None
    fd = files.open_for_reading(name, dir_fd=dir_fd)
    try:
        before = os.fstat(fd)
        out = files.create_file(dest)
        try:
            files.copy_data(fd, out)
        finally:
            os.close(out)
        after = os.fstat(fd)
        page_size = int.from_bytes(os.pread(fd, 2, 16), "big")
    finally:
        os.close(fd)
    if files.key_of(before) != files.key_of(after) or any(
        _lstat(dir_fd, name + suffix) for suffix in ("-wal", "-shm")
    ):
        os.unlink(dest)  # opened meanwhile: the online backup it is
        return None
    page_size = 65536 if page_size == 1 else page_size  # the header's encoding of 64 KiB
    return after.st_size // page_size, page_size


def _backup(uri: str, dir_fd: int, name: str, dest: str, deadline: float) -> tuple[int, int]:
    before = _open_files()
    try:
        # The busy timeout: how long a lock the app holds is waited for, per attempt.
        source = sqlite3.connect(
            uri, uri=True, isolation_level=None, timeout=max(deadline - time.monotonic(), 0.1)
        )
    except sqlite3.Error as exc:
        raise NotCopied(f"SQLite cannot open it: {exc}") from exc
    try:
        try:
            source.execute("BEGIN")  # one read transaction: the copy is one commit's state
            source.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            raise NotCopied(f"SQLite cannot read it: {exc}") from exc
        _check_opened(before, dir_fd, name)
        target = sqlite3.connect(dest, isolation_level=None)
        try:
            source.backup(target, pages=-1, progress=_deadline(deadline))
            page_size = int(target.execute("PRAGMA page_size").fetchone()[0])
            pages = int(target.execute("PRAGMA page_count").fetchone()[0])
        except TimeoutError as exc:
            raise NotCopied(str(exc)) from exc
        except sqlite3.Error as exc:
            raise NotCopied(f"the online backup failed: {exc}") from exc
        finally:
            target.close()
        _check_opened(before, dir_fd, name)  # what the copy read came through these
    finally:
        source.close()
    return pages, page_size


def _deadline(deadline: float) -> Callable[[int, int, int], None]:
    def progress(status: int, remaining: int, total: int) -> None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the database stayed locked; {remaining} of {total} pages left")

    return progress


def _check_copy(dest: str) -> None:
    """The copy passes quick_check and is complete on its own: nothing left beside it.

    Opened read-write: it is ours, and a read-only connection to a WAL database would
    leave an empty -wal and -shm behind (only a writer removes them when it closes).
    """
    conn = sqlite3.connect(dest, isolation_level=None)
    try:
        result = [row[0] for row in conn.execute("PRAGMA quick_check")]
    except sqlite3.Error as exc:
        raise NotCopied(f"the copy cannot be checked: {exc}") from exc
    finally:
        conn.close()
    if result != ["ok"]:
        raise NotCopied(f"the copy fails quick_check: {'; '.join(map(str, result))[:200]}")
    for suffix in COMPANIONS:
        if os.path.lexists(dest + suffix):
            raise NotCopied(f"the copy left {os.path.basename(dest)}{suffix} behind")


def _copy_meta(dir_fd: int, name: str, dest: str) -> None:
    st = _lstat(dir_fd, name)
    if st is None or not stat.S_ISREG(st.st_mode):
        raise NotCopied("it was replaced during the copy")
    fd = os.open(dest, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        files.set_file_meta(fd, st)
        os.fsync(fd)
    finally:
        os.close(fd)


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


OpenFile = tuple[int, int, int]  # descriptor, device, inode


def _open_files() -> set[OpenFile]:
    """This process's descriptors of regular files, seen through /proc (none opened)."""
    found = set()
    for entry in os.listdir("/proc/self/fd"):
        try:
            st = os.stat(f"/proc/self/fd/{entry}")
        except OSError:
            continue  # closed meanwhile, or listdir's own descriptor
        if stat.S_ISREG(st.st_mode):
            found.add((int(entry), st.st_dev, st.st_ino))
    return found


def _check_opened(before: set[OpenFile], dir_fd: int, name: str) -> None:
    """Every file SQLite opened is the database or a companion linked in ``dir_fd`` now."""
    allowed = set()
    for entry in (name, *(name + suffix for suffix in COMPANIONS)):
        st = _lstat(dir_fd, entry)
        if st is not None and stat.S_ISREG(st.st_mode):
            allowed.add((st.st_dev, st.st_ino))
    main = _lstat(dir_fd, name)
    opened = {(dev, ino) for _, dev, ino in _open_files() - before}
    if main is None or (main.st_dev, main.st_ino) not in opened:
        raise NotCopied("SQLite did not open the file that was checked (replaced meanwhile?)")
    if not opened <= allowed:
        raise NotCopied(
            "SQLite opened a file that is not the database or its companion in that "
            "directory: a symlink there was not followed"
        )
