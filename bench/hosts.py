"""Several hosts: a burst of pushes to targets spread over private engines, one per host.

    make bench-hosts        (or: uv run --frozen python bench/hosts.py [--hosts 5] [--per-host 10])

Needs root and the test dependencies (scripts/install-test-deps.sh). Everything runs on
127.0.0.1 and is removed afterwards: one private dockerd per host, a registry, a git
server, Redis, PostgreSQL, and rollhook as an operator runs it on several hosts: web and
beat, and a worker per host (``rollhook worker --host hN`` with that host's engine and
data directory). Every target is first deployed (1.0.0, not measured); then one signed
GitHub push per target is sent at once (to 2.0.0) and the script prints, per host, the
time from the event (stored, on the database's clock) to the deployment ending healthy,
and the web process's rate of accepted webhooks during the burst. Figures, not pass/fail.

``--accept-only`` measures the web process alone instead (bench/hosts_accept.py): the same
50 targets on 5 hosts and on one, no worker running during the bursts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import datetime
from typing import Any

import yaml

from bench.hosts_accept import run as accept_only
from bench.rollout_setup import start_infra
from tests.harness.engine import PrivateEngine
from tests.harness.postgres import PostgresServer
from tests.harness.standin import StandInImages
from tests.stack import Stack
from tests.test_end_to_end import Infra


def say(text: str) -> None:
    print(text, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=5)
    parser.add_argument("--per-host", type=int, default=10)
    parser.add_argument(
        "--accept-only",
        action="store_true",
        help="the web process alone, 1 host against 5 (bench/hosts_accept.py); no deployments",
    )
    parser.add_argument("--rounds", type=int, default=3, help="--accept-only: rounds per layout")
    parser.add_argument("--pushes", type=int, default=20, help="--accept-only: per target, round")
    args = parser.parse_args()
    if args.accept_only:
        return accept_only(args.rounds, args.pushes)
    with ExitStack() as stack:
        infra = start_infra(stack)
        logs = infra.root / "logs"
        engines = [infra.engine]
        for i in range(1, args.hosts):
            engine = PrivateEngine(infra.root / f"engine-{i}", logs / f"engine-{i}")
            (logs / f"engine-{i}").mkdir(parents=True, exist_ok=True)
            stack.callback(engine.stop)
            engine.start()
            engines.append(engine)
        infra.root.chmod(0o755)  # traversable by the postgres user, which runs the cluster
        postgres = PostgresServer(infra.root / "postgres", logs)
        stack.callback(postgres.stop)
        postgres.start()
        images = StandInImages(infra.engine.host, infra.registry.host)
        stack.callback(images.close)
        images.build("1.0.0", 1, "good", boot_delay=0.3)
        images.build("2.0.0", 2, "good", boot_delay=0.3)
        say(f"{args.hosts} engines, {args.hosts * args.per_host} targets")

        apps: dict[str, tuple[str, Infra]] = {}  # target -> (host, its infra repo)
        targets: dict[str, Any] = {}
        for h in range(args.hosts):
            for t in range(args.per_host):
                name = f"h{h}t{t}"
                app = Infra(infra.git.create_repo(name), images, infra.registry.host)
                app.commit("1.0.0")
                body = yaml.safe_load(app.config())["targets"]["llm"]
                targets[name] = {**body, "project": name, "host": f"h{h}", "sync": {"interval": 0}}
                apps[name] = (f"h{h}", app)
        env = {
            "ROLLHOOK_REDIS_URL": infra.redis.url,
            "ROLLHOOK_DATABASE_URL": postgres.create_database(),
            "DOCKER_HOST": "unix:///nonexistent/docker.sock",  # web and beat need no engine
        }
        rh = Stack(infra.root / "rollhook", yaml.safe_dump({"targets": targets}), env)
        stack.callback(rh.stop)
        rh.start("web")
        rh.start("beat")
        for h, engine in enumerate(engines):
            data = {"DOCKER_HOST": engine.host, "ROLLHOOK_DATA_DIR": str(rh.root / f"h{h}")}
            rh.start("worker", "--host", f"h{h}", env=data, as_name=f"worker-h{h}")
        rh.wait_ready()
        rh.wait_for(lambda: _all_up(rh, args.hosts), 120, "every host's worker")
        try:
            burst(rh, apps, "1.0.0", "warm-up")
            report = burst(rh, apps, "2.0.0", "measured")
        except BaseException:
            sys.stderr.write(rh.all_logs()[-20000:])
            raise
        for line in report:
            say(line)
    return 0


def _all_up(rh: Stack, hosts: int) -> bool:
    seen = rh.api.get("/hosts").json()["hosts"]
    return sum(1 for h in seen if h["state"] == "up") == hosts


def burst(rh: Stack, apps: dict[str, tuple[str, Infra]], tag: str, label: str) -> list[str]:
    pushes = {name: app.commit(tag, f"{name} {tag}", n=tag) for name, (_, app) in apps.items()}
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(
            pool.map(lambda item: rh.github_push(item[1], f"{label}-{item[0]}"), pushes.items())
        )
    accepted = time.monotonic() - started
    events = {name: answer.json()["id"] for name, answer in zip(pushes, answers, strict=True)}
    finals = {name: rh.wait_final(event_id, timeout=1800)[0] for name, event_id in events.items()}
    lines = [
        f"{label}: {len(pushes)} pushes accepted in {accepted:.2f}s "
        f"({len(pushes) / accepted:.0f}/s, 16 at a time)"
    ]
    by_host: dict[str, list[float]] = {}
    failed = 0
    for name, record in finals.items():
        event = rh.api.get(f"/events/{events[name]}").json()
        failed += record["status"] != "succeeded"
        seconds = _at(record["finished_at"]) - _at(event["received_at"])
        by_host.setdefault(apps[name][0], []).append(seconds.total_seconds())
    lines.append("| host | targets | event -> healthy, median | max |")
    lines.append("|---|---|---|---|")
    for host, values in sorted(by_host.items()):
        lines.append(
            f"| {host} | {len(values)} | {statistics.median(values):.1f} s | {max(values):.1f} s |"
        )
    lines.append(f"not succeeded: {failed}")
    return lines


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


if __name__ == "__main__":
    sys.exit(main())
