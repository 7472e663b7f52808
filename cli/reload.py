"""``rollhook up`` applies a changed targets file without a restart (or on SIGHUP).

The file is looked at every half second; once a change has stood still for a second (an
editor may write it in several steps) and its content differs from what runs, it is
checked as at start. A file with problems changes nothing: one line says why, and the
processes keep the configuration they have. A good one is applied process by process:

- web: SIGHUP to uvicorn's manager (service/serve.py), which starts new web processes
  and stops each old one only once its successor answers; the listening socket stays
  open throughout, so no connection is refused.
- worker: a new worker starts at once; the old one gets SIGTERM, Celery's warm shutdown,
  and ends once its running task (a deployment, say) is over. Leases keep the two apart.
- beat: stopped, then started (two would schedule everything twice).
- proxy: started or stopped when targets gain or lose ``proxy``; restarted, with a line
  saying so, only when what it serves changed (a restart cuts the connections through it).

Settings from the environment (``ROLLHOOK_*``) are read once; changing them needs a restart.
"""

from __future__ import annotations

import hashlib
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cli.processes import STOP_GRACE, Supervisor, checked_targets, processes
from rollhook.settings import Settings
from rollhook.targets import Target
from workers.proxy.process import STOP_TIMEOUT, plan

SETTLE = 1.0  # seconds a change must stand still before it is read
# Caddy may take its own stop timeout to let requests through it finish.
PROXY_GRACE = max(STOP_GRACE, STOP_TIMEOUT + 5)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class Reloader:
    def __init__(
        self,
        supervisor: Supervisor,
        settings: Settings,
        targets: dict[str, Target],
        argv_of: Callable[[str], list[str]],
    ) -> None:
        self._supervisor = supervisor
        self._settings = settings
        self._path = settings.config
        self._targets = targets
        self._argv_of = argv_of
        self._stamp = _stamp(self._path)
        self._running = _digest(self._path)  # what the processes were started with
        self._refused: str | None = None  # the last content said to have problems
        self._changed_at: float | None = None
        self._asked = threading.Event()
        signal.signal(signal.SIGHUP, lambda *_: self._asked.set())

    def tick(self) -> None:
        """Called by the supervisor's loop: reload when asked or when the file changed."""
        if self._asked.is_set():
            self._asked.clear()
            self.reload(f"SIGHUP: applying {self._path}")
            return
        stamp = _stamp(self._path)
        now = time.monotonic()
        if stamp != self._stamp:
            self._stamp, self._changed_at = stamp, now
            return
        if self._changed_at is None or now - self._changed_at < SETTLE:
            return
        self._changed_at = None
        if stamp is not None and _digest(self._path) not in (self._running, self._refused):
            self.reload(f"{self._path} changed: applying it")

    def reload(self, why: str) -> None:
        digest = _digest(self._path)
        try:
            targets = checked_targets(self._settings)
        except Exception as exc:  # noqa: BLE001 - whatever the file holds, what runs stays
            self._refused = digest  # said once; the next edit is looked at again
            self._say(
                f"{self._path} not applied: {exc} (the processes keep the configuration "
                "they have; see `rollhook check-config`)"
            )
            return
        self._running, self._refused = digest, None
        supervisor, argv_of = self._supervisor, self._argv_of
        self._say(
            f"{why} (web without refusing a connection, a new worker while the old one "
            "finishes its running task, beat restarted)"
        )
        supervisor.signal("web", signal.SIGHUP)
        supervisor.retire("worker", argv_of("worker"))
        supervisor.restart("beat", argv_of("beat"))
        proxied = "proxy" in processes(targets, self._settings.public_host)
        if proxied != ("proxy" in supervisor.children):
            supervisor.restart("proxy", argv_of("proxy") if proxied else None, PROXY_GRACE)
            self._say("proxy started" if proxied else "proxy stopped: no target has `proxy`")
        elif proxied and plan(targets) != plan(self._targets):
            supervisor.restart("proxy", argv_of("proxy"), PROXY_GRACE)
            self._say("proxy restarted for the new routes: connections through it were cut")
        self._targets = targets

    def _say(self, line: str) -> None:
        print(f"rollhook up: {line}", flush=True)
