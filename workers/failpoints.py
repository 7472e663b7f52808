"""Named points where the fault suite stops a worker on purpose (tests/faults).

Most kill points are found from outside (the journal, a file appearing, a child process);
a few last only as long as a rename, and a test on a loaded machine cannot see them in
time. There the code calls :func:`reach`: with ``ROLLHOOK_FAILPOINTS=<name>[,<name>...]``
in the worker's environment, the process stops itself (SIGSTOP) at that point and waits
for the test to SIGKILL it. Unset (always, outside the fault suite), it does nothing.
"""

from __future__ import annotations

import os
import signal

ENV = "ROLLHOOK_FAILPOINTS"
_ARMED = frozenset(name for name in os.environ.get(ENV, "").split(",") if name)

# The points there are (tests arm these names, never a literal).
RESTORE_SWAP = "restore-swap"  # a restore's copies are staged; nothing swapped in yet
EARLY_COPY = "early-copy"  # a rollback's copy made from backup pass 1, not yet synced


def reach(name: str) -> None:
    if name in _ARMED:
        os.kill(os.getpid(), signal.SIGSTOP)
