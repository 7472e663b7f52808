"""Hard links to the previous backup: why keeping N backups does not cost N full copies.

Only a file that provably did not change since the previous backup was sealed is linked,
never a live one (the final pass may have to patch it, and a shared inode is never
written), and never the live data itself (the app could modify it in place).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from workers.backup import files
from workers.backup.files import join

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Previous:
    """The same source in the previous complete backup."""

    root: str  # its copy inside that backup
    # rel -> [inode, ctime_ns] of the source file when that backup was sealed
    seen: Mapping[str, Sequence[int]]

    def origin(self, rel: str, st: os.stat_result) -> str | None:
        """The previous backup's copy of this file, if it may be hard-linked.

        Unchanged means: the same inode with the same ctime as when that backup was
        sealed (nothing wrote to it or changed its metadata since: no program can set a
        ctime back, unlike an mtime), and the old copy has the same size, mtime, mode and
        owner (a link shares that inode's metadata).
        """
        seen = self.seen.get(rel)
        if seen is None or list(seen) != [st.st_ino, st.st_ctime_ns]:
            return None
        origin = join(self.root, rel)
        try:
            old = os.lstat(origin)
        except OSError:
            return None
        if not stat.S_ISREG(old.st_mode) or old.st_size != st.st_size:
            return None
        return origin if files.same_meta(old, st) else None

    def link(self, rel: str, st: os.stat_result, dst: str) -> bool:
        """Link ``dst`` to the previous copy of an unchanged file; False: copy it instead."""
        origin = self.origin(rel, st)
        if origin is None:
            return False
        try:
            os.link(origin, dst, follow_symlinks=False)
        except OSError as exc:  # EMLINK (too many links), EXDEV, ...
            log.debug("cannot link %s from the previous backup (%s); copying", rel, exc.strerror)
            return False
        return True

    def would_link(self, rel: str, st: os.stat_result, dir_fd: int, name: str) -> bool:
        """Whether a backup would link this file rather than copy it (for estimates).

        ``dir_fd`` and ``name``: where the live file is (``files.scan``).
        """
        if files.is_live_name(rel) or self.origin(rel, st) is None:
            return False
        try:
            fd = files.open_for_reading(name, dir_fd=dir_fd)
        except OSError:
            return False
        try:
            return not files.has_sqlite_magic(fd)  # a database is live: always copied
        finally:
            os.close(fd)
