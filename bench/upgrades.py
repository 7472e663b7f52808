"""Upgrade benchmark: what a steady client sees during one upgrade, four ways side by side.

    make bench-upgrades        (or: uv run --frozen python -m bench.upgrades [--reps 2])

Needs root (a private Docker engine) and the test dependencies (scripts/install-test-deps.sh).
Everything runs on 127.0.0.1 and is started and removed by this script: a private dockerd,
a local registry, a git server, the proxy's two Caddy processes, and the anything-llm
stand-in, upgraded from 1.0.0 to 2.0.0-slow (which boots in about 3 s):

- script: what users run today over SSH, ``compose pull && compose down && compose up -d``,
  the client on the app's port;
- recreate: rollhook's ``recreate`` without the proxy, the client on the app's port;
- recreate+proxy: the same through the proxy (requests held while no version serves);
- start-first: the new version beside the old one, switched in the proxy.

Each way runs with the stand-in handling SIGTERM, and ignoring it (as anything-llm's bash
entrypoint does: every stop waits out the 10 s grace period). The client sends 20 requests
a second, GET and a 64 KiB POST in turn. It prints figures; it is not a pass/fail test.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import httpx
from sqlalchemy import Engine

from bench.rollout_setup import seed_storage
from rollhook.records.db import make_engine, migrate
from tests.harness.caddy import CaddyProxy
from tests.harness.engine import PrivateEngine, compose_binary
from tests.harness.gitserver import GitServer
from tests.harness.infra import infra_files
from tests.harness.ports import free_port
from tests.harness.reaper import claim, reap_stale
from tests.harness.registry import Registry
from tests.harness.standin import StandInImages
from tests.harness.webapp import Sent, StandInClient
from tests.workers.deployer import Deployer

OLD, NEW = "1.0.0", "2.0.0-slow"
GRACE = 10.0  # Docker's default stop grace period
WAYS = ("script", "recreate", "recreate+proxy", "start-first")
STEADY = 100  # answers of steady state before and after the upgrade: 5 s each
SIGTERM = {"handled": {}, "ignored": {"IGNORE_SIGTERM": "1"}}
SIZES = {"10 MB": 10 << 20, "1 GB": 1 << 30}  # data rolled back
RESTORED = re.compile(r"data restored from backup \S+ in ([0-9.]+) s")


def say(text: str) -> None:
    print(text, flush=True)


@dataclass(frozen=True)
class Figures:
    way: str
    sigterm: str
    sent: int  # all the requests of the run: steady state, upgrade, steady state
    failed: int
    failing: float  # from the first failed request sent to the last: the outage users saw
    longest: float  # the longest any request waited for its answer (or its error)
    p99: float  # of the requests sent while the upgrade ran
    steady_p99: float  # of the requests sent in the 5 s before it began and after it ended
    changes: int  # how often the version the client saw changed
    seconds: float  # how long the upgrade took, start to end

    def row(self) -> str:
        return (
            f"| {self.way} | {self.sigterm} | {self.failed} / {self.sent} | {self.failing:.1f} s | "
            f"{self.longest:.2f} s | {self.p99 * 1000:.0f} ms | {self.steady_p99 * 1000:.0f} ms | "
            f"{self.p99 / self.steady_p99 if self.steady_p99 else 0:.1f}x | "
            f"{self.changes} | {self.seconds:.1f} s |"
        )


def p99(values: list[float]) -> float:
    if len(values) < 2:
        return max(values, default=0.0)
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def measure(way: str, sigterm: str, url: str, upgrade: Callable[[], None]) -> Figures:
    """Upgrade under the steady client; figures of the requests sent while it ran."""
    with StandInClient(url) as client:
        client.wait_for(STEADY)  # steady state before ...
        began = time.monotonic()
        upgrade()
        ended = time.monotonic()
        client.wait_for(STEADY, after=ended)  # ... and after
    sent: list[Sent] = list(client.sent)
    steady = [s.done - s.sent for s in sent if s.sent < began or s.sent > ended]
    during = [s for s in sent if began <= s.sent <= ended]
    failed = sorted(s.sent for s in sent if not s.ok)
    return Figures(
        way,
        sigterm,
        len(sent),
        len(failed),
        failed[-1] - failed[0] if failed else 0.0,
        max(s.done - s.sent for s in sent),
        p99([s.done - s.sent for s in during]),
        p99(steady),
        len(client.changes()),
        ended - began,
    )


# -- the ways ------------------------------------------------------------------------------


class Bench:
    def __init__(self, stack: ExitStack, root: Path) -> None:
        logs = root / "logs"
        self.root = root
        self.engine = PrivateEngine(root / "engine", logs)
        stack.callback(self.engine.stop)
        self.engine.start()
        self.registry = Registry(root / "registry", logs)
        stack.callback(self.registry.stop)
        self.registry.start()
        self.git = GitServer(root / "git", free_port())
        stack.callback(self.git.stop)
        self.git.start()
        self.caddy = CaddyProxy(root / "proxy", logs)
        stack.callback(self.caddy.stop)
        self.caddy.start()
        say("building the stand-in images ...")
        self.standin = StandInImages(self.engine.host, self.registry.host)
        stack.callback(self.standin.close)
        self.standin.build_default_set()
        self.stack = stack

    def records(self, home: Path) -> Engine:
        """Records of one deployer's own (targets without proxy are all named ``llm``)."""
        engine = make_engine(f"sqlite:///{home / 'records.sqlite'}")
        self.stack.callback(engine.dispose)
        migrate(engine, home)
        return engine

    def deployer(self, environment: dict[str, str], **options: Any) -> Deployer:
        compose: dict[str, Any] = {"environment": environment}
        if options.get("strategy") == "start-first":
            # Each colour on its own port; its data elsewhere (start-first refuses mounts).
            compose = {"environment": {"SERVER_PORT": "${ROLLHOOK_PORT}", **environment}}
            compose["volumes"] = False
        home = self.root / uuid.uuid4().hex[:8]
        home.mkdir()
        deployer = Deployer(
            home,
            self.records(home),
            repo=self.git.create_repo("infra"),
            docker_host=self.engine.host,
            standin=self.standin,
            registry_host=self.registry.host,
            compose=compose,
            stop_timeout=GRACE,
            **options,
        )
        self.stack.callback(deployer.down)
        return deployer

    def rollhook(self, way: str, sigterm: str) -> Figures:
        options: dict[str, Any] = {}
        if way != "recreate":
            options["proxy"] = self.caddy
        if way == "start-first":
            options["strategy"] = "start-first"
        deployer = self.deployer(SIGTERM[sigterm], **options)
        deployer.commit(OLD)
        first = deployer.deploy()
        assert first.status == "succeeded", first.log
        deployer.commit(NEW)

        def upgrade() -> None:
            record = deployer.deploy()
            assert record.status == "succeeded", record.log

        return measure(way, sigterm, deployer.url, upgrade)

    def rollback(self, size_name: str, size: int) -> tuple[Figures, float]:
        """A broken release (migrates the data, crashes on boot) rolled back, the client on
        the app's port; also how long the restore itself took in the rollback."""
        deployer = self.deployer({})
        deployer.commit("2.0.0")
        first = deployer.deploy()
        assert first.status == "succeeded", first.log
        seed_storage(deployer.storage, size)
        deployer.commit("3.0.0-crash")
        restored: list[float] = []

        def upgrade() -> None:
            record = deployer.deploy()
            assert record.status == "rolled_back", record.log
            match = RESTORED.search(record.log)
            assert match is not None, record.log
            [step] = [s for s in record.steps if s["name"] == "rollback"]
            began, ended = (datetime.fromisoformat(step[k]) for k in ("started_at", "finished_at"))
            # The rollback step: stop the broken version, wait for what is left of the
            # staged copy, swap it in, start the old version.
            restored.append((ended - began).total_seconds())
            say(f"    {match.group(0)}")

        figures = measure(f"rollback, {size_name}", "handled", deployer.url, upgrade)
        return figures, restored[0]

    def script(self, sigterm: str) -> Figures:
        port = free_port()
        folder = self.root / f"script-{uuid.uuid4().hex[:8]}"
        project = f"script{uuid.uuid4().hex[:8]}"
        env = self.engine.env({"PATH": os.environ["PATH"]})
        self.stack.callback(
            subprocess.run,
            [str(compose_binary()), "-p", project, "down", "--timeout", "1"],
            cwd=folder,
            env=env,
            capture_output=True,
            check=False,
        )

        def write(tag: str) -> None:
            files = infra_files(
                self.standin.ref(tag),
                port,
                path=".",
                environment=SIGTERM[sigterm],
                volumes=False,
            )
            for name, text in files.items():
                path = folder / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text or "")

        def compose(*args: str) -> None:
            subprocess.run(
                [str(compose_binary()), "-p", project, *args],
                cwd=folder,
                env=env,
                check=True,
                capture_output=True,
            )

        write(OLD)
        compose("pull")
        compose("up", "-d")
        url = f"http://127.0.0.1:{port}"
        wait_for_version(url, OLD)
        write(NEW)

        def upgrade() -> None:
            compose("pull")
            compose("down")
            compose("up", "-d")
            wait_for_version(url, NEW)  # the script ends here; users wait until this

        return measure("script", sigterm, url, upgrade)


