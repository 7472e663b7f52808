"""The health gate: settle, timeout and fail-fast logic on a fake clock; one real probe."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.harness import free_port
from workers.engine import ContainerState
from workers.health import Answer, GateResult, HttpProbe, gate

T0 = datetime(2026, 1, 1, tzinfo=UTC)
RUNNING = ContainerState("c1", "running", True, False, 0, 0, T0, None, None)
URL = "http://127.0.0.1:3001/api/ping"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


class Script:
    """A probe whose answer depends on the fake time: [(from_time, ok, detail), ...]."""

    goal = f"200 from {URL}"

    def __init__(self, clock: Clock, steps: list[tuple[float, bool, str]]) -> None:
        self.clock, self.steps = clock, steps

    def __call__(self) -> Answer:
        current = Answer(False, "connection refused")
        for start, ok, detail in self.steps:
            if self.clock.now >= start:
                current = Answer(ok, detail)
        return current


def _watch(
    clock: Clock, changes: list[tuple[float, ContainerState | None]]
) -> Callable[..., object]:
    def watch() -> ContainerState | None:
        state: ContainerState | None = RUNNING
        for start, changed in changes:
            if clock.now >= start:
                state = changed
        return state

    return watch


def _gate(clock: Clock, probe: object, watch: Callable[..., object], **kw: float) -> GateResult:
    options = {"timeout": 30.0, "settle": 5.0, "interval": 0.5, **kw}
    return gate(probe, watch=watch, clock=clock, sleep=clock.sleep, **options)  # type: ignore[arg-type]


def test_passes_after_answering_200_for_the_whole_settle_time() -> None:
    clock = Clock()
    result = _gate(clock, Script(clock, [(3.0, True, "200")]), _watch(clock, []))
    assert result.ok
    assert result.elapsed == pytest.approx(8.0)
    assert "healthy after 8.0s" in result.reason


def test_a_non_200_during_settle_starts_the_settle_time_again() -> None:
    clock = Clock()
    probe = Script(clock, [(1.0, True, "200"), (4.0, False, "HTTP 503"), (4.5, True, "200")])
    result = _gate(clock, probe, _watch(clock, []))
    assert result.ok
    assert result.elapsed == pytest.approx(9.5)


def test_never_healthy_fails_at_the_timeout_with_the_last_answer() -> None:
    clock = Clock()
    result = _gate(clock, Script(clock, []), _watch(clock, []), timeout=10.0)
    assert not result.ok
    assert result.reason == f"no 200 from {URL} within 10s (last: connection refused)"
    assert result.elapsed == pytest.approx(10.0)


def test_settling_cut_short_by_the_timeout_says_so() -> None:
    clock = Clock()
    result = _gate(clock, Script(clock, [(8.0, True, "200")]), _watch(clock, []), timeout=10.0)
    assert not result.ok
    assert "for only 2.0s of 5s" in result.reason


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            replace(RUNNING, status="exited", running=False, exit_code=3,
                    finished_at=T0 + timedelta(seconds=0.8)),
            "exited with code 3 after 0.8s",
        ),
        (replace(RUNNING, restarting=True, exit_code=1, restart_count=1), "is restarting"),
        (replace(RUNNING, restart_count=1, exit_code=137), "restarted (last exit code 137"),
        (replace(RUNNING, container_id="c2"), "the container was replaced"),
        (None, "the container disappeared"),
    ],
)  # fmt: skip
def test_a_container_that_stops_serving_fails_the_gate_at_once(
    change: ContainerState | None, reason: str
) -> None:
    clock = Clock()
    probe = Script(clock, [(0.0, True, "200")])
    result = _gate(clock, probe, _watch(clock, [(2.0, change)]), settle=10.0, timeout=180.0)
    assert not result.ok
    assert result.reason.startswith(reason)
    assert result.elapsed == pytest.approx(2.0)


def test_without_a_url_docker_healthcheck_decides() -> None:
    clock = Clock()
    starting = replace(RUNNING, health="starting")
    watch = _watch(clock, [(0.0, starting), (4.0, replace(starting, health="healthy"))])
    result = _gate(clock, None, watch, settle=2.0)
    assert result.ok
    assert result.elapsed == pytest.approx(6.0)

    clock = Clock()
    unhealthy = _watch(clock, [(0.0, replace(RUNNING, health="unhealthy"))])
    result = _gate(clock, None, unhealthy, timeout=10.0)
    assert not result.ok
    assert "(last: unhealthy)" in result.reason


def test_without_url_or_healthcheck_running_for_settle_is_enough() -> None:
    clock = Clock()
    result = _gate(clock, None, _watch(clock, []), settle=3.0)
    assert result.ok
    assert result.elapsed == pytest.approx(3.0)


def test_no_container_and_cancellation_fail() -> None:
    clock = Clock()
    assert _gate(clock, None, lambda: None).reason == "no container to watch"
    result = gate(
        Script(clock, []),
        timeout=30.0,
        settle=1.0,
        watch=_watch(clock, []),
        cancelled=lambda: clock.now >= 1.0,
        clock=clock,
        sleep=clock.sleep,
    )
    assert not result.ok
    assert result.reason.startswith("cancelled")


@pytest.fixture
def ping_server() -> Iterator[int]:
    """/api/ping answers 200, /broken 503, on loopback."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = 200 if self.path == "/api/ping" else 503
            body = b'{"online":true}'
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_real_http_probe(ping_server: int) -> None:
    base = f"http://127.0.0.1:{ping_server}"
    result = gate(f"{base}/api/ping", timeout=5.0, settle=0.3, interval=0.05, watch=lambda: RUNNING)
    assert result.ok, result.reason

    result = gate(f"{base}/broken", timeout=0.5, settle=0.1, interval=0.05, watch=lambda: RUNNING)
    assert not result.ok
    assert result.reason == f"no 200 from {base}/broken within 0.5s (last: HTTP 503)"

    with HttpProbe(f"http://127.0.0.1:{free_port()}/api/ping", request_timeout=0.5) as probe:
        assert probe() == Answer(False, "connection refused")
