"""A tar archive (``git archive``'s) written into an empty folder, and never outside it.

The infra repository is not trusted to be benign: a crafted tree can hold entry names
with '/' and links that point anywhere, and ``git fetch`` without object checks takes
them. tarfile's extraction filters are missing on Debian 12's Python (3.11.2), so nothing
here leans on them: each member is written relative to its parent folder's fd, reached
one component at a time without following any link; a member whose path passes through
a link already written is refused; only files, folders and links whose target stays
inside (each alone, and all of them together) are written, with plain modes (no setuid,
no owner); and what one archive may write is bounded.
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
import tarfile
from pathlib import Path, PurePosixPath

from workers.errors import OperatorError


def too_many_files(what: str, bound: int) -> str:
    return f"{what}: more than {bound} files, folders and links (the export's bound on files)"


def too_many_bytes(what: str, bound: int) -> str:
    return f"{what}: more than {bound} bytes of files (the export's bound on bytes)"


def extract(tar: tarfile.TarFile, root: Path, what: str, *, max_files: int, max_bytes: int) -> None:
    """Write the archive's members into the empty folder ``root``, never outside it.

    ``what`` names the archive in messages; more than ``max_files`` members or
    ``max_bytes`` of file content is refused (OperatorError, naming the bound).
    """
    links: set[PurePosixPath] = set()
    entries = size = 0
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for member in tar:
            entries += 1
            size += member.size if member.isfile() else 0
            if entries > max_files:
                raise OperatorError(too_many_files(what, max_files))
            if size > max_bytes:
                raise OperatorError(too_many_bytes(what, max_bytes))
            path = _member_path(member, what)
            through = next((p for p in path.parents if p in links), None)
            if through is not None:
                raise OperatorError(
                    f"{what}: {member.name} would be written through the link {through}"
                )
            parent = _open_folder(root_fd, path.parent, member.name, what)
            try:
                _write(tar, member, parent, path.name, what)
            finally:
                os.close(parent)
            if member.issym():
                links.add(path)
    finally:
        os.close(root_fd)
    # Each link alone stays inside; together they might not ("a -> ." then "b -> a/.."),
    # and compose follows them when it reads or mounts a file: resolve each for real.
    inside = os.path.realpath(root)
    for link in sorted(links):
        target = os.path.realpath(root / link)
        if target != inside and not target.startswith(inside + os.sep):
            raise OperatorError(
                f"{what}: link {link} points outside the folder (links must stay inside)"
            )


def _member_path(member: tarfile.TarInfo, what: str) -> PurePosixPath:
    parts = member.name.split("/")
    if any(part in {"", ".", ".."} for part in parts):
        raise OperatorError(f"{what}: {member.name} would be written outside the folder")
    if member.issym():
        target = posixpath.normpath(
            posixpath.join(*parts[:-1], member.linkname) if len(parts) > 1 else member.linkname
        )
        if posixpath.isabs(member.linkname) or target == ".." or target.startswith("../"):
            raise OperatorError(
                f"{what}: link {member.name} points outside the folder (links must stay inside)"
            )
    elif not (member.isfile() or member.isdir()):
        raise OperatorError(f"{what}: {member.name} is not a file, folder or link")
    return PurePosixPath(*parts)


def _open_folder(root_fd: int, folder: PurePosixPath, name: str, what: str) -> int:
    """An fd of ``folder`` below ``root_fd``, reached without following any link."""
    fd = os.dup(root_fd)
    try:
        for part in folder.parts:
            try:
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except (FileNotFoundError, NotADirectoryError) as exc:
                raise OperatorError(f"{what}: {name} is not inside a folder of the export") from exc
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
                raise OperatorError(f"{what}: {name} would be written through a link") from exc
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write(
    tar: tarfile.TarFile, member: tarfile.TarInfo, parent: int, name: str, what: str
) -> None:
    """One member, created anew (never over something already there) in ``parent``."""
    try:
        if member.issym():
            os.symlink(member.linkname, name, dir_fd=parent)
            return
        if member.isdir():
            os.mkdir(name, 0o700, dir_fd=parent)
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
            mode = 0o755
        else:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            fd = os.open(name, flags, 0o600, dir_fd=parent)
            mode = 0o755 if member.mode & 0o100 else 0o644
    except FileExistsError as exc:
        raise OperatorError(f"{what}: {member.name} appears twice in the export") from exc
    try:
        if member.isfile():
            source = tar.extractfile(member)
            if source is None:
                raise OperatorError(f"{what}: {member.name} has no content")
            with open(fd, "wb", closefd=False) as out:
                shutil.copyfileobj(source, out)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
