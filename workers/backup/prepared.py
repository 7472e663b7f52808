"""A restore staged ahead: its copies finished while the new version boots and is gated.

A rollback puts the data back as the snapshot holds it, and a restore's slow part is the
copy out of the backup (the backup is never linked into, so the app cannot write through
into it). The backup is complete and never changes once the snapshot step sealed it, so
the copy can be made while the new version is still being gated: a rollback then only
waits for whatever of the copy is left, and swaps by rename. When the gate passes, the
copy is called off and removed. When the copy was made from the backup's pass 1 already
(``early``, before the app stopped: ``workers.backup.early``), what is left here is only
the final pass's changes, the sync and the rename.

The copy is ``BackupStore.stage_restore``: the same checks as a restore (every source
path must still lead where it was backed up), written only next to the live data, which
the app cannot reach. The restore that follows checks everything again.
"""

from __future__ import annotations

import threading
import time

from workers.backup.early import EarlyCopy
from workers.backup.restore import StagingCancelled
from workers.backup.store import BackupStore


class PreparedRestore:
    """Stages a restore of ``backup_id`` in a thread; ``wait`` or ``discard`` it later."""

    def __init__(self, store: BackupStore, backup_id: str, early: EarlyCopy | None = None) -> None:
        self.store, self.backup_id, self.early = store, backup_id, early
        self.copied: int | None = None  # sources copied; None until it finished
        self.seconds = 0.0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"stage-{backup_id}", daemon=True)

    def start(self) -> PreparedRestore:
        self._thread.start()
        return self

    def _run(self) -> None:
        began = time.monotonic()
        try:
            self.copied = self.store.stage_restore(self.backup_id, self._stop.is_set, self.early)
        except StagingCancelled:
            pass
        except Exception as exc:  # noqa: BLE001 (the restore itself will report it)
            self.error = str(exc) or type(exc).__name__
        self.seconds = time.monotonic() - began

    def wait(self) -> None:
        """Until the copies are staged (or staging failed: the restore then copies)."""
        self._thread.join()

    def cancel(self) -> None:
        """Stop copying soon; what was staged stays for whoever restores next."""
        self._stop.set()

    def discard(self) -> list[str]:
        """The gate passed: stop copying and remove what was staged."""
        self._stop.set()
        self._thread.join()
        return self.store.discard_staged(self.backup_id)