def wait_for_version(url: str, version: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(f"{url}/cgi-bin/echo", timeout=2)
            if answer.status_code == 200 and answer.text.startswith(f"{version} "):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{version} never answered on {url}")


# -- running -------------------------------------------------------------------------------


@contextmanager
def bench_root() -> Iterator[Path]:
    reap_stale()  # engines and directories of earlier runs that were killed
    root = Path(tempfile.mkdtemp(prefix="rh-bench-", dir="/tmp"))
    try:
        claim(root)  # should this run die, the next run (or test session) reaps it
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(
    stack: ExitStack, reps: int, only: str | None = None, ways: Sequence[str] = WAYS
) -> tuple[list[Figures], list[tuple[Figures, float]]]:
    bench = Bench(stack, stack.enter_context(bench_root()))
    upgrades, rollbacks = [], []
    for rep in range(reps):
        for sigterm in SIGTERM if only != "rollbacks" else ():
            for way in ways:
                say(f"[{rep + 1}/{reps}] {way}, SIGTERM {sigterm} ...")
                figures = bench.script(sigterm) if way == "script" else bench.rollhook(way, sigterm)
                say("  " + figures.row())
                upgrades.append(figures)
        for size_name, size in SIZES.items() if only != "upgrades" else ():
            say(f"[{rep + 1}/{reps}] a broken release rolled back, {size_name} of data ...")
            figures, restored = bench.rollback(size_name, size)
            say(f"  {figures.row()} rollback step took {restored:.1f} s")
            rollbacks.append((figures, restored))
    return upgrades, rollbacks


HEADER = (
    "| way | SIGTERM | failed / sent | failing for | longest wait | p99 during | steady p99 "
    "| ratio | version changes | upgrade took |\n|---|---|---|---|---|---|---|---|---|---|"
)


def _interrupt(signum: int, _frame: object) -> NoReturn:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=1, help="rounds of the eight upgrades")
    parser.add_argument("--only", choices=["upgrades", "rollbacks"], help="one table only")
    parser.add_argument("--way", choices=WAYS, action="append", help="only this way (repeat)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with ExitStack() as stack:
            try:
                upgrades, rollbacks = run(stack, args.reps, args.only, args.way or WAYS)
            finally:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                say("cleaning up ...")
    except KeyboardInterrupt:
        print("interrupted; everything it started was removed", file=sys.stderr)
        return 130
    say(f"\nOne upgrade {OLD} -> {NEW} (boots in about 3 s), stop grace {GRACE:g} s, 20 req/s:")
    say(HEADER)
    for figures in upgrades:
        say(figures.row())
    say("\nA broken release rolled back (recreate, no proxy): downtime is 'failing for'")
    say(HEADER.replace("| upgrade took |", "| upgrade took | rollback step |") + "---|")
    for figures, restored in rollbacks:
        say(f"{figures.row()} {restored:.1f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
