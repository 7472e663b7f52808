"""Clean up after harness runs that died before their teardown (killed, timed out).

Each run marks its directory (``/tmp/rh-*``) with the pid of the pytest process that owns
it. A later run removes directories whose owner is gone, after ending the processes that
name that directory on their command line or work below it (every daemon the harness
starts does one or the other), so dead runs do not leave engines, registries and
databases behind on a shared machine.
Directories without the mark are never touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

from tests.harness.engine import remove_cgroups, unmount_below

OWNER = "owner.pid"
ENGINE_NAME = "engine/name"


def claim(root: Path) -> None:
    (root / OWNER).write_text(str(os.getpid()))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pids_under(root: Path) -> list[int]:
    """Processes that name root on their command line or work below it.

    The working directory catches what rewrites its process title (redis-server) and
    the processes inside the engine's containers (their root is under the data-root).
    """
    marker = f"{root}/"
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cwd = os.readlink(entry / "cwd") + "/"
            if cwd.startswith(marker) or marker.encode() in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
    return pids


def reap_stale(parent: Path = Path("/tmp")) -> list[Path]:
    """Remove the directories of dead runs and what still runs from them; returns them."""
    reaped = []
    for root in parent.glob("rh-*"):
        try:
            owner = int((root / OWNER).read_text())
        except (OSError, ValueError):
            continue
        if owner == os.getpid() or _alive(owner):
            continue
        # SIGTERM first: dockerd then removes its containers' mounts itself.
        for pid in _pids_under(root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while _pids_under(root) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in _pids_under(root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        unmount_below(root)
        with contextlib.suppress(OSError):
            remove_cgroups((root / ENGINE_NAME).read_text().strip())
        shutil.rmtree(root, ignore_errors=True)
        reaped.append(root)
    return reaped
