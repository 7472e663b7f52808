"""Data backups for a target's service: copied while the app runs, sealed once it stopped.

```
store = BackupStore(root)
running = store.start(backup_id, sources)   # pass 1: bulk copy while the app runs
...                                         # the rollout stops the app
info = running.finish()                     # final pass: stat walk + live-file checks
store.restore(backup_id)                    # app stopped: every source equals the backup
```
``store``: the layout on disk, listing and pruning. ``running`` and ``mirror``: the two
passes and what makes them consistent. ``links``: hard links to the previous backup.
``restore``: restore by rename. ``files``: kernel copies, content patches, metadata, the
walk by file descriptor. ``paths``: which symlinks are followed on the way to a source
(the app can plant them in its data; rollhook runs as root).
"""

from workers.backup.model import (
    BackupInfo,
    RestoredSource,
    RestoreResult,
    Source,
    SourceInfo,
)
from workers.backup.paths import UnsafeSymlink
from workers.backup.running import RunningBackup
from workers.backup.store import BackupStore

__all__ = [
    "BackupInfo",
    "BackupStore",
    "RestoreResult",
    "RestoredSource",
    "RunningBackup",
    "Source",
    "SourceInfo",
    "UnsafeSymlink",
]
