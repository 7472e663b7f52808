"""The reconcile loop's benchmark: prints figures, asserts nothing (``make bench-reconcile``).

Runs on its own private engine, registry and git server (tests/harness). The worker is
played in this process by the worker's own entry points: a thread ticks
``rollhook.reconcile`` every 2 s (beat's schedule), takes what it publishes and runs the
target (the intake and ``run_target``), and the engine-event watcher (``DriftWatcher``)
runs as in a worker's main process. Broker hops (a few ms through Redis) are not in it.

1. Lost webhook: a commit that nobody announces, with ``sync.interval: 10s``; from the
   push to the new version answering.
2. ``docker stop`` by hand: from the stop to the heal being queued (detected), and to the
   app answering again (its boot is 2 s).

3. Cost: 200 targets over 50 repositories at ``interval: 30s`` (manual mode, nothing
   deployed: no image is in use, so no registry HEAD is made): CPU of the tick (this
   process plus its git children), requests per cycle, and the delay from a push to its
   event.
"""

from __future__ import annotations

import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, closing
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from rollhook.broker import PROCESS_JOBS
from rollhook.records import deployments
from rollhook.records import sync as sync_records
from rollhook.records import targets as target_records
from rollhook.records.db import make_engine, migrate
from rollhook.targets import Target
from tests.harness.engine import PrivateEngine
from tests.harness.gitserver import GitServer
from tests.harness.ports import free_port
from tests.harness.reaper import claim, reap_stale
from tests.harness.registry import Registry
from tests.harness.standin import StandInImages
from tests.workers.deployer import Deployer
from workers import reconcile
from workers.context import WorkerContext
from workers.intake import take_job
from workers.runner import run_target
from workers.watcher import DriftWatcher

ROUNDS = 3
BOOT = 2.0
TICK = 2.0


class Worker:
    """Beat's tick and a worker's queue, in one thread; heals run as soon as published."""

    def __init__(self, deployer: Deployer) -> None:
        self.d = deployer
        self.stopped = threading.Event()
        self.heal_seen_at: float | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(60)

    def _run(self) -> None:
        next_tick = 0.0
        while not self.stopped.is_set():
            if time.monotonic() >= next_tick:
                reconcile.tick(self.d.ctx)
                next_tick = time.monotonic() + TICK
            work = False
            while self.d.sent:
                task, args = self.d.sent.pop(0)
                if task != PROCESS_JOBS:
                    continue
                for job_json in args[0]:
                    if '"heal"' in job_json and self.heal_seen_at is None:
                        self.heal_seen_at = time.monotonic()
                    work = take_job(self.d.ctx, job_json) is not None or work
            if work:
                run_target(self.d.ctx, self.d.name)
            time.sleep(0.02)


def start_infra(stack: ExitStack) -> SimpleNamespace:
    """A private engine, registry and git server; their teardown goes on ``stack``."""
    reap_stale()
    root = Path(tempfile.mkdtemp(prefix="rh-bench-", dir="/tmp"))
    stack.callback(shutil.rmtree, root, ignore_errors=True)
    claim(root)
    engine = PrivateEngine(root / "engine", root / "logs")
    stack.callback(engine.stop)
    engine.start()
    registry = Registry(root / "registry", root / "logs")
    stack.callback(registry.stop)
    registry.start()
    git = GitServer(root / "git", free_port())
    stack.callback(git.stop)
    git.start()
    return SimpleNamespace(root=root, engine=engine, registry=registry, git=git)


def idle(deployer: Deployer) -> bool:
    """Nothing of the target's is running or queued."""
    with deployer.records.begin() as conn:
        name = deployer.name
        return not deployments.running(conn, name) and not deployments.queued(conn, name)


def wait_for(predicate: Any, timeout: float = 120.0) -> float:
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if predicate():
            return time.monotonic()
        time.sleep(0.05)
    raise TimeoutError("timed out")


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} s (max {max(values):.2f})"


