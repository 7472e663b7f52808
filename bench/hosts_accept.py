"""Several hosts, the web process alone: a burst of signed pushes with no worker running.

    uv run --frozen python bench/hosts.py --accept-only [--rounds 3] [--pushes 20]

The same 50 targets twice, in two rollhook installs side by side (each its own web
process, PostgreSQL database and Redis database, on one Redis and one PostgreSQL
server): spread over 5 hosts (``h0``..``h4``, 10 each), and all on one host (``local``).
No worker and no beat runs during a burst, so the web process shares the machine only
with this script, Redis and PostgreSQL (and whatever else runs on it), as when the workers
run on their own hosts. Rounds alternate between the two installs (which goes first
alternates too), each a burst of ``--pushes`` signed GitHub pushes per target (each a new
head commit id, made up: nothing here fetches it; the 8.8 KB payload of bench/ingress.py;
16 at a time over keep-alive connections, bodies signed beforehand).

After each burst the script checks that every push is a stored event with its job, and
every job is in the broker: in the message the web process publishes
(``rollhook.process_jobs``, to ``housekeeping``, the queue every worker takes; the web
process does not route by host). Then a worker of a host no target names
(``--host router``) is started alone: it records the jobs and sends each target's
``run_target`` to its host's queue, where, with no host's worker running, it stays and is
counted: every target in its own host's queue (``deploy.hN``, or ``deploy`` for local),
none anywhere else. The deployments themselves are not run (the hosts have no engine
here; bench/hosts.py without ``--accept-only`` runs them): the script empties those
queues and removes everything at the end. Figures, not pass/fail.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import signal
import statistics
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis
import sqlalchemy as sa
import yaml

from bench.ingress_servers import PAYLOAD, tree_cpu, wait_for
from rollhook.broker import DEPLOY_QUEUE, HOUSEKEEPING_QUEUE, PROCESS_JOBS, RUN_TARGET, host_queue
from rollhook.settings import LOCAL_HOST
from service.signatures import hub_signature
from tests.harness.postgres import PostgresServer
from tests.harness.reaper import claim
from tests.harness.redis import RedisServer
from tests.stack import SECRETS, Stack

TARGETS = 50
HOSTS = 5
CONCURRENCY = 16
ROUTER = "router"  # a host no target names: its worker only records and routes


def say(text: str = "") -> None:
    print(text, flush=True)


@dataclass
class Install:
    """One rollhook (a web process) and where its events, jobs and messages land."""

    label: str
    hosts: dict[str, str]  # target -> host
    stack: Stack
    db: sa.Engine
    broker: redis.Redis


@dataclass
class Round:
    label: str
    pushes: int
    accepted: int
    seconds: float
    answers: list[float]  # seconds per answer
    web_cpu: float  # CPU seconds of the web process group, burst and publishing
    client_cpu: float  # CPU seconds of this script during the burst
    load: float  # 1-minute load average when the burst started
    checks: list[str]  # what did not hold; empty when all did
    queues: dict[str, int]  # deploy queue -> targets with a run waiting there


def run(rounds: int, pushes: int) -> int:
    with ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix="rh-bench-", dir="/tmp"))
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        claim(root)  # should this run die, the next run (or test session) reaps it
        logs = root / "logs"
        logs.mkdir()
        server = RedisServer(root / "redis", logs)
        stack.callback(server.stop)
        server.start()
        root.chmod(0o755)  # traversable by the postgres user, which runs the cluster
        postgres = PostgresServer(root / "postgres", logs)
        stack.callback(postgres.stop)
        postgres.start()
        layouts = {
            "1 host": dict.fromkeys(_names(), LOCAL_HOST),
            f"{HOSTS} hosts": {name: f"h{i % HOSTS}" for i, name in enumerate(_names())},
        }
        installs = []
        for n, (label, hosts) in enumerate(layouts.items(), start=1):
            broker_url = server.url.rsplit("/", 1)[0] + f"/{n}"  # a Redis database each
            rh_root = root / f"install-{n}"
            installs.append(
                _install(
                    stack,
                    rh_root,
                    label=label,
                    hosts=hosts,
                    broker_url=broker_url,
                    postgres=postgres,
                )
            )
        template = json.loads(PAYLOAD.read_text())
        say(
            f"{TARGETS} targets; {pushes} pushes per target and round ({TARGETS * pushes}), "
            f"{rounds} rounds per install, {CONCURRENCY} at a time; no worker runs during a burst"
        )
        results: dict[str, list[Round]] = {i.label: [] for i in installs}
        try:
            for install in installs:  # warm-up, not counted: the first requests, imports
                warm = _burst(install, template, 1, "warm-up")
                say(f"warm-up {install.label}: checks: {'; '.join(warm.checks) or 'all held'}")
            for r in range(rounds):
                for install in installs if r % 2 == 0 else installs[::-1]:
                    result = _burst(install, template, pushes, f"r{r}")
                    results[install.label].append(result)
                    say(_line(install.label, r, result))
        except BaseException:
            for install in installs:
                say(install.stack.all_logs()[-10000:])
            raise
        for line in _report(results):
            say(line)
    return 0


def _names() -> list[str]:
    return [f"t{i:02d}" for i in range(TARGETS)]


def _repo(name: str) -> str:
    # Never fetched (no worker deploys here); loopback all the same.
    return f"http://127.0.0.1:9/acme/{name}.git"


def _install(
    stack: ExitStack,
    root: Path,
    *,
    label: str,
    hosts: dict[str, str],
    broker_url: str,
    postgres: PostgresServer,
) -> Install:
    db_url = postgres.create_database()
    template = json.loads(PAYLOAD.read_text())
    targets = {
        name: {
            "repo": _repo(name),
            "branch": template["ref"].removeprefix("refs/heads/"),
            "project": name,
            "service": "web",
            "host": host,
            "sync": {"interval": 0},
        }
        for name, host in hosts.items()
    }
    env = {
        "ROLLHOOK_REDIS_URL": broker_url,
        "ROLLHOOK_DATABASE_URL": db_url,
        "DOCKER_HOST": "unix:///nonexistent/docker.sock",  # nothing here needs an engine
    }
    rh = Stack(root, yaml.safe_dump({"targets": targets}), env)
    stack.callback(rh.stop)
    rh.start("web")
    rh.wait_ready()
    db = sa.create_engine(db_url)
    stack.callback(db.dispose)
    client = redis.Redis.from_url(broker_url)
    stack.callback(client.close)
    return Install(label, hosts, rh, db, client)


def _bodies(template: dict[str, Any], pushes: int, tag: str) -> list[tuple[str, bytes]]:
    """(target, signed body) for ``pushes`` new commits per target, the targets interleaved."""
    out = []
    for k in range(pushes):
        for name in _names():
            doc = json.loads(json.dumps(template))
            sha = uuid.uuid4().hex + uuid.uuid4().hex[:8]
            doc["before"], doc["after"] = doc["after"], sha
            doc["head_commit"]["id"] = doc["commits"][-1]["id"] = sha
            doc["head_commit"]["message"] = doc["commits"][-1]["message"] = f"{tag} {name} {k}"
            repo = doc["repository"]
            for key in ("clone_url", "html_url", "url", "git_url", "ssh_url"):
                repo[key] = _repo(name)
            repo["full_name"], repo["name"] = f"acme/{name}", name
            out.append((name, json.dumps(doc).encode()))
    return out


def _burst(install: Install, template: dict[str, Any], pushes: int, tag: str) -> Round:
    bodies = _bodies(template, pushes, tag)
    secret = SECRETS["ROLLHOOK_GITHUB_SECRET"].encode()
    requests = [
        (
            body,
            {
                "Content-Type": "application/json",
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": f"{tag}-{uuid.uuid4()}",
                "X-Hub-Signature-256": hub_signature(secret, body),
            },
        )
        for _, body in bodies
    ]
    # Clients made beforehand (each loads the CA bundle), kept alive through the burst.
    clients: queue.SimpleQueue[httpx.Client] = queue.SimpleQueue()
    for _ in range(CONCURRENCY):
        clients.put(httpx.Client(timeout=60))
    url = f"{install.stack.url}/hooks/github"

    def send(request: tuple[bytes, dict[str, str]]) -> tuple[int, float]:
        client = clients.get()
        try:
            started = time.perf_counter()
            answer = client.post(url, content=request[0], headers=request[1])
            return answer.status_code, time.perf_counter() - started
        finally:
            clients.put(client)

    events0, jobs0 = _counts(install.db)
    web = install.stack.procs["web"].pid
    cpu0, client0, load = tree_cpu(web), time.process_time(), os.getloadavg()[0]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        answers = list(pool.map(send, requests))
    seconds = time.perf_counter() - started
    client_cpu = time.process_time() - client0
    while not clients.empty():
        clients.get().close()
    checks: list[str] = []
    statuses = Counter(status for status, _ in answers)
    if statuses != {202: len(requests)}:
        checks.append(f"answers {dict(statuses)}")
    new = len(requests)
    stored = wait_for(lambda: _counts(install.db) == (events0 + new, jobs0 + new), 120)
    published = wait_for(lambda: _undispatched(install.db) == 0, 120)
    web_cpu = tree_cpu(web) - cpu0
    if not stored:
        checks.append(f"stored {_counts(install.db)}, want {(events0 + new, jobs0 + new)}")
    if not published:
        checks.append(f"{_undispatched(install.db)} jobs not published")
    checks += _check_published(install, Counter(name for name, _ in bodies))
    routed, queues = _route(install, {name for name, _ in bodies})
    checks += routed
    return Round(
        tag,
        len(requests),
        statuses[202],
        seconds,
        [s for _, s in answers],
        web_cpu,
        client_cpu,
        load,
        checks,
        queues,
    )


def _counts(db: sa.Engine) -> tuple[int, int]:
    with db.connect() as conn:
        events = conn.execute(sa.text("SELECT count(*) FROM events")).scalar_one()
        jobs = conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar_one()
    return int(events), int(jobs)


def _undispatched(db: sa.Engine) -> int:
    with db.connect() as conn:
        query = "SELECT count(*) FROM jobs WHERE dispatched_at IS NULL"
        return int(conn.execute(sa.text(query)).scalar_one())


def _unconsumed(db: sa.Engine) -> int:
    with db.connect() as conn:
        query = "SELECT count(*) FROM jobs WHERE consumed_at IS NULL"
        return int(conn.execute(sa.text(query)).scalar_one())


def _messages(client: redis.Redis, name: str) -> list[tuple[str, list[Any]]]:
    """(task, args) of each message waiting in queue ``name``, as a worker would receive it."""
    out = []
    for raw in client.lrange(name, 0, -1):
        message = json.loads(raw)
        args = json.loads(base64.b64decode(message["body"]))[0]
        out.append((message["headers"]["task"], args))
    return out


def _check_published(install: Install, sent: Counter[str]) -> list[str]:
    """Every job of the burst, exactly once, in the messages to ``housekeeping``."""
    found: Counter[str] = Counter()
    for task, args in _messages(install.broker, HOUSEKEEPING_QUEUE):
        if task == PROCESS_JOBS:
            found.update(json.loads(job)["target"] for job in args[0])
    return [] if found == sent else [f"jobs in {HOUSEKEEPING_QUEUE}: {found}, sent {sent}"]


def _route(install: Install, pushed: set[str]) -> tuple[list[str], dict[str, int]]:
    """A worker of no target's host records the jobs and routes each target's run; with no
    host's worker running, the runs stay in the hosts' queues: read them, then empty them."""
    rh = install.stack
    rh.start("worker", "--host", ROUTER, as_name="router")
    try:
        routed = wait_for(
            lambda: (
                _unconsumed(install.db) == 0
                and install.broker.llen(HOUSEKEEPING_QUEUE) == 0
                and pushed <= {name for names in _runs(install).values() for name in names}
            ),
            120,
        )
    finally:
        rh.kill("router", signal.SIGTERM)
    checks = [] if routed else [f"{_unconsumed(install.db)} jobs not recorded by a worker"]
    runs = _runs(install)
    for deploy_queue, names in runs.items():
        for name in names:
            want = host_queue(DEPLOY_QUEUE, install.hosts[name])
            if deploy_queue != want:
                checks.append(f"{name} in {deploy_queue}, its host's queue is {want}")
        install.broker.delete(deploy_queue)  # these deployments are not run here
    if missing := pushed - {name for names in runs.values() for name in names}:
        checks.append(f"no run in a host's queue for {sorted(missing)}")
    return checks, {q: len(set(names)) for q, names in sorted(runs.items())}


def _runs(install: Install) -> dict[str, list[str]]:
    """The targets of the ``run_target`` messages waiting in each deploy queue."""
    runs: dict[str, list[str]] = {}
    for key in install.broker.scan_iter(f"{DEPLOY_QUEUE}*"):
        if install.broker.type(key) == b"list":
            name = key.decode()
            runs[name] = [a[0] for t, a in _messages(install.broker, name) if t == RUN_TARGET]
    return runs


def _line(label: str, r: int, result: Round) -> str:
    p50, p99 = _percentiles(result.answers)
    return (
        f"round {r + 1} {label}: {result.accepted}/{result.pushes} accepted in "
        f"{result.seconds:.2f}s ({result.accepted / result.seconds:.0f}/s), p50 {p50:.1f} ms, "
        f"p99 {p99:.1f} ms, web CPU {result.web_cpu / result.pushes * 1e3:.2f} ms/push, "
        f"client CPU {result.client_cpu / result.pushes * 1e3:.2f} ms/push, "
        f"load {result.load:.1f}; targets per queue: "
        + ", ".join(f"{q} {n}" for q, n in result.queues.items())
        + f"; checks: {'; '.join(result.checks) or 'all held'}"
    )


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return cuts[49] * 1e3, cuts[98] * 1e3


def _report(results: dict[str, list[Round]]) -> list[str]:
    lines = [
        "",
        "| install | pushes | accepted/s per round | p50 | p99 | web CPU per push | "
        "load avg | every event stored, every job in its host's queue |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, rounds in results.items():
        answers = [s for r in rounds for s in r.answers]
        p50, p99 = _percentiles(answers)
        rates = " / ".join(f"{r.accepted / r.seconds:.0f}" for r in rounds)
        cpu = sum(r.web_cpu for r in rounds) / sum(r.pushes for r in rounds) * 1e3
        loads = f"{min(r.load for r in rounds):.1f}-{max(r.load for r in rounds):.1f}"
        held = all(not r.checks for r in rounds)
        lines.append(
            f"| {label} | {sum(r.pushes for r in rounds)} | {rates} | {p50:.1f} ms | "
            f"{p99:.1f} ms | {cpu:.2f} ms | {loads} | {'yes' if held else 'NO'} |"
        )
    return lines
