"""The worker's engine-event watcher: drift seen within seconds, not at the next poll.

A thread in the worker's main process follows the engine's container events
(:class:`workers.engine_events.EngineEvents`) for the targets' compose projects. An
event (``create``, ``start``, ``kill``, ``die``, ``oom``, ``stop``, ``destroy``) marks
its target; a second thread looks at each marked target once its events have been quiet
for ``debounce`` seconds (a ``docker compose up`` is a burst of them), through
:func:`workers.healing.look`, which ignores what rollhook itself is doing. When the
engine went away and came back (``Reconnected``), events may have been missed: every
target is looked at.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from rollhook.records import targets as target_records
from rollhook.targets import Target
from workers import colours
from workers.context import WorkerContext
from workers.engine import DockerEngine
from workers.engine_events import ContainerEvent, EngineEvents, Reconnected
from workers.healing import look

logger = logging.getLogger("rollhook.watcher")

DEBOUNCE = 0.5
# While rollhook itself works on a target (its lease is held) nothing is compared; the
# watcher looks again this long after, so that what a person did meanwhile (a container
# stopped during a deployment) is not left for the next poll.
BUSY_RETRY = 2.0


class DriftWatcher:
    """``start()`` once; ``stop()`` from any thread (waits for both threads)."""

    def __init__(
        self,
        ctx: WorkerContext,
        *,
        debounce: float = DEBOUNCE,
        look_at: Callable[[Target], object] | None = None,
        backoff: tuple[float, float] = (0.2, 10.0),
    ) -> None:
        self.ctx = ctx
        self.debounce = debounce
        # This worker's host's targets only (the engine it follows is that host's); for
        # start-first, both colours' projects (either may serve).
        self.by_project = {
            p: t for t in ctx.targets.values() if t.host == ctx.host for p in colours.projects(t)
        }
        self.events = EngineEvents(ctx.docker_host, projects=set(self.by_project), backoff=backoff)
        self._look_at = look_at or self._look
        self._due: dict[str, float] = {}  # target -> when to look
        self._wake = threading.Condition()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self.looks = 0  # how many looks were taken (for tests and the bench)

    def start(self) -> None:
        if not self.by_project:
            return
        for name, run in (("drift-events", self._follow), ("drift-looks", self._looker)):
            thread = threading.Thread(target=run, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        logger.info("watching the engine's events for %d target(s)", len(self.by_project))

    def stop(self) -> None:
        self._stopped.set()
        self.events.stop()
        with self._wake:
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout=15)

    def mark(self, target: Target, delay: float | None = None) -> None:
        """Look at ``target`` once nothing happened to it for ``delay`` seconds."""
        with self._wake:
            self._due[target.name] = time.monotonic() + (self.debounce if delay is None else delay)
            self._wake.notify_all()

    # -- the threads -----------------------------------------------------------------

    def _follow(self) -> None:
        for item in self.events.watch():
            if isinstance(item, Reconnected):
                logger.warning("the engine was away (%s): looking at every target", item.error)
                for target in self.by_project.values():
                    self.mark(target)
            elif isinstance(item, ContainerEvent) and item.project in self.by_project:
                self.mark(self.by_project[item.project])

    def _looker(self) -> None:
        while not self._stopped.is_set():
            with self._wake:
                now = time.monotonic()
                ready = [n for n, at in self._due.items() if at <= now]
                for name in ready:
                    del self._due[name]
                if not ready:
                    wait = min(self._due.values(), default=now + 60.0) - now
                    self._wake.wait(timeout=max(0.01, wait))
                    continue
            for name in ready:
                target = self.ctx.targets.get(name)
                if target is None:
                    continue
                try:
                    self._look_at(target)
                except Exception:
                    logger.exception(
                        "%s: looking for drift failed; the next event or poll will", name
                    )
                    self.mark(target, delay=5.0)
                self.looks += 1

    def _look(self, target: Target) -> object:
        with DockerEngine(self.ctx.docker_host) as engine:
            found = look(self.ctx, target, engine)
        if found is None and self._busy(target):
            self.mark(target, delay=BUSY_RETRY)
        return found

    def _busy(self, target: Target) -> bool:
        with self.ctx.records.begin() as conn:
            state = target_records.get(conn, target.name)
        return state is not None and state.lease_owner is not None
