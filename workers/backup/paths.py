"""Source paths on the host, resolved without following a symlink the app could have planted.

rollhook runs as root; the app container can write inside every source that is a
directory, its *data*: any entry there may be a symlink, or be swapped for one at any
moment. The rule for following symlinks:

- On the way to a source, a symlink is followed only if the directory holding it is
  neither a source nor inside one: only in the part of the path that the host alone
  controls (``work/storage -> /mnt/data/storage``, set up by the operator). A symlink
  inside a source's data on the way to another source (anything-llm's ``storage/.env``,
  mounted on its own; ``storage/conf/`` on the way to ``storage/conf/x``) is refused with
  :class:`UnsafeSymlink`, never followed. "Inside" is decided on the real paths of all the
  service's sources (``settle``).
- Below a source's own root, symlinks are data: backed up and restored as links, never
  followed (``files.scan``).
- A restore goes to the real path recorded when the backup was taken, and only if the
  source path still resolves to it (a link changed since is refused).

Resolution walks from ``/`` holding each directory open and looks every component up
relative to it, opening directories with ``O_NOFOLLOW``: a directory swapped for a symlink
after it was checked is not followed either. Callers act relative to the ``dir_fd`` they
get back, never through the path again.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Collection, Iterable
from contextlib import suppress
from dataclasses import dataclass
from typing import Literal

from workers.closeable import Closeable
from workers.errors import InfrastructureError, OperatorError

FileCreated = Literal["present", "created", "symlink"]
MAX_LINKS = 40  # as the kernel: more symlinks on one path is a loop
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeSymlink(OperatorError):
    """A symlink where rollhook must not follow one: inside the data the app can write.

    Retrying does not help: someone has to look at it (the app may have planted it).
    """


@dataclass
class Resolved(Closeable):
    """Where a source path leads, held open. Close it (or use it as a context manager)."""

    path: str  # the real path: no symlink anywhere in it
    dir_fd: int  # the deepest existing directory on it, open (its parent when it exists)
    dir_path: str  # that directory's real path
    rest: tuple[str, ...]  # the components below it; the last one is the entry itself
    st: os.stat_result | None  # the entry's lstat; None when it does not exist

    @property
    def name(self) -> str:
        return self.rest[-1]

    @property
    def parent_exists(self) -> bool:
        return len(self.rest) == 1

    def close(self) -> None:
        if self.dir_fd >= 0:
            os.close(self.dir_fd)
            self.dir_fd = -1


def settle(
    paths: Iterable[str | os.PathLike[str]], extra: Collection[str] = (), *, strict: bool = True
) -> frozenset[str]:
    """The real paths of all the service's sources: the "inside" of the rule above.

    Each path is resolved by the rule against the real paths found so far, shallowest
    first (a directory's data is known before what lies in it), then every path is
    checked again against all of them. ``extra``: real paths known to be sources (those
    recorded in a backup). ``strict``: raise one UnsafeSymlink naming every symlink
    refused; else only return what was found.

    When nothing is refused this is exactly every source's real path (resolution then
    follows the same links as ``realpath``), whose data no source's path was resolved
    through. When something is, the refusal names the symlink the app planted: with
    plain ``realpath`` a planted ``storage/.env -> /`` would put every path "inside"
    and hide it behind refusals of the operator's own links.
    """
    ordered = sorted((os.fspath(p) for p in paths), key=lambda p: p.rstrip("/").count("/"))
    found = set(extra)
    for path in ordered:
        try:
            with resolve(path, found) as at:
                found.add(at.path)
        except (UnsafeSymlink, OSError):
            continue  # refused below; other errors are reported where the path is used
    if strict:
        check(ordered, found)
    return frozenset(found)


def within(path: str, root: str) -> bool:
    """``path`` is ``root`` or below it (real paths, compared lexically)."""
    return root in ("/", path) or path.startswith(root + "/")


def holder_of(directory: str, roots: Collection[str]) -> str | None:
    """The source root whose data holds ``directory``, if any."""
    for root in sorted(roots, key=len):
        if within(directory, root):
            return root
    return None


def _join(directory: str, name: str) -> str:
    return f"{directory.rstrip('/')}/{name}"


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def resolve(path: str | os.PathLike[str], roots: Collection[str]) -> Resolved:
    """Resolve a source path by the rule above. Raises UnsafeSymlink or OSError."""
    text = os.fspath(path)
    if not text.startswith("/"):
        text = _join(os.getcwd(), text)
    todo = list(reversed(text.split("/")))
    walk = _Walk(text, roots)
    try:
        while todo:
            name = todo.pop()
            if name in ("", "."):
                continue
            if name == "..":
                walk.up()
                continue
            try:
                st = os.stat(name, dir_fd=walk.fd, follow_symlinks=False)
            except FileNotFoundError:
                return walk.missing(name, todo)
            if stat.S_ISLNK(st.st_mode):
                walk.follow(name, todo)
            elif any(n not in ("", ".") for n in todo):
                walk.enter(name, st)
            else:
                return walk.found(name, st)  # the entry itself
        raise OperatorError(f"{text} cannot be a data source: it is the root directory")
    finally:
        walk.close()


class _Walk:
    """``resolve``'s state: the real directories so far, each held open."""

    def __init__(self, text: str, roots: Collection[str]) -> None:
        self.text = text
        self.roots = roots
        self.names: list[str] = []
        self.fds = [os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
        self.links = 0

    @property
    def fd(self) -> int:
        return self.fds[-1]

    @property
    def here(self) -> str:
        return "/" + "/".join(self.names)

    def up(self) -> None:
        if self.names:  # "/.." is "/"
            self.names.pop()
            os.close(self.fds.pop())

    def enter(self, name: str, st: os.stat_result) -> None:
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), self.text)
        self.fds.append(os.open(name, DIR_FLAGS, dir_fd=self.fd))
        if not _same(os.fstat(self.fd), st):
            raise FileNotFoundError(errno.ENOENT, "replaced while being resolved", self.text)
        self.names.append(name)

    def follow(self, name: str, todo: list[str]) -> None:
        """A symlink: refused inside a source's data, else its target is resolved next."""
        holder = holder_of(self.here, self.roots)
        if holder is not None:
            raise UnsafeSymlink(
                f"{_join(self.here, name)} is a symlink inside {holder}, data the app can "
                "write; rollhook never follows a symlink there"
            )
        self.links += 1
        if self.links > MAX_LINKS:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), self.text)
        target = os.readlink(name, dir_fd=self.fd)
        if target.startswith("/"):
            for fd in self.fds[1:]:
                os.close(fd)
            del self.fds[1:]
            self.names.clear()
        todo.extend(reversed(target.split("/")))

    def found(self, name: str, st: os.stat_result) -> Resolved:
        here = self.here
        return Resolved(_join(here, name), self.fds.pop(), here, (name,), st)

    def missing(self, name: str, todo: list[str]) -> Resolved:
        rest = [name, *(n for n in reversed(todo) if n not in ("", "."))]
        if ".." in rest:  # below something missing: the kernel would say ENOENT too
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), self.text)
        here = self.here
        return Resolved(_join(here, "/".join(rest)), self.fds.pop(), here, tuple(rest), None)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()


