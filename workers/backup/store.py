"""A target's data backups on disk: start, finish, list, restore, prune.

```
<root>/.lock                 held by restore and prune, and briefly by start
<root>/<id>/manifest.json    a complete backup (BackupInfo); never written again
<root>/<id>/index.json       source inode + ctime per file: what the next backup may link
<root>/<id>/data/<n>/        source n (a directory tree, or a single file)
<root>/<id>.partial/         a backup being written; flock'ed while its writer lives
<root>/.trash-<id>-<rand>/   a backup being deleted (renamed first, so never half-listed)
```
A backup becomes complete by one rename, once everything in it is durable (one syncfs
after pass 1, an fsync for each file and directory the final pass touched). Nothing
writes into a complete backup, which is what makes the hard links between consecutive
backups safe; restores copy out of it, never link.

The live data is the app's: it may hold symlinks and swap directories at any time.
Which symlinks rollhook follows on the way to a source is decided in ``paths`` (only
outside the data of every source, and at restore only while unchanged since the backup);
below a source, nothing is ever followed (``files.scan``).
"""

from __future__ import annotations

import builtins
import errno
import fcntl
import json
import logging
import os
import re
import stat
from collections.abc import Callable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from workers.backup import files, paths
from workers.backup.adoption import Fill, seal
from workers.backup.early import EarlyCopy
from workers.backup.links import Previous
from workers.backup.mirror import Mirror
from workers.backup.model import BackupInfo, RestoreResult, Source
from workers.backup.restore import Restorer, find_leftovers, restored_places
from workers.backup.running import INDEX, MANIFEST, RunningBackup
from workers.errors import DeployError, InfrastructureError, OperatorError

log = logging.getLogger(__name__)

_PARTIAL = ".partial"
_TRASH = ".trash-"
# No dots: ids appear in sibling names (<path>.rollhook-aside-<id>.2) and must parse back.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}\Z")
_DIR_BYTES = 4096  # what a directory costs on disk, for the estimate


def check_id(backup_id: str) -> None:
    if not _ID.match(backup_id):
        raise OperatorError(f"invalid backup id {backup_id!r}: letters, digits, '-' and '_' only")


class BackupStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def start(self, backup_id: str, sources: Sequence[Source]) -> RunningBackup:
        """Pass 1, while the app still runs: copy everything, link what did not change.

        A ``<id>.partial`` left by a crashed attempt at the same id is discarded first.
        """
        check_id(backup_id)
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise OperatorError(f"backup {backup_id}: two sources share a name: {names}")
        if (self.root / backup_id).exists():
            raise DeployError(f"backup {backup_id} already exists under {self.root}")
        try:
            roots = paths.settle([s.path for s in sources])
        except paths.UnsafeSymlink as exc:
            raise paths.UnsafeSymlink(f"backup {backup_id} refused: {exc}") from exc
        self._make_root()
        latest = self._latest()
        previous = self._previous(latest)
        partial = self.root / f"{backup_id}{_PARTIAL}"
        with self._locked():  # prune must never see this partial unlocked
            lock_fd = self._claim_partial(partial)
        self._empty_trash()
        running = RunningBackup(
            root=self.root,
            backup_id=backup_id,
            partial=partial,
            lock_fd=lock_fd,
            mirrors=[
                Mirror(
                    s,
                    str(partial / "data" / str(n)),
                    previous.get(s.name),
                    self._exclude(),
                    roots,
                )
                for n, s in enumerate(sources)
            ],
            linked_from=latest.id if latest else None,
        )
        try:
            running.first_pass()
        except BaseException:
            running.abort()
            raise
        return running

    def adopt(self, backup_id: str, fill: Fill, note: str) -> BackupInfo:
        """A complete backup of data ``fill`` writes here (``adoption``: a remote snapshot
        restored into the store); ``note`` goes with each source, saying where it came from.
        """
        check_id(backup_id)
        if (self.root / backup_id).exists():
            raise DeployError(f"backup {backup_id} already exists under {self.root}")
        self._make_root()
        partial = self.root / f"{backup_id}{_PARTIAL}"
        with self._locked():  # prune must never see this partial unlocked
            lock_fd = self._claim_partial(partial)
        try:
            return seal(partial, self.root / backup_id, backup_id, fill, note)
        except BaseException:
            try:
                files.remove(str(partial))
            except OSError as exc:  # prune removes it later
                log.warning("cannot remove %s: %s", partial, exc.strerror)
            raise
        finally:
            os.close(lock_fd)

    def estimate(self, sources: Sequence[Source]) -> int:
        """Bytes a new backup of ``sources`` will need: all it cannot link from the last one.

        Live files always count (they are always copied). Sizes are allocated blocks, so
        sparse files count for what they hold. For the preflight disk check.
        """
        previous = self._previous(self._latest())
        try:
            roots = paths.settle([s.path for s in sources])
        except paths.UnsafeSymlink as exc:
            raise paths.UnsafeSymlink(f"backup refused: {exc}") from exc
        total = 0
        for source in sources:
            with paths.resolve_for("backup", source.path, roots) as top:
                total += self._estimate(top, previous.get(source.name))
        return total

    def _estimate(self, top: paths.Resolved, prev: Previous | None) -> int:
        st = top.st
        if st is None:
            return 0
        if stat.S_ISREG(st.st_mode):
            return _allocated(st)
        if not stat.S_ISDIR(st.st_mode):
            return 0
        total = _DIR_BYTES
        try:
            fd = files.open_dir(top.name, dir_fd=top.dir_fd, expect=st)
        except OSError:
            return total  # swapped while the app runs: the backup will say what it is
        try:
            for entry in files.scan(fd, path=top.path, exclude=self._exclude(), strict=False):
                child = entry.st
                if stat.S_ISDIR(child.st_mode):
                    total += _DIR_BYTES
                elif stat.S_ISREG(child.st_mode) and not (
                    prev is not None and prev.would_link(entry.rel, child, entry.dir_fd, entry.name)
                ):
                    total += _allocated(child)
        except OSError as exc:
            raise InfrastructureError(f"cannot list {exc.filename}: {exc.strerror}") from exc
        finally:
            os.close(fd)
        return total

    def get(self, backup_id: str) -> BackupInfo:
        check_id(backup_id)
        path = self.root / backup_id
        if not path.is_dir():
            if (self.root / f"{backup_id}{_PARTIAL}").exists():
                raise OperatorError(f"backup {backup_id} is incomplete and cannot be used")
            raise OperatorError(f"no backup {backup_id} under {self.root}")
        info = _read_manifest(path)
        if info is None or info.id != backup_id or not info.complete:
            raise InfrastructureError(f"backup {backup_id}: {path / MANIFEST} is unreadable")
        return info

    def restore(self, backup_id: str) -> RestoreResult:
        """Make every source path equal the backup. The app must be stopped.

        Each source is copied next to its live path, then swapped in by rename; what was
        there is kept beside it as ``<path>.rollhook-aside-<id>`` until prune. Running it
        again after a crash finishes the job.
        """
        info = self.get(backup_id)
        with self._locked():
            return Restorer(self.root / backup_id, info).run()

    def stage_restore(
        self,
        backup_id: str,
        cancelled: Callable[[], bool] = lambda: False,
        early: EarlyCopy | None = None,
    ) -> int:
        """Stage a restore's copies now (the app may run), so that ``restore`` later only
        swaps them in by rename. The same checks as ``restore``; nothing live changes.
        ``early``: the copies made from this backup's pass 1 (``stage_early``), into which
        only the final pass's changes are copied. Returns how many sources were staged now
        (0: all were staged already)."""
        info = self.get(backup_id)
        with self._locked():
            return Restorer(self.root / backup_id, info).stage(cancelled, early)

    def stage_early(
        self, running: RunningBackup, cancelled: Callable[[], bool] = lambda: False
    ) -> EarlyCopy:
        """The rollback's copy of a backup between its passes, made from pass 1 while the
        app runs (``workers.backup.early``); finished by ``stage_restore`` once sealed."""
        partial, info = running.provisional()
        with self._locked():
            return Restorer(partial, info).stage_early(cancelled)

    def discard_staged(self, backup_id: str) -> builtins.list[str]:
        """Remove copies staged for a restore of this backup that is not going to happen."""
        info = self.get(backup_id)
        with self._locked():
            return Restorer(self.root / backup_id, info).discard_staged()

    def prune(self, keep: int, protect: AbstractSet[str] = frozenset()) -> builtins.list[str]:
        """Keep the newest ``keep`` complete backups and the protected ones; remove the rest.

        Also removes partial backups no live writer holds, and set-aside or staged copies
        (from restores) belonging to backups that are gone. Returns the removed ids.
        """
        if keep < 0:
            raise OperatorError(f"keep must be 0 or more, not {keep}")
        if not self.root.is_dir():
            return []
        with self._locked():
            backups = self.list()
            kept = {b.id for b in backups[:keep]} | (set(protect) & {b.id for b in backups})
            removed = [b.id for b in backups if b.id not in kept]
            for backup_id in removed:
                self._trash(self.root / backup_id)
            self._trash_partials()
            places = {place for b in backups for place in restored_places(b)}
            beside = [path for path, owner in find_leftovers(places) if owner not in kept]
        # Deleting is the slow part (an unlink per file); it runs without the lock, which
        # a restore may be waiting for with the app down.
        self._empty_trash()
        for path in beside:
            log.info("removing %s (set aside or staged by a restore)", path)
            try:
                files.remove(path)
            except OSError as exc:
                raise InfrastructureError(f"cannot remove {path}: {exc.strerror}") from exc
        if removed:
            log.info("pruned backups %s under %s", ", ".join(removed), self.root)
        return removed

    def list(self) -> builtins.list[BackupInfo]:
        """Complete backups, newest first. Partial ones never appear here."""
        found: builtins.list[BackupInfo] = []
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return found
        except OSError as exc:
            raise InfrastructureError(f"cannot list {self.root}: {exc.strerror}") from exc
        for name in names:
            if not _ID.match(name):
                continue  # .partial, .trash-, .lock and anything else that is not ours
            info = _read_manifest(self.root / name)
            if info is None:
                log.warning("ignoring %s: no readable manifest", self.root / name)
            elif info.complete and info.id == name:
                found.append(info)
        found.sort(key=lambda b: (b.created_at, b.id), reverse=True)
        return found

    # -- internals -------------------------------------------------------------------

    def _latest(self) -> BackupInfo | None:
        backups = self.list()
        return backups[0] if backups else None

    def _previous(self, latest: BackupInfo | None) -> dict[str, Previous]:
        """Per source name, its copy in the latest backup: what unchanged files link to."""
        if latest is None:
            return {}
        index = _read_index(self.root / latest.id)
        return {
            old.name: Previous(root=str(self.root / latest.id / old.dir), seen=index[old.name])
            for old in latest.sources
            if old.kind != "missing" and isinstance(index.get(old.name), dict)
        }

    def _exclude(self) -> frozenset[tuple[int, int]]:
        try:
            st = os.stat(self.root)
        except OSError:
            return frozenset()
        return frozenset({(st.st_dev, st.st_ino)})

    def _make_root(self) -> None:
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise InfrastructureError(f"cannot create {self.root}: {exc.strerror}") from exc

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self._make_root()
        path = self.root / ".lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise InfrastructureError(f"cannot open {path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _claim_partial(self, partial: Path) -> int:
        if partial.exists():
            if _is_held(partial):
                raise DeployError(f"{partial} is being written by another process")
            log.info("discarding %s left by an interrupted backup", partial)
            self._trash(partial)
        try:
            # 0700: a backup holds the runtime .env's secrets, whatever its source's mode.
            partial.mkdir(mode=0o700)
            (partial / "data").mkdir(mode=0o700)
            fd = os.open(partial, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise InfrastructureError(f"cannot create {partial}: {exc.strerror}") from exc
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd

    def _trash(self, path: Path) -> None:
        """Rename out of sight first: a crash while deleting leaves trash, not a half backup."""
        trash = self.root / f"{_TRASH}{path.name}-{os.urandom(4).hex()}"
        try:
            os.rename(path, trash)
            files.fsync_path(str(self.root))
        except OSError as exc:
            raise InfrastructureError(f"cannot remove {path}: {exc.strerror}") from exc

    def _empty_trash(self) -> None:
        for entry in os.scandir(self.root):
            if entry.name.startswith(_TRASH):
                try:
                    files.remove(entry.path)
                except FileNotFoundError:
                    pass  # another prune is emptying it too
                except OSError as exc:
                    raise InfrastructureError(
                        f"cannot remove {entry.path}: {exc.strerror}"
                    ) from exc

    def _trash_partials(self) -> None:
        for entry in os.scandir(self.root):
            path = Path(entry.path)
            if entry.name.endswith(_PARTIAL) and not _is_held(path):
                log.info("removing %s left by an interrupted backup", path)
                self._trash(path)


def _allocated(st: os.stat_result) -> int:
    return st.st_blocks * 512 if st.st_blocks else st.st_size


def _is_held(path: Path) -> bool:
    """Whether a live writer holds this partial backup (its flock dies with its process)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)
    return False


def _read_manifest(path: Path) -> BackupInfo | None:
    try:
        data = json.loads((path / MANIFEST).read_text())
        return BackupInfo.from_json(data)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _read_index(path: Path) -> dict[str, Any]:
    """The link index of a backup; without one, nothing is linked (a full copy is safe)."""
    try:
        data = json.loads((path / INDEX).read_text())
        sources = data["sources"]
    except (OSError, ValueError, TypeError, KeyError):
        log.warning("backup %s has no readable %s; files will be copied", path, INDEX)
        return {}
    return sources if isinstance(sources, dict) else {}
