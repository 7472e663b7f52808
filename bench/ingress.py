"""Ingress benchmark: rollhook's /hooks/github against adnanh/webhook, side by side.

    make bench-ingress        (or: uv run --frozen python bench/ingress.py [--ceiling])

wrk posts a signed ~8.8 KB GitHub push to both, each request a new push (a head commit,
so a body, of its own, signed by the Lua script) with a delivery id of its own, so that
every request to rollhook becomes a stored event and a queued job: rollhook takes a
signed body it has stored before for a replay, whatever its delivery id.
rollhook runs as in production (the Procfile's web command, Redis as broker, SQLite
records with synchronous=FULL); adnanh/webhook checks the same HMAC and runs /bin/true.
Rounds alternate between the servers so that other load on the machine hits all alike.
``--ceiling`` adds two servers that store nothing (bench/ingress_ceiling.py): what the
stack and rollhook's request path cost without the commit. Everything listens on
127.0.0.1 and is started, and stopped again (Ctrl-C included), by this script.
It prints figures; it is not a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NoReturn, Protocol

import httpx

from bench.ingress_load import Load, Request, Result, combine, run_wrk
from bench.ingress_servers import (
    PAYLOAD,
    Records,
    Rollhook,
    Webhook,
    commit_sizes,
    settle,
    tree_cpu,
    wait_for,
)
from bench.ingress_servers import queued_in_redis as redis_queue
from service.signatures import hub_signature
from tests.harness.redis import RedisServer

SECRET = "bench-secret-4Jq9-Lw7d"
GOAL_RATIO = 1.0  # issue 12: ahead of the peer
GOAL_P99_MS = 50.0
TOOLS = {"wrk": "wrk", "webhook": "webhook", "redis-server": "redis-server"}


class Server(Protocol):
    name: str
    url: str
    ok: int

    @property
    def pid(self) -> int: ...

    def start(self) -> None: ...
    def stop(self) -> None: ...


@dataclass
class Outcome:
    """What a run measured, for the report."""

    results: dict[str, list[Result]]
    tails: dict[str, list[float]]  # seconds each server kept working after a round
    cpu: dict[str, list[float]]  # CPU seconds each server's processes used in a round + tail
    accepted: int  # 202s from rollhook, warm-up and checks included
    records: Records
    queue: tuple[int, int]  # Redis housekeeping queue (process_jobs): (messages, jobs)
    commits: tuple[float, float]  # (commits, events) by rollhook's writer
    loads: tuple[float, float]  # 1-minute load average before and after


def say(text: str = "") -> None:
    print(text, flush=True)


def install_missing_tools() -> None:
    """wrk and webhook come from Debian packages; install them when we may."""
    missing = [pkg for cmd, pkg in TOOLS.items() if shutil.which(cmd) is None]
    if not missing:
        return
    sudo: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            sys.exit(f"bench: install {' '.join(missing)} (apt-get install -y ...)")
        sudo = ["sudo", "-n"]
    say(f"bench: installing {' '.join(missing)}")
    apt = [*sudo, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-y", "-q"]
    install = [*apt, "install", "--no-install-recommends", *missing]
    if subprocess.run(install, check=False).returncode != 0:
        subprocess.run([*apt, "update"], check=False)
        subprocess.run(install, check=True)


def _interrupted(signum: int, _frame: object) -> NoReturn:
    raise KeyboardInterrupt(f"signal {signum}")


def check_signatures(servers: list[Server], body: bytes, signature: str) -> int:
    """Every server refuses a bad signature and takes a good one; returns rollhook's 202s."""
    headers = {"content-type": "application/json", "x-github-event": "push"}
    accepted = 0
    with httpx.Client(timeout=10) as client:
        for server in servers:
            bad = client.post(
                server.url,
                content=body,
                headers=headers
                | {"x-github-delivery": f"bad-{uuid.uuid4()}", "x-hub-signature-256": "sha256=0"},
            )
            good = client.post(
                server.url,
                content=body,
                headers=headers
                | {"x-github-delivery": f"good-{uuid.uuid4()}", "x-hub-signature-256": signature},
            )
            # adnanh/webhook answers a bad signature with 500 (an error evaluating its rule).
            if bad.status_code == server.ok or good.status_code != server.ok:
                raise RuntimeError(
                    f"{server.name}: a bad signature got {bad.status_code}, a good one "
                    f"{good.status_code} (want {server.ok}): {good.text[:200]}"
                )
            accepted += server.name == "rollhook"
    return accepted


