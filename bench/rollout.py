"""Rollout benchmark: rollhook against `compose pull && down && up -d`, side by side.

    make bench-rollout        (or: uv run --frozen python bench/rollout.py [--reps 5])

Needs root (a private Docker engine) and the test dependencies (scripts/install-test-deps.sh).
Everything runs on 127.0.0.1 and is started and removed by this script: a private dockerd,
a local registry, a git server, Redis, and a whole rollhook (web, worker and beat as real
processes, Redis as broker). The app is the anything-llm stand-in with a fixed boot time.

Each measured update replaces a good version with the next (v(n) -> v(n+1)): a new image
that is in the local registry only, so both ways pull it during the measurement. rollhook
is driven by a push to the infra repo and its signed GitHub webhook; the script is run in
the folder that holds the same compose file and the same amount of data. A prober asks
/api/ping 20 times a second throughout. It prints figures; it is not a pass/fail test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import NoReturn

from bench.rollout_arms import Folder, RollhookArm, ScriptArm, Target, rollhook_config
from bench.rollout_report import (
    Results,
    crash_lines,
    goal_lines,
    goals,
    markdown,
    s,
    step_table,
    upgrade_table,
)
from bench.rollout_setup import (
    Image,
    ImageSpec,
    Infra,
    bare_pull_seconds,
    build_images,
    seed_storage,
    start_infra,
)
from bench.rollout_watch import EngineEvents
from tests.harness.engine import compose_binary
from tests.harness.ports import free_port
from tests.stack import Stack

SIZES = {"10mb": ("10 MB", 10 << 20), "1gb": ("1 GB", 1 << 30)}
CRASH_SIZE = "10mb"
BROKEN_SCHEMA = 99  # newer than any good version: the broken release migrates the data


def say(text: str) -> None:
    print(text, flush=True)


def image_specs(reps: int, crash_reps: int) -> list[ImageSpec]:
    specs = [
        ImageSpec(f"acme/{arm}-{size}", f"{n}.0.0", n)
        for arm in ("rollhook", "script")
        for size in SIZES
        for n in range(1, reps + 2)
    ]
    specs += [
        ImageSpec(f"acme/{arm}-{CRASH_SIZE}", f"9.{n}.0-crash", BROKEN_SCHEMA, "crash")
        for arm, count in (("rollhook", crash_reps), ("script", 1))
        for n in range(1, count + 1)
    ]
    # One bare pull per round of updates, plus one that warms the engine up.
    specs += [ImageSpec("acme/calibration", f"{n}.0.0", 1) for n in range(reps + 1)]
    return specs


def start_rollhook(stack: ExitStack, infra: Infra, events: EngineEvents) -> RollhookArm:
    repo = infra.git.create_repo("llm-infra")
    targets = {
        size: Target(f"rollhook-{size}", f"bench-rollhook-{size}", free_port()) for size in SIZES
    }
    config = rollhook_config(repo, list(targets.values()), infra.registry.host)
    env = {
        "DOCKER_HOST": infra.engine.host,
        "ROLLHOOK_REDIS_URL": infra.redis.url,
        "ROLLHOOK_WORKER_CONCURRENCY": "2",
    }
    rollhook = Stack(infra.root / "rollhook", config, env)
    stack.callback(rollhook.stop)
    for process in ("web", "worker", "beat"):
        rollhook.start(process)
    rollhook.wait_ready()
    return RollhookArm(rollhook, repo, events, targets)


class Bench:
    def __init__(self, stack: ExitStack, args: argparse.Namespace) -> None:
        self.reps, self.crash_reps, boot_delay = args.reps, args.crash_reps, args.boot
        sizes = {k: label for k, (label, _) in SIZES.items()}
        self.results = Results(sizes, crash_wait=args.crash_wait)
        say("starting a private Docker engine, a registry, a git server and Redis ...")
        self.infra = start_infra(stack)
        if args.keep_logs:
            # Runs once rollhook and the apps are stopped, before the engine and the files go.
            stack.callback(keep_logs, self.infra.root, args.keep_logs)
        self.events = EngineEvents(self.infra.engine.client())
        self.events.start()
        stack.callback(self.events.stop)
        self.images = build_images(self.infra, image_specs(self.reps, self.crash_reps), boot_delay)
        self.calibration = [i for k, i in self.images.items() if k.startswith("acme/calibration")]
        bare_pull_seconds(self.infra, [self.calibration.pop()])  # warm-up, not counted
        say(f"built {len(self.images)} stand-in images (boot {boot_delay:g} s)")

        say("starting rollhook (web, worker, beat; Redis broker) ...")
        self.rollhook = start_rollhook(stack, self.infra, self.events)
        self.script = ScriptArm([str(compose_binary())], self.infra.engine.env(), self.events)
        stack.callback(self.script.down)
        for size, (label, size_bytes) in SIZES.items():
            self.script.add(size, Folder(self.infra.root / f"script-{size}", free_port()))
            say(f"writing {label} into each storage folder ...")
            seed_storage(self.rollhook.storage(size), size_bytes)
            seed_storage(self.script.folders[size].storage, size_bytes)
        self.rollhook.setup({size: self.good("rollhook", size, 1) for size in SIZES})
        self.script.setup({size: self.good("script", size, 1) for size in SIZES})
        self.results.first_backup = {size: self.rollhook.first_backup(size) for size in SIZES}

    def good(self, arm: str, size: str, n: int) -> Image:
        return self.images[f"acme/{arm}-{size}:{n}.0.0"]

    def upgrades(self) -> None:
        """Rounds of updates: in each, a bare pull, then both ways update, for every size.

        Interleaved, and in an order that rotates from round to round, so that a busier
        moment of the machine, or whatever follows the bare pull, hits every column alike.
        """
        results = self.results
        arms = [("rollhook", self.rollhook), ("script", self.script)]
        order = [(size, arm) for size in SIZES for arm in arms]
        for n in range(1, self.reps + 1):
            results.pull += bare_pull_seconds(self.infra, [self.calibration.pop()])
            time.sleep(1)  # let the engine finish removing that image
            shift = (n - 1) % len(order)
            for size, (name, arm) in order[shift:] + order[:shift]:
                old, new = self.good(name, size, n), self.good(name, size, n + 1)
                upgrade = arm.upgrade(size, old, new)
                results.upgrades.setdefault((name, size), []).append(upgrade)
                say(
                    f"  {name:<8} {SIZES[size][0]:>5} {old.app_version} -> {new.app_version}: "
                    f"push-to-healthy {s(upgrade.push_to_healthy)}, downtime "
                    f"{s(upgrade.downtime)}, stop {s(upgrade.stop)}, boot {s(upgrade.boot)}"
                )
                say("           " + ", ".join(f"{k} {v:.2f}" for k, v in upgrade.steps.items()))
        say(f"  bare pulls: {', '.join(f'{p:.2f}' for p in results.pull)} s")

    def crashes(self) -> None:
        last = self.reps + 1
        for n in range(1, self.crash_reps + 1):
            broken = self.images[f"acme/rollhook-{CRASH_SIZE}:9.{n}.0-crash"]
            crash = self.rollhook.crash(CRASH_SIZE, self.good("rollhook", CRASH_SIZE, last), broken)
            self.results.crashes.setdefault("rollhook", []).append(crash)
            say(
                f"  rollhook broken release {n}: {crash.outcome}, detected "
                f"{s(crash.detected_after)} after the crash, old version back "
                f"{s(crash.recovered_after)} after that"
            )
        broken = self.images[f"acme/script-{CRASH_SIZE}:9.1.0-crash"]
        wait = self.results.crash_wait
        crash = self.script.crash(CRASH_SIZE, self.good("script", CRASH_SIZE, last), broken, wait)
        self.results.crashes["script"] = [crash]
        say(f"  script   broken release: old version back: {s(crash.recovered_after)}")


def keep_logs(root: Path, into: Path) -> None:
    """Copy the daemons' and rollhook's logs out of the run's directory before it goes."""
    into.mkdir(parents=True, exist_ok=True)
    for logs in (root / "logs", root / "rollhook" / "logs"):
        if logs.is_dir():
            shutil.copytree(logs, into / f"{logs.parent.name}-logs", dirs_exist_ok=True)
    say(f"logs kept in {into}")


