"""The worker's heartbeat: every few seconds, "a worker of host NAME is alive" in the
records (``rollhook/records/hosts.py``), with rollhook's and the engine's versions.

A daemon thread of the worker's main process, started when the worker is ready and
stopped at shutdown. Beat reads the heartbeats to tell a host going down and coming back,
the API to answer ``GET /hosts`` and to show a down host's targets as waiting for it.
"""

from __future__ import annotations

import logging
import threading
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

from rollhook.records import hosts
from workers.context import WorkerContext
from workers.engine import DockerEngine

logger = logging.getLogger("rollhook.hostbeat")

EVERY = 10.0  # seconds between beats; a host is down after hosts.DOWN_AFTER (30 s)
ENGINE_EVERY = 30  # beats between two reads of the engine's version


def rollhook_version() -> str:
    try:
        return package_version("rollhook")
    except PackageNotFoundError:
        return "?"


class HostBeat:
    """``start()`` once; ``stop()`` from any thread."""

    def __init__(self, ctx: WorkerContext, *, every: float = EVERY) -> None:
        self.ctx = ctx
        self.every = every
        self.worker = ctx.owner  # the main process's <machine>:<pid>
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._engine_version: str | None = None
        self.beats = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="host-beat", daemon=True)
        self._thread.start()
        logger.info(
            "heartbeat of host %s every %.0fs as %s", self.ctx.host, self.every, self.worker
        )

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def beat_once(self) -> None:
        if self._engine_version is None or self.beats % ENGINE_EVERY == 0:
            self._engine_version = self._read_engine_version() or self._engine_version
        with self.ctx.records.begin() as conn:
            hosts.beat(
                conn,
                worker=self.worker,
                host=self.ctx.host,
                rollhook_version=rollhook_version(),
                engine_version=self._engine_version,
            )
        self.beats += 1

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self.beat_once()
            except Exception:  # the records are away: the next beat tries again
                logger.warning("heartbeat not recorded; trying again", exc_info=True)
            self._stopped.wait(self.every)

    def _read_engine_version(self) -> str | None:
        try:
            with DockerEngine(self.ctx.docker_host, timeout=5) as engine:
                return engine.version()
        except Exception:  # noqa: BLE001 - an engine away is shown as an unknown version
            return None