def measure(
    servers: list[Server], request: Request, args: argparse.Namespace
) -> tuple[dict[str, list[Result]], dict[str, list[float]], dict[str, list[float]], int]:
    """Warm-up, then rounds in alternating order; (results, tails, CPU, rollhook's 202s).

    After each run the server is left to finish its work before the next one starts.
    CPU time per request is what other load on the machine distorts least: it counts
    what a server spent, not how much of the machine it got.
    """
    results: dict[str, list[Result]] = {s.name: [] for s in servers}
    tails: dict[str, list[float]] = {s.name: [] for s in servers}
    cpu: dict[str, list[float]] = {s.name: [] for s in servers}
    accepted = 0
    warmup = Load(args.threads, args.connections, args.warmup)
    load = Load(args.threads, args.connections, args.seconds)
    say(f"bench: warming up ({args.warmup:g} s each)")
    for server in servers:
        r = run_wrk(server.name, server.url, _unique(request, 0), warmup)
        accepted += r.count(202) if server.name == "rollhook" else 0
        settle(server.pid)
    order = list(servers)
    for n in range(1, args.rounds + 1):
        say(f"bench: round {n} of {args.rounds} ({args.seconds:g} s each)")
        for server in order:
            used = tree_cpu(server.pid)
            r = run_wrk(server.name, server.url, _unique(request, n), load)
            results[server.name].append(r)
            accepted += r.count(202) if server.name == "rollhook" else 0
            tails[server.name].append(settle(server.pid))
            cpu[server.name].append(tree_cpu(server.pid) - used)
        order.reverse()
    return results, tails, cpu, accepted


def _unique(request: Request, run: int) -> Request:
    """wrk numbers its requests from 1 in every run: a prefix per run keeps shas and ids
    unique (each server has records of its own, so servers may share a run's prefix)."""
    return replace(request, run_id=f"{request.run_id}{run:02x}")


def run(args: argparse.Namespace, work: Path) -> None:
    body = PAYLOAD.read_bytes()
    signature = hub_signature(SECRET.encode(), body)
    (work / "body.json").write_bytes(body)
    request = Request(work / "body.json", json.loads(body)["after"], SECRET, uuid.uuid4().hex[:8])
    with ExitStack() as stack:
        say(f"bench: starting Redis, rollhook and adnanh/webhook on 127.0.0.1 (in {work})")
        redis = RedisServer(work / "redis", work)
        stack.callback(redis.stop)
        redis.start()
        rollhook = Rollhook(
            "rollhook", work / "rollhook", redis.url, SECRET, workers=args.web_workers
        )
        servers: list[Server] = [Webhook(work / "webhook", SECRET), rollhook]
        if args.ceiling:
            servers += [
                Rollhook("unstored", work / "unstored", redis.url, SECRET, UNSTORED),
                Rollhook("floor", work / "floor", redis.url, SECRET, FLOOR),
            ]
        for server in servers:
            stack.callback(server.stop)
            server.start()
        checked = check_signatures(servers, body, signature)
        before = os.getloadavg()[0]
        results, tails, cpu, accepted = measure(servers, request, args)
        after = os.getloadavg()[0]
        # Every answer has arrived; let the writer hand the last jobs to Redis.
        wait_for(lambda: _dispatched(rollhook.records()), timeout=60)
        outcome = Outcome(
            results=results,
            tails=tails,
            cpu=cpu,
            accepted=accepted + checked,
            records=rollhook.records(),
            queue=redis_queue(redis.url),
            commits=commit_sizes(rollhook.port),
            loads=(before, after),
        )
        report(args, outcome, rollhook.command, len(body))


UNSTORED = "bench.ingress_ceiling:unstored_app"
FLOOR = "bench.ingress_ceiling:floor_app"


def _dispatched(records: Records) -> bool:
    return records.dispatched >= records.jobs


def row(label: str, r: Result, ok: int, tail: float, cpu: float) -> str:
    answers = ", ".join(f"{code}: {n}" for code, n in sorted(r.statuses.items()))
    sockets = ", ".join(f"{k} {n}" for k, n in r.socket_errors.items())
    errors = f"{r.errors(ok)}" + (f" ({sockets})" if sockets else "")
    cpu_us = cpu / r.requests * 1e6 if r.requests else 0.0
    return (
        f"{label:<7}{r.name:<10}{r.rps:>8.0f}{r.p50_ms:>9.1f}{r.p99_ms:>9.1f}"
        f"{r.max_ms:>9.1f}{tail:>8.1f}{cpu_us:>8.0f}   {errors:<10}{answers}"
    )


