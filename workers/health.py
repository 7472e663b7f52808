"""The health gate: is the new version serving, and does it keep serving?

It passes when the probe answers 200 without a break for ``settle`` seconds, before
``timeout``. It fails at once when the container exits, restarts, or is removed or
replaced: waiting out the timeout for a crashed app would only lengthen the outage.
Without a health URL the container's own Docker healthcheck decides, and without one
of those, "still running after ``settle`` seconds" does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Protocol

import httpx

from workers.closeable import Closeable
from workers.engine import ContainerState

Watch = Callable[[], ContainerState | None]


@dataclass(frozen=True)
class Answer:
    ok: bool
    detail: str  # "200", "HTTP 503", "connection refused"


@dataclass(frozen=True)
class GateResult:
    ok: bool
    reason: str  # one line for people: why it passed or failed
    elapsed: float
    detail: str  # the last answer and the container's last state


class Probe(Protocol):
    goal: str  # what passing means, for messages: "200 from http://..."

    def __call__(self) -> Answer: ...


class HttpProbe(Closeable):
    """GET ``url`` with a short timeout; only 200 counts (a redirect is not health)."""

    def __init__(self, url: str, *, request_timeout: float = 2.0) -> None:
        self.url, self.request_timeout, self.goal = url, request_timeout, f"200 from {url}"
        self._client = httpx.Client(
            timeout=request_timeout, follow_redirects=False, trust_env=False
        )

    def __call__(self) -> Answer:
        try:
            status = self._client.get(self.url).status_code
        except httpx.TimeoutException:
            return Answer(False, f"no answer within {self.request_timeout:g}s")
        except httpx.ConnectError as exc:
            refused = "refused" in str(exc).lower()
            return Answer(False, "connection refused" if refused else f"cannot connect: {exc}")
        except httpx.HTTPError as exc:
            return Answer(False, f"{type(exc).__name__}: {exc}")
        return Answer(status == 200, "200" if status == 200 else f"HTTP {status}")

    def close(self) -> None:
        self._client.close()


def _fault(first: ContainerState, now: ContainerState, elapsed: float) -> str | None:
    """Why the watched container can no longer pass, or None while it still can."""
    if now.container_id != first.container_id:
        return f"the container was replaced (now {now.container_id[:12]})"
    if now.restarting:
        return f"is restarting (last exit code {now.exit_code}, {now.restart_count} restarts)"
    if now.restart_count > first.restart_count:
        return f"restarted (last exit code {now.exit_code}, {now.restart_count} restarts)"
    if now.status in {"exited", "dead"}:
        ran = elapsed
        if now.started_at and now.finished_at:
            # Docker may stamp a quick exit a hair before its start.
            ran = max(0.0, (now.finished_at - now.started_at).total_seconds())
        return f"exited with code {now.exit_code} after {ran:.1f}s"
    return None


def gate(
    probe: Probe | str | None,
    *,
    timeout: float,
    settle: float,
    watch: Watch,
    interval: float = 0.5,
    cancelled: Callable[[], bool] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> GateResult:
    """Wait until the service is healthy for ``settle`` seconds, or say why it is not.

    ``probe`` is a probe, a URL to GET, or None (Docker's healthcheck, else "running").
    """
    with ExitStack() as stack:
        if isinstance(probe, str):
            probe = stack.enter_context(HttpProbe(probe))
        first = watch()
        if first is None:
            return GateResult(False, "no container to watch", 0.0, "")
        if probe is None and first.health is not None:
            health = "healthy status from Docker's healthcheck"
            probe = _StateProbe(watch, health, lambda s: s.health)
        elif probe is None:
            probe = _StateProbe(watch, "running container", lambda s: s.status)
        checks = _Gate(probe, first=first, watch=watch, timeout=timeout, settle=settle, clock=clock)
        return checks.run(interval, cancelled, sleep)


class _StateProbe:
    """Without a URL: the watched container's own view (its healthcheck, or just running)."""

    def __init__(
        self, watch: Watch, goal: str, read: Callable[[ContainerState], str | None]
    ) -> None:
        self.watch, self.goal, self.read = watch, goal, read

    def __call__(self) -> Answer:
        state = self.watch()
        value = self.read(state) if state is not None else "gone"
        return Answer(value in {"healthy", "running"}, value or "no health status")


class _Gate:
    def __init__(
        self,
        probe: Probe,
        *,
        first: ContainerState,
        watch: Watch,
        timeout: float,
        settle: float,
        clock: Callable[[], float],
    ) -> None:
        self.probe, self.first, self.watch, self.clock = probe, first, watch, clock
        self.timeout, self.settle, self.start = timeout, settle, clock()
        self.ok_since: float | None = None
        self.last = Answer(False, "no answer yet")
        self.status = first.status

    def run(
        self, interval: float, cancelled: Callable[[], bool] | None, sleep: Callable[[float], None]
    ) -> GateResult:
        while True:
            if cancelled is not None and cancelled():
                return self._result(False, f"cancelled after {self._elapsed():.1f}s")
            if (result := self._round()) is not None:
                return result
            sleep(max(0.0, min(interval, self.timeout - self._elapsed())))

    def _round(self) -> GateResult | None:
        state = self.watch()
        if state is None:
            return self._result(False, "the container disappeared")
        self.status = state.status
        if fault := _fault(self.first, state, self._elapsed()):
            return self._result(False, fault)
        self.last = self.probe()
        now = self.clock()
        if not self.last.ok:
            self.ok_since = None
        elif self.ok_since is None:
            self.ok_since = now
        goal, settle = self.probe.goal, self.settle
        if self.ok_since is not None and now - self.ok_since >= settle:
            return self._result(
                True, f"healthy after {self._elapsed():.1f}s ({goal} for {settle:g}s)"
            )
        if self._elapsed() < self.timeout:
            return None
        if self.ok_since is not None:
            held = now - self.ok_since
            return self._result(
                False, f"{goal} for only {held:.1f}s of {settle:g}s within {self.timeout:g}s"
            )
        return self._result(False, f"no {goal} within {self.timeout:g}s (last: {self.last.detail})")

    def _elapsed(self) -> float:
        return self.clock() - self.start

    def _result(self, ok: bool, reason: str) -> GateResult:
        detail = f"last answer: {self.last.detail}; container: {self.status}"
        return GateResult(ok, reason, self._elapsed(), detail)