def cost(infra: SimpleNamespace, records: Any) -> None:
    repos = [infra.git.create_repo(f"cost{r}") for r in range(50)]
    for repo in repos:
        repo.commit({"infra/docker-compose.yml": "services: {}\n"}, message="start")
    targets = {
        f"t{i}": Target(
            name=f"t{i}", repo=repos[i % 50].url, branch="main", path="infra",
            project=f"cost{i}", service="app", images=[],
            sync={"interval": "30s", "auto": False},
        )
        for i in range(200)
    }  # fmt: skip
    with records.begin() as conn:
        target_records.ensure(conn, list(targets))
        sync_records.ensure(conn, list(targets))
    sent: list[Any] = []
    ctx = WorkerContext(
        records=records, data_dir=infra.root / "cost", targets=targets,
        docker_host=infra.engine.host, lease_seconds=30, send=lambda t, a: sent.append((t, a)),
    )  # fmt: skip

    def measured_tick() -> tuple[reconcile.TickReport, float, float]:
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.monotonic()
        report = reconcile.tick(ctx)
        wall = time.monotonic() - began
        cpu2 = resource.getrusage(resource.RUSAGE_SELF)
        kids2 = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = (cpu2.ru_utime + cpu2.ru_stime - cpu.ru_utime - cpu.ru_stime) + (
            kids2.ru_utime + kids2.ru_stime - kids.ru_utime - kids.ru_stime
        )
        return report, wall, used

    first, wall, used = measured_tick()
    print(
        f"  first cycle: {len(first.polled)} targets polled, requests {dict(first.requests)}, "
        f"{sum(len(v) for v in first.raised.values())} events raised, "
        f"wall {wall:.2f} s, CPU {used:.2f} s",
        flush=True,
    )
    with records.begin() as conn:  # all due again: a steady cycle, nothing new
        for name in targets:
            sync_records.change(conn, name, next_poll_at=None)
    steady, wall, used = measured_tick()
    print(
        f"  steady cycle: {len(steady.polled)} targets polled, requests {dict(steady.requests)}, "
        f"{sum(len(v) for v in steady.raised.values())} events raised, "
        f"wall {wall:.2f} s, CPU {used:.2f} s",
        flush=True,
    )
    # The delay from a push to its event, ticking every 2 s as beat does.
    repos[7].commit({"infra/README": "x\n"}, message="lost webhook")
    began, raised_at = time.monotonic(), None
    while raised_at is None and time.monotonic() - began < 120:
        report = reconcile.tick(ctx)
        if any(name in report.raised for name in ("t7", "t57", "t107", "t157")):
            raised_at = time.monotonic()
        time.sleep(TICK)
    delay = (raised_at or time.monotonic()) - began
    print(f"  push -> event for its 4 targets: {delay:.1f} s (interval 30 s +- 10 %)", flush=True)


def main() -> int:
    with ExitStack() as stack:
        print("starting a private engine, registry and git server...", flush=True)
        infra = start_infra(stack)
        standin = StandInImages(infra.engine.host, infra.registry.host)
        stack.callback(standin.close)
        refs = {tag: standin.build(tag, 1, boot_delay=BOOT) for tag in ("1.0.0", "2.0.0")}
        records = make_engine(f"sqlite:///{infra.root / 'records.sqlite'}")
        migrate(records, infra.root)
        deployer = Deployer(
            infra.root,
            records,
            repo=infra.git.create_repo("infra"),
            docker_host=infra.engine.host,
            standin=SimpleNamespace(ref=lambda tag: refs[tag]),
            registry_host=infra.registry.host,
            sync={"interval": "10s"},
            health={"settle": 0.5, "timeout": 60},
        )
        stack.callback(deployer.down)
        deployer.commit("1.0.0")
        assert deployer.deploy(manual=True, source="api").status == "succeeded"
        worker = Worker(deployer)
        watcher = DriftWatcher(deployer.ctx)
        worker.start()
        stack.callback(worker.stop)
        watcher.start()
        stack.callback(watcher.stop)
        time.sleep(1.0)

        lost: list[float] = []
        for n in range(ROUNDS):
            tag = "2.0.0" if n % 2 == 0 else "1.0.0"
            began = time.monotonic()
            deployer.commit(tag, f"bench {n}")
            lost.append(wait_for(lambda tag=tag: deployer.app_version() == tag) - began)
            print(f"  lost webhook, round {n + 1}: {lost[-1]:.2f} s", flush=True)

        detected, serving = [], []
        with closing(infra.engine.client()) as client:
            for n in range(ROUNDS):
                [app] = client.containers.list(
                    filters={"label": f"com.docker.compose.project={deployer.target.project}"}
                )
                wait_for(
                    lambda: idle(deployer)
                )  # a stop during rollhook's own gate is its failure, not drift
                worker.heal_seen_at = None
                began = time.monotonic()
                app.stop(timeout=10)
                stopped = time.monotonic()
                wait_for(lambda: worker.heal_seen_at is not None)
                detected.append((worker.heal_seen_at or stopped) - stopped)
                serving.append(wait_for(lambda: deployer.app_version() is not None) - stopped)
                print(
                    f"  docker stop, round {n + 1}: stop took {stopped - began:.2f} s, "
                    f"heal queued {detected[-1]:.2f} s after, serving {serving[-1]:.2f} s after",
                    flush=True,
                )
                time.sleep(3.0)  # past the heal window's debounce
        print()
        print(f"lost webhook (interval 10 s, beat tick {TICK:g} s), push -> new version answers:")
        print(f"  {summary(lost)}  [{ROUNDS} rounds]")
        print(f"docker stop by hand (boot {BOOT:g} s):")
        print(f"  detected (heal queued after the container stopped): {summary(detected)}")
        print(f"  serving again after the container stopped:           {summary(serving)}")
        worker.stop()
        watcher.stop()
        print("cost: 200 targets over 50 repositories, interval 30 s:", flush=True)
        cost(infra, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