def report(args: argparse.Namespace, outcome: Outcome, command: str, body_size: int) -> None:
    results = outcome.results
    names = list(results)
    ok = {name: 200 if name == "webhook" else 202 for name in names}
    say()
    say(
        f"POST /hooks/github, {body_size}-byte signed GitHub push, a new body (head commit) "
        f"and delivery id per request; wrk -t{args.threads} -c{args.connections}, "
        f"{args.rounds} round(s) of {args.seconds:g} s per server, alternating"
    )
    say(
        f"machine: {os.cpu_count()} CPUs; load average (1 min) {outcome.loads[0]:.2f} before, "
        f"{outcome.loads[1]:.2f} after"
    )
    say(
        f"rollhook: WEB_CONCURRENCY={args.web_workers} {command}  "
        "(Redis broker, SQLite records, synchronous=FULL)"
    )
    say(f"webhook:  {Webhook.version()}, payload-hmac-sha256 on X-Hub-Signature-256, /bin/true")
    if args.ceiling:
        say("unstored: rollhook answering without storing; floor: Starlette, HMAC + JSON only")
    say()
    say(f"{'round':<7}{'server':<10}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        f"{'tail s':>8}{'cpu us':>8}   {'errors':<10}answers")  # fmt: skip
    tails, cpu = outcome.tails, outcome.cpu
    for n in range(args.rounds):
        for name in names:
            say(row(str(n + 1), results[name][n], ok[name], tails[name][n], cpu[name][n]))
    total = {name: combine(name, rs) for name, rs in results.items()}
    for name in names:
        say(row("all", total[name], ok[name], sum(tails[name]), sum(cpu[name])))
    say()
    say("'all' = total requests over total time, p50/p99/max of the worst round; tail = how "
        "long the server kept working after its last answer (waited out before the next "
        "run); cpu us = CPU time of the server's processes (children included) per answer, "
        "round and tail; errors = other answers + socket errors")  # fmt: skip
    peer = total["webhook"].rps
    ratio = total["rollhook"].rps / peer if peer else 0.0
    ratios = [
        r.rps / w.rps for r, w in zip(results["rollhook"], results["webhook"], strict=True) if w.rps
    ]
    p99 = total["rollhook"].p99_ms
    records = outcome.records
    commits, events = outcome.commits
    say(
        f"req/s rollhook/webhook: {ratio:.2f}x (rounds {min(ratios):.2f}x-{max(ratios):.2f}x); "
        f"goal >= {GOAL_RATIO}x: {'met' if ratio >= GOAL_RATIO else 'NOT met'}"
    )
    for name in names[2:]:
        say(f"req/s {name}/webhook: {total[name].rps / peer if peer else 0.0:.2f}x")
    # adnanh/webhook answers first and runs its command later: counting the time it took
    # to catch up, how many deliveries per second did each really get through?
    sustained = {
        name: total[name].requests / (total[name].seconds + sum(tails[name])) for name in names
    }
    say(
        "work done per second (answers over answering + tail time): "
        + ", ".join(f"{name} {rate:.0f}" for name, rate in sustained.items())
        + f"; rollhook/webhook {sustained['rollhook'] / sustained['webhook']:.2f}x"
    )
    per_request = {name: sum(cpu[name]) / total[name].requests for name in names}
    say(
        "CPU per answer: "
        + ", ".join(f"{name} {seconds * 1e6:.0f} us" for name, seconds in per_request.items())
        + f"; webhook/rollhook {per_request['webhook'] / per_request['rollhook']:.2f}x"
    )
    say(
        f"rollhook p99 (worst round): {p99:.1f} ms; goal < {GOAL_P99_MS:g} ms: "
        f"{'met' if p99 < GOAL_P99_MS else 'NOT met'}"
    )
    say(
        f"stored: {records.events} events in the records, {outcome.accepted} answers 202 "
        f"(warm-up and checks included); every 202 stored: "
        f"{'yes' if records.events >= outcome.accepted else 'NO'} (requests still open when "
        "a wrk run ends are stored but never counted as answered)"
    )
    say(
        f"commits: {commits:.0f}, {events / commits if commits else 0:.1f} events each; "
        f"outbox: {records.jobs} jobs, {records.dispatched} dispatched; Redis housekeeping queue: "
        f"{outcome.queue[1]} jobs in {outcome.queue[0]} messages"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per round and server")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per server")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds, per server")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument(
        "--web-workers", type=int, default=1, help="rollhook web processes (WEB_CONCURRENCY)"
    )
    parser.add_argument("--ceiling", action="store_true", help="add servers that store nothing")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, DB)")
    args = parser.parse_args()
    install_missing_tools()
    signal.signal(signal.SIGTERM, _interrupted)
    work = Path(tempfile.mkdtemp(prefix="rollhook-bench-ingress-"))
    try:
        run(args, work)
    except KeyboardInterrupt:
        say("bench: interrupted; everything it started is stopped")
        return 130
    finally:
        if args.keep:
            say(f"bench: work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
