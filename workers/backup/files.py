"""File-level operations for backups: kernel copies, content patches, metadata, fsync, walks.

Everything here works on plain ``str`` paths and file descriptors: a storage volume can
hold hundreds of thousands of files, and ``Path`` objects per entry cost more than the
syscalls. Callers turn ``OSError`` into ``InfrastructureError`` with the paths involved.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import stat
from collections.abc import Iterator
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


def open_for_reading(path: str) -> int:
    """Open a file we expect to be regular, without following a symlink.

    O_NONBLOCK: should the entry have been swapped for a FIFO since it was listed, the
    open must not hang (it changes nothing for regular files). O_NOATIME: reading the
    live data for a backup should not touch it at all.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        return os.open(path, flags | os.O_NOATIME)
    except PermissionError:  # O_NOATIME needs ownership or CAP_FOWNER
        return os.open(path, flags)


def create_file(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


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
    os.chown(path, st.st_uid, st.st_gid, follow_symlinks=False)
    os.chmod(path, stat.S_IMODE(st.st_mode))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def copy_symlink(src: str, dst: str, st: os.stat_result) -> None:
    """Recreate a symlink as a link: its target is never followed, wherever it points."""
    os.symlink(os.readlink(src), dst)
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def copy_file(src: str, dst: str, *, sync: bool = True) -> tuple[int, os.stat_result]:
    """A standalone copy with its metadata. Returns (bytes moved, source stat)."""
    fd = open_for_reading(src)
    try:
        st = os.fstat(fd)
        out = create_file(dst)
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


def remove(path: str) -> None:
    """Remove a file, a symlink or a whole tree; a missing path is fine."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def walk(
    root: str, *, exclude: frozenset[tuple[int, int]] = frozenset(), strict: bool = True
) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry under ``root`` (not root itself), parents before children.

    Symlinks are reported, never followed. Directories in ``exclude`` (by device and
    inode: the backup store itself, if it sits inside a source) are left out. With
    ``strict=False`` an entry that vanishes between listing and stat is skipped, as
    happens while the app still runs.
    """
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            with os.scandir(join(root, rel)) as entries:
                listed = list(entries)
        except (FileNotFoundError, NotADirectoryError):
            if strict:
                raise
            continue
        for entry in listed:
            child = f"{rel}/{entry.name}" if rel else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                if strict:
                    raise
                continue
            if stat.S_ISDIR(st.st_mode):
                if (st.st_dev, st.st_ino) in exclude:
                    continue
                stack.append(child)
            yield child, st
