"""A backup between its two passes: pass 1 done while the app ran, the final pass to come."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from workers.backup import files
from workers.backup.mirror import Mirror
from workers.backup.model import FORMAT, BackupInfo
from workers.errors import DeployError, InfrastructureError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
INDEX = "index.json"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class RunningBackup:
    """A backup between its two passes. Use ``finish()`` once the app is stopped.

    As a context manager it aborts unless finished, so nothing half-done outlives it.
    """

    def __init__(
        self,
        *,
        root: Path,
        backup_id: str,
        partial: Path,
        lock_fd: int,
        mirrors: Sequence[Mirror],
        linked_from: str | None,
    ) -> None:
        self.id = backup_id
        self._root = root
        self._partial = partial
        self._lock_fd = lock_fd
        self._mirrors = mirrors
        self._linked_from = linked_from
        self._created_at = _now()
        self._pass1_seconds = 0.0
        self._state = "running"

    def first_pass(self) -> None:
        began = time.monotonic()
        for mirror in self._mirrors:
            mirror.first_pass()
        # Pass 1 is made durable while the app still runs, so the final pass only has its
        # own few writes to sync. The lock fd was opened before any copy: syncfs on it
        # reports every write-back error since.
        try:
            files.syncfs(self._lock_fd)
        except OSError as exc:
            raise InfrastructureError(f"cannot sync {self._partial}: {exc.strerror}") from exc
        self._pass1_seconds = time.monotonic() - began
        written = sum(m.pass1_written for m in self._mirrors)
        log.info(
            "backup %s: pass 1 done in %.1fs, %d MiB copied",
            self.id,
            self._pass1_seconds,
            written >> 20,
        )

    def provisional(self) -> tuple[Path, BackupInfo]:
        """Where the partial backup is and what pass 1 put in it (for the rollback's copy
        made from it, ``workers.backup.early``); the final pass may still change it."""
        if self._state != "running":
            raise DeployError(f"backup {self.id} is {self._state}")
        return self._partial, self._info(0.0)

    def finish(self) -> BackupInfo:
        """The final pass, with the app stopped; seals the backup and returns its record."""
        if self._state != "running":
            raise DeployError(f"backup {self.id} is {self._state}; it cannot be finished")
        began = time.monotonic()
        final = self._root / self.id
        try:
            for mirror in self._mirrors:
                mirror.final_pass()
            info = self._info(time.monotonic() - began)
            index = {m.source.name: m.seen_index() for m in self._mirrors}
            _write_json(self._partial / INDEX, {"format": FORMAT, "sources": index})
            _write_json(self._partial / MANIFEST, info.to_json())
            files.fsync_path(str(self._partial / "data"))
            files.fsync_path(str(self._partial))
            os.rename(self._partial, final)  # the commit point
        except OSError as exc:
            self.abort()
            raise InfrastructureError(f"cannot seal backup {final}: {exc.strerror}") from exc
        except BaseException:
            self.abort()
            raise
        self._state = "complete"
        self._release()
        try:
            files.fsync_path(str(self._root))
        except OSError as exc:
            raise InfrastructureError(
                f"backup {final} is complete but {self._root} could not be synced: {exc.strerror}"
            ) from exc
        log.info(
            "backup %s complete: final pass %.2fs, %d files, %d MiB copied, %d MiB linked",
            self.id,
            info.final_seconds,
            info.files,
            info.bytes_copied >> 20,
            info.bytes_linked >> 20,
        )
        return info

    def abort(self) -> None:
        """Throw the partial backup away. Safe to call twice, or after a failed finish."""
        if self._state in ("complete", "aborted"):
            return
        self._state = "aborted"
        try:
            files.remove(str(self._partial))
        except OSError as exc:  # prune removes it later
            log.warning("cannot remove %s: %s", self._partial, exc.strerror)
        self._release()

    def __enter__(self) -> RunningBackup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()

    def _release(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _info(self, final_seconds: float) -> BackupInfo:
        sources = tuple(m.info(n) for n, m in enumerate(self._mirrors))
        return BackupInfo(
            id=self.id,
            created_at=self._created_at,
            finished_at=_now(),
            sources=sources,
            files=sum(s.files for s in sources),
            bytes_copied=sum(s.bytes_copied for s in sources),
            bytes_linked=sum(s.bytes_linked for s in sources),
            pass1_seconds=round(self._pass1_seconds, 3),
            final_seconds=round(final_seconds, 3),
            pass1_bytes_written=sum(m.pass1_written for m in self._mirrors),
            final_bytes_written=sum(m.final_written for m in self._mirrors),
            final_bytes_compared=sum(m.final_compared for m in self._mirrors),
            linked_from=self._linked_from if any(s.bytes_linked for s in sources) else None,
            complete=True,
        )


def _write_json(path: Path, data: object) -> None:
    with open(path, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=1)
        out.flush()
        os.fsync(out.fileno())
