"""File-level operations for backups: kernel copies, content patches, metadata, fsync, walks.

Everything here works on plain ``str`` paths and file descriptors: a storage volume can
hold hundreds of thousands of files, and ``Path`` objects per entry cost more than the
syscalls. Callers turn ``OSError`` into ``InfrastructureError`` with the paths involved.

The app's data is read by file descriptor: ``scan`` holds each directory open and opens
what it lists relative to it with ``O_NOFOLLOW`` (``dir_fd``), so an entry the app swaps
for a symlink after it was listed is never followed, wherever it points.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from typing import NamedTuple

CHUNK = 1 << 20

SQLITE_MAGIC = b"SQLite format 3\x00"
SQLITE_COMPANIONS = ("-wal", "-journal", "-shm")
# LanceDB writes data files once under fresh names; these are what it rewrites in place
# or replaces by rename while a table changes.
LANCE_MUTABLE = frozenset({"_versions", "_transactions", "_indices"})

# copy_file_range refuses some pairs (across filesystems on kernels >= 5.19, some FUSE and
# network filesystems); sendfile still keeps the copy in the kernel.
_NO_COPY_RANGE = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM}
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Key(NamedTuple):
    """What says "this inode has not changed" for a file that is not live."""

    size: int
    mtime_ns: int
    ino: int
    ctime_ns: int


def key_of(st: os.stat_result) -> Key:
    return Key(st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def join(root: str, rel: str) -> str:
    return f"{root}/{rel}" if rel else root


def parent_of(rel: str) -> str | None:
    """The parent's relative path: "" for a top-level entry, None for the root itself."""
    if not rel:
        return None
    return rel.rpartition("/")[0]


def is_live_name(rel: str) -> bool:
    """Files an app rewrites in place, whose size and mtime cannot be trusted.

    SQLite databases themselves are found by their header (``has_sqlite_magic``): their
    names are anything. Their companions are found by name, as anything-llm's ``.env``.
    """
    parts = rel.split("/")
    name = parts[-1]
    if name == ".env" or name.endswith(SQLITE_COMPANIONS):
        return True
    dirs = parts[:-1]
    if not any(p == "lancedb" or p.endswith(".lance") for p in dirs):
        return False
    return (
        name.endswith(".manifest") or name in LANCE_MUTABLE or any(p in LANCE_MUTABLE for p in dirs)
    )


def has_sqlite_magic(fd: int) -> bool:
    return os.pread(fd, len(SQLITE_MAGIC), 0) == SQLITE_MAGIC