def run(stack: ExitStack, args: argparse.Namespace) -> Results:
    began = time.monotonic()
    bench = Bench(stack, args)
    say(f"set up in {time.monotonic() - began:.0f} s; measuring ...")
    load = os.getloadavg()[0]
    bench.upgrades()
    bench.crashes()
    # Other work on the machine shows in every figure: say how busy it was.
    bench.results.machine = (
        f"{os.cpu_count()} CPUs, 1-minute load average {load:.1f} when measuring began, "
        f"{os.getloadavg()[0]:.1f} when it ended"
    )
    say(f"done in {time.monotonic() - began:.0f} s")
    return bench.results


def print_report(results: Results, args: argparse.Namespace) -> None:
    found = goals(results)
    sections = [
        (
            "How it was measured",
            [
                f"stand-in anything-llm, boot {args.boot:g} s; {args.reps} rounds of updates "
                f"(interleaved), {args.crash_reps} broken releases; figures are median / max",
                f"machine: {results.machine}",
                "images are NOT pre-pulled: each new version is only in the local registry, "
                "both ways pull it inside the measurement (rollhook: before stopping; "
                "the script: `compose pull` before `down`)",
                "rollhook: git push + signed GitHub webhook -> web -> Redis -> worker; "
                "push-to-healthy counts from sending the webhook",
                "script: `docker compose pull && docker compose down && docker compose up -d` "
                "(the bundled compose v2), counted from its start",
                "healthy = the new version's first 200 on /api/ping seen by the prober; "
                "stop and boot from the engine's own container events",
                "rollhook's health gate: interval 0.5 s, settle 2 s (settle delays the "
                "record's end, not the app); backups on; Celery worker with 2 processes",
                "overhead = push-to-healthy - pull - stop - boot, where pull is the median of "
                "bare pulls of fresh images through the engine (rollhook's own pull code), "
                "one before each round of updates",
                "first backup (a full copy while the app runs, not measured): "
                + ", ".join(
                    f"{results.sizes[k]} {v:.2f} s" for k, v in results.first_backup.items()
                )
                + "; later backups hard-link unchanged files",
            ],
        ),
        ("Updates (good v(n) -> v(n+1))", upgrade_table(results)),
        ("Where the time goes (medians, seconds)", step_table(results)),
        (f"Broken release ({SIZES[CRASH_SIZE][0]} of data)", crash_lines(results)),
        ("Goals", goal_lines(found)),
        ("For the README", markdown(results, found, args.boot)),
    ]
    for title, lines in sections:
        say(f"\n## {title}\n")
        for line in lines:
            say(line)


def _interrupt(signum: int, _frame: object) -> NoReturn:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="rounds of updates")
    parser.add_argument("--crash-reps", type=int, default=3, help="broken releases for rollhook")
    parser.add_argument("--boot", type=float, default=2.0, help="the app's boot time, seconds")
    parser.add_argument(
        "--crash-wait",
        type=float,
        default=20.0,
        help="how long to watch the script's broken release",
    )
    parser.add_argument("--keep-logs", type=Path, help="copy the logs here before cleaning up")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with ExitStack() as stack:
            try:
                results = run(stack, args)
            finally:
                # A second Ctrl-C must not cut the teardown short: it would leave an engine.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                say("cleaning up ...")
    except KeyboardInterrupt:
        print("interrupted; everything it started was removed", file=sys.stderr)
        return 130
    print_report(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
