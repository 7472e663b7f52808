"""wrk runs for bench/ingress.py: a new signed body and delivery id per request, answers counted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

LUA = Path(__file__).with_name("ingress.lua")
MARK = "BENCH-RESULT "
SOCKET_ERRORS = ("connect", "read", "write", "timeout")


@dataclass(frozen=True)
class Load:
    """How hard to push: wrk's threads, connections and run time."""

    threads: int = 2
    connections: int = 32
    seconds: float = 10.0
    timeout: float = 10.0  # GitHub's own wait: slower answers are failures to it


@dataclass(frozen=True)
class Request:
    """What wrk sends: a template body (a file) whose head commit ``sha`` each request
    replaces with one of its own (prefixed by ``run_id``, 10 hex digits, unique per wrk
    run), signed with ``secret`` by the Lua script."""

    body_file: Path
    sha: str
    secret: str
    run_id: str


@dataclass
class Result:
    name: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[int, int]
    socket_errors: dict[str, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def count(self, status: int) -> int:
        return self.statuses.get(status, 0)

    def errors(self, ok: int) -> int:
        """Requests that did not get the answer ``ok``: other codes and socket errors."""
        wrong = sum(n for code, n in self.statuses.items() if code != ok)
        return wrong + sum(self.socket_errors.values())


def run_wrk(name: str, url: str, request: Request, load: Load) -> Result:
    """One wrk run against ``url``; the figures come from the Lua script's done()."""
    env = os.environ | {
        "BENCH_BODY_FILE": str(request.body_file),
        "BENCH_SHA": request.sha,
        "BENCH_SECRET": request.secret,
        "BENCH_RUN": request.run_id,
        "BENCH_PATH": "/" + url.split("/", 3)[3],
    }
    argv = [
        "wrk",
        f"-t{load.threads}",
        f"-c{load.connections}",
        f"-d{load.seconds:g}s",
        f"--timeout={load.timeout:g}s",
        "-s",
        str(LUA),
        url,
    ]
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        output, _ = proc.communicate(timeout=load.seconds + load.timeout + 30)
    except BaseException:  # Ctrl-C or a hung wrk: never leave it running
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    text = output.decode(errors="replace")
    lines = [line for line in text.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{text}")
    figures = json.loads(lines[-1].removeprefix(MARK))
    return Result(
        name=name,
        requests=figures["requests"],
        seconds=figures["duration_us"] / 1e6,
        p50_ms=figures["p50_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        max_ms=figures["max_us"] / 1000,
        statuses={int(code): n for code, n in figures["statuses"].items()},
        socket_errors={k: figures[k] for k in SOCKET_ERRORS if figures[k]},
    )


def combine(name: str, results: list[Result]) -> Result:
    """Rounds together: total requests over total time, the worst round's latencies."""
    statuses: dict[int, int] = {}
    sockets: dict[str, int] = {}
    for r in results:
        for code, n in r.statuses.items():
            statuses[code] = statuses.get(code, 0) + n
        for kind, n in r.socket_errors.items():
            sockets[kind] = sockets.get(kind, 0) + n
    return Result(
        name=name,
        requests=sum(r.requests for r in results),
        seconds=sum(r.seconds for r in results),
        p50_ms=max(r.p50_ms for r in results),
        p99_ms=max(r.p99_ms for r in results),
        max_ms=max(r.max_ms for r in results),
        statuses=statuses,
        socket_errors=sockets,
    )