def open_for_reading(path: str, *, dir_fd: int | None = None) -> int:
    """Open a file we expect to be regular, without following a symlink.

    O_NONBLOCK: should the entry have been swapped for a FIFO since it was listed, the
    open must not hang (it changes nothing for regular files). O_NOATIME: reading the
    live data for a backup should not touch it at all.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        return os.open(path, flags | os.O_NOATIME, dir_fd=dir_fd)
    except PermissionError:  # O_NOATIME needs ownership or CAP_FOWNER
        return os.open(path, flags, dir_fd=dir_fd)


def create_file(path: str, *, dir_fd: int | None = None) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(path, flags, 0o600, dir_fd=dir_fd)


def open_dir(path: str, *, dir_fd: int | None = None, expect: os.stat_result | None = None) -> int:
    """Open a directory without following a symlink at its last component.

    ``expect``: its lstat when it was listed; a different inode there now (it was swapped
    since) is FileNotFoundError, as if it had vanished.
    """
    fd = os.open(path, DIR_FLAGS, dir_fd=dir_fd)
    if expect is not None:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (expect.st_dev, expect.st_ino):
            os.close(fd)
            raise FileNotFoundError(errno.ENOENT, "replaced since it was listed", path)
    return fd


def copy_data(src: int, dst: int) -> int:
    """Copy a whole file in the kernel, keeping holes as holes. Returns the bytes moved.

    A file that grows or shrinks meanwhile gives a torn copy; callers take the source's
    stat before copying, so such a copy is found and redone by the final pass.
    """
    size = os.fstat(src).st_size
    moved = offset = 0
    while offset < size:
        try:
            start = os.lseek(src, offset, os.SEEK_DATA)
            end = min(os.lseek(src, start, os.SEEK_HOLE), size)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left
                break
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
            start, end = offset, size  # the filesystem cannot tell holes: copy it all
        if start >= size:
            break
        moved += _copy_range(src, dst, start, end - start)
        offset = end
    os.ftruncate(dst, size)  # a trailing hole, and the exact size if the source shrank
    return moved


def _copy_range(src: int, dst: int, offset: int, length: int) -> int:
    done = 0
    use_copy_range = True
    while done < length:
        at = offset + done
        if use_copy_range:
            try:
                n = os.copy_file_range(src, dst, length - done, at, at)
            except OSError as exc:
                if exc.errno not in _NO_COPY_RANGE:
                    raise
                use_copy_range = False
                continue
        else:
            os.lseek(dst, at, os.SEEK_SET)
            n = os.sendfile(dst, src, at, length - done)
        if n == 0:  # the source shrank under us
            break
        done += n
    return done


def patch(src: int, dst: int, size: int) -> tuple[int, int]:
    """Make ``dst`` equal ``src`` by comparing content chunk by chunk.

    Returns (bytes written, bytes compared). Only chunks that differ are written, so a
    live database checked after the app stopped costs reads, and writes what changed.
    """
    written = compared = 0
    offset = 0
    while offset < size:
        want = os.pread(src, min(CHUNK, size - offset), offset)
        if not want:  # the source shrank; the truncate below settles the size
            break
        have = os.pread(dst, len(want), offset)
        compared += len(want)
        if have != want:
            _pwrite_all(dst, want, offset)
            written += len(want)
        offset += len(want)
    if os.fstat(dst).st_size != size:
        os.ftruncate(dst, size)
    return written, compared


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def set_file_meta(fd: int, st: os.stat_result) -> None:
    # chown before chmod: chown clears set-user-ID and set-group-ID bits.
    os.fchown(fd, st.st_uid, st.st_gid)
    os.fchmod(fd, stat.S_IMODE(st.st_mode))
    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))


def same_meta(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_mode, a.st_uid, a.st_gid, a.st_mtime_ns) == (
        b.st_mode,
        b.st_uid,
        b.st_gid,
        b.st_mtime_ns,
    )


def set_dir_meta(path: str, st: os.stat_result) -> None:
    fd = open_dir(path)
    try:
        set_file_meta(fd, st)
    finally:
        os.close(fd)


def copy_symlink(
    src: str,
    dst: str,
    st: os.stat_result,
    *,
    src_dir_fd: int | None = None,
    dst_dir_fd: int | None = None,
) -> None:
    """Recreate a symlink as a link: its target is never followed, wherever it points."""
    os.symlink(os.readlink(src, dir_fd=src_dir_fd), dst, dir_fd=dst_dir_fd)
    os.chown(dst, st.st_uid, st.st_gid, dir_fd=dst_dir_fd, follow_symlinks=False)
    ns = (st.st_atime_ns, st.st_mtime_ns)
    os.utime(dst, ns=ns, dir_fd=dst_dir_fd, follow_symlinks=False)


def copy_file(
    src: str,
    dst: str,
    *,
    sync: bool = True,
    src_dir_fd: int | None = None,
    dst_dir_fd: int | None = None,
) -> tuple[int, os.stat_result]:
    """A standalone copy with its metadata. Returns (bytes moved, source stat)."""
    fd = open_for_reading(src, dir_fd=src_dir_fd)
    try:
        st = os.fstat(fd)
        out = create_file(dst, dir_fd=dst_dir_fd)
        try:
            moved = copy_data(fd, out)
            set_file_meta(out, st)
            if sync:
                os.fsync(out)
        finally:
            os.close(out)
    finally:
        os.close(fd)
    return moved, st


_libc = ctypes.CDLL(None, use_errno=True)


def syncfs(fd: int) -> None:
    """Flush the whole filesystem holding ``fd`` and report any write-back error.

    One call instead of an fsync per file (tens of thousands of them cost seconds even
    when clean). Errors are reported (Linux >= 5.8) for write-back since ``fd`` was
    opened, so callers open it *before* writing the files it must cover.
    """
    syncfs_fn = getattr(_libc, "syncfs", None)
    if syncfs_fn is None:  # not glibc: sync everything, without error reporting
        os.sync()
        return
    if syncfs_fn(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def fsync_path(path: str) -> None:
    """fsync a file or a directory (a directory's fsync makes its entries durable)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(path: str, *, dir_fd: int | None = None) -> None:
    """Remove a file, a symlink or a whole tree; a missing path is fine."""
    try:
        st = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path, dir_fd=dir_fd)  # fd-based: never follows a symlink inside
    else:
        os.unlink(path, dir_fd=dir_fd)


def exists(path: str, *, dir_fd: int | None = None) -> bool:
    """Whether anything is there, a dangling symlink included (``os.path.lexists``)."""
    try:
        os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


class Entry(NamedTuple):
    """One entry found by ``scan``. ``dir_fd`` is open only until the scan moves on."""

    rel: str
    st: os.stat_result  # lstat, as listed
    dir_fd: int  # the directory holding it
    name: str


def mount_points(root: str) -> frozenset[str]:
    """Paths relative to ``root`` where something is mounted below it (bind mounts too).

    A bind mount from the same filesystem keeps ``st_dev``: only the mount table shows it.
    Without ``/proc``, an empty set (``scan`` still stops at a change of ``st_dev``).
    """
    found: set[str] = set()
    try:
        with open("/proc/self/mountinfo", "rb") as table:
            lines = table.read().splitlines()
    except OSError:
        return frozenset()
    prefix = root.rstrip("/") + "/"
    for line in lines:
        fields = line.split(b" ")
        if len(fields) < 5:
            continue
        point = os.fsdecode(_unescape(fields[4]))
        if point.startswith(prefix):
            found.add(point[len(prefix) :])
    return frozenset(found)