def resolve_for(what: str, path: str | os.PathLike[str], roots: Collection[str]) -> Resolved:
    """:func:`resolve` for a step over a source (``what``: "backup", "stage"): a refusal
    names the step and the source; a path that cannot be read is the system's failure."""
    try:
        return resolve(path, roots)
    except UnsafeSymlink as exc:
        raise UnsafeSymlink(f"{what} of {path} refused: {exc}") from exc
    except OSError as exc:
        raise InfrastructureError(f"cannot read {path}: {exc.strerror}") from exc


def check(paths: Iterable[str | os.PathLike[str]], roots: Collection[str]) -> None:
    """Resolve every path by the rule: one UnsafeSymlink naming every symlink refused.

    Other errors are left to where a path is used.
    """
    refused: list[str] = []
    for path in paths:
        try:
            resolve(path, roots).close()
        except UnsafeSymlink as exc:
            refused.append(str(exc))
        except OSError:
            pass
    if refused:
        raise UnsafeSymlink("; ".join(dict.fromkeys(refused)))


def open_dirs(dir_fd: int, names: Collection[str], *, create: bool) -> int:
    """An fd of ``dir_fd``/``names``, each opened with O_NOFOLLOW; ``create``: mkdir first.

    Directories are created with mode 0777 - umask, as ``os.makedirs`` does: only the
    missing part of a path, where there is nothing to follow yet.
    """
    fd = os.dup(dir_fd)
    try:
        for name in names:
            if create:
                with suppress(FileExistsError):  # made meanwhile: O_NOFOLLOW says what it is
                    os.mkdir(name, 0o777, dir_fd=fd)
            child = os.open(name, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def create_empty_file(path: str | os.PathLike[str], roots: Collection[str]) -> FileCreated:
    """Create ``path`` as an empty 0600 file if nothing is there; never through a symlink.

    "symlink": nothing was created because the path is a dangling symlink, or a symlink in
    a source's data (the file itself or a directory on the way): creating through it
    would make a root-owned file wherever it points.
    """
    text = os.fspath(path)
    parent, name = os.path.split(text)
    if name in ("", ".", ".."):
        raise InfrastructureError(f"cannot create {text}: not a file name")
    try:
        with resolve(parent or ".", roots) as where:
            if where.st is not None and not stat.S_ISDIR(where.st.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), parent)
            parent_fd = open_dirs(where.dir_fd, where.rest, create=where.st is None)
            in_data = holder_of(where.path, roots) is not None
        try:
            return _create_at(parent_fd, name, in_data)
        finally:
            os.close(parent_fd)
    except UnsafeSymlink:
        return "symlink"
    except OSError as exc:
        raise InfrastructureError(f"cannot create {text}: {exc.strerror}") from exc


def _create_at(parent_fd: int, name: str, in_data: bool) -> FileCreated:
    flags = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_WRONLY | os.O_CLOEXEC
    try:
        os.close(os.open(name, flags, 0o600, dir_fd=parent_fd))
    except FileExistsError:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            return "present"
        if in_data:
            return "symlink"  # planted in the app's data: not even looked through
        try:
            os.stat(name, dir_fd=parent_fd)  # the operator's link, to an existing file
        except FileNotFoundError:
            return "symlink"
        return "present"
    os.fsync(parent_fd)
    return "created"
