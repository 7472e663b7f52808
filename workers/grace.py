"""The grace-period trap: a stop that waited out the whole grace period.

``docker stop`` sends SIGTERM, waits the grace period, then SIGKILLs. A PID 1 that
installs no handler for SIGTERM never sees it (the kernel drops signals PID 1 does not
handle): anything-llm's bash entrypoint is one, so every stop of it lasts the whole
grace period and ends in SIGKILL (exit code 137). ``init: true`` in the compose file puts
Docker's tiny init in front as PID 1, which passes SIGTERM on and the app exits at once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from workers.compose import Compose, ComposeSpec
from workers.engine import DockerEngine

KILLED = 137  # 128 + SIGKILL
# compose rounds the grace up to whole seconds; a stop counts as "waited it out" from here.
_WAITED = 0.9


@dataclass(frozen=True)
class Stopped:
    seconds: float
    grace: float
    exit_codes: tuple[int, ...]  # of the containers that were running before the stop

    @property
    def ignored_sigterm(self) -> bool:
        return ignored_sigterm(self.exit_codes, self.seconds, self.grace)

    @property
    def note(self) -> str | None:
        """What people are told when the stop was the trap; None otherwise."""
        if not self.ignored_sigterm:
            return None
        return (
            f"stop took {self.seconds:.1f} s: the container ignored SIGTERM; "
            "`init: true` in the compose file would save it"
        )


def ignored_sigterm(exit_codes: Sequence[int], seconds: float, grace: float) -> bool:
    """A container was killed at the end of its grace period (not one that exited 137 of
    its own accord early, nor a slow stop that finished in time)."""
    return grace > 0 and seconds >= _WAITED * grace and KILLED in exit_codes


def stop_service(
    compose: Compose,
    engine: DockerEngine,
    spec: ComposeSpec,
    services: Sequence[str],
    grace: float,
) -> Stopped:
    """``compose stop`` the services, timed, with the exit codes of what was running."""
    running = [
        c.container_id
        for c in engine.containers(spec.project)
        if c.running and c.service in services
    ]
    began = time.monotonic()
    compose.stop(spec, services, timeout=grace + 30, grace=grace)
    seconds = time.monotonic() - began
    codes = []
    for container_id in running:
        state = engine.state(container_id)
        if state is not None:
            codes.append(state.exit_code)
    return Stopped(round(seconds, 1), grace, tuple(codes))