def _unescape(field: bytes) -> bytes:
    """The mount table writes space, tab, newline and backslash as octal escapes."""
    out, i = bytearray(), 0
    while i < len(field):
        if field[i : i + 1] == b"\\" and field[i + 1 : i + 4].isdigit():
            out.append(int(field[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return bytes(out)


def scan(
    root: str | int,
    *,
    path: str | None = None,
    exclude: frozenset[tuple[int, int]] = frozenset(),
    strict: bool = True,
    skipped: Callable[[str], None] | None = None,
) -> Iterator[Entry]:
    """Every entry under ``root`` (not root itself), parents before children.

    ``root`` is a path, or an open directory (left open). ``path`` is its real path: for
    messages, and to find what is mounted below it. Each directory is held open while its
    entries are yielded and entered by name relative to its parent with ``O_NOFOLLOW``,
    checked to be the inode that was listed: a directory swapped for a symlink (or for
    another directory) after it was listed is never entered. Symlinks are reported, never
    followed. Mount points, and directories of another filesystem (``st_dev``), are not
    crossed: ``skipped(rel)`` hears of them. Directories in ``exclude`` (by device and
    inode: the backup store itself, if it sits inside a source) are left out. With
    ``strict=False`` an entry that vanishes or changes between listing and use is skipped,
    as happens while the app still runs; otherwise that raises FileNotFoundError.

    Open descriptors: the directory being read, and each ancestor with subdirectories
    still to read: at most the tree's depth.
    """
    where = path if path is not None else (root if isinstance(root, str) else "")
    root_fd = open_dir(root) if isinstance(root, str) else root
    frames: list[tuple[int, list[tuple[str, str, os.stat_result]]]] = []
    try:
        dev = os.fstat(root_fd).st_dev
        mounts = mount_points(where) if where else frozenset()
        rel, fd = "", root_fd
        while fd >= 0:
            subdirs: list[tuple[str, str, os.stat_result]] = []
            frames.append((fd, subdirs))  # from now on closed in the finally below
            for name, st in _listing(fd, rel, where, strict):
                child = f"{rel}/{name}" if rel else name
                is_dir = stat.S_ISDIR(st.st_mode)
                if child in mounts or (is_dir and st.st_dev != dev):
                    if skipped is not None:
                        skipped(child)
                elif not (is_dir and (st.st_dev, st.st_ino) in exclude):
                    yield Entry(child, st, fd, name)
                    if is_dir:
                        subdirs.append((child, name, st))
            rel, fd = _enter_next(frames, root_fd, where, strict)
    finally:
        for parent, _ in frames:
            if parent != root_fd:
                os.close(parent)
        if isinstance(root, str):
            os.close(root_fd)


def _enter_next(
    frames: list[tuple[int, list[tuple[str, str, os.stat_result]]]],
    root_fd: int,
    where: str,
    strict: bool,
) -> tuple[str, int]:
    """Open the next directory to read, by name in its open parent; ("", -1): done.

    A directory is closed once its last subdirectory is open: nothing is opened in it
    again (so a chain of single subdirectories costs one descriptor, not its depth).
    """
    while frames:
        parent, pending = frames[-1]
        if not pending:
            frames.pop()
            if parent != root_fd:
                os.close(parent)
            continue
        rel, name, st = pending.pop()
        try:
            fd = open_dir(name, dir_fd=parent, expect=st)
        except OSError as exc:
            if not _vanished(exc):
                raise
            if strict:
                raise FileNotFoundError(errno.ENOENT, "changed", join(where, rel)) from exc
            continue
        if not pending:
            frames.pop()
            if parent != root_fd:
                os.close(parent)
        return rel, fd
    return "", -1


def _vanished(exc: OSError) -> bool:
    """Gone, or swapped for something else (a symlink: ELOOP; a file: ENOTDIR)."""
    return exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)


def _listing(fd: int, rel: str, where: str, strict: bool) -> list[tuple[str, os.stat_result]]:
    with os.scandir(fd) as entries:
        listed = list(entries)
    found = []
    for entry in listed:
        try:
            found.append((entry.name, entry.stat(follow_symlinks=False)))
        except FileNotFoundError:
            if strict:
                child = f"{rel}/{entry.name}" if rel else entry.name
                raise FileNotFoundError(errno.ENOENT, "vanished", join(where, child)) from None
    return found


def walk(
    root: str, *, exclude: frozenset[tuple[int, int]] = frozenset(), strict: bool = True
) -> Iterator[tuple[str, os.stat_result]]:
    """``scan`` as (relative path, lstat) pairs."""
    for entry in scan(root, exclude=exclude, strict=strict):
        yield entry.rel, entry.st
