"""``rollhook up | web | worker | beat``: the processes, alone or supervised together.

``up`` runs web, worker and beat, and the front proxy (``rollhook proxy``) as well when a
target has ``proxy``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

from rollhook.broker import worker_queues
from rollhook.datadir import prepare_data_dir
from rollhook.records import deployments
from rollhook.records.db import make_engine, migrate
from rollhook.settings import LOCAL_HOST, ConfigError, Settings, load_settings
from rollhook.targets import Target, check_host_name, load_targets, several_hosts_problems
from workers.procs import end_group

# Seconds between asking the processes to stop and killing them. An idle worker on the
# embedded broker notices a SIGTERM only between two polls (up to 2 s, more under load).
STOP_GRACE = 7.0


def _argv(
    command: str, settings: Settings, host: str, port: int, worker_host: str = LOCAL_HOST
) -> list[str]:
    python = sys.executable
    if command == "web":
        # uvicorn with the Procfile's options under its process manager: a SIGHUP
        # replaces the web processes without refusing a connection (service/serve.py).
        return [python, "-m", "service.serve", "--host", host, "--port", str(port)]
    if command == "worker":
        return [
            python,
            "-m",
            "celery",
            "-A",
            "workers.app",
            "worker",
            "-Q",
            ",".join(worker_queues(worker_host)),
            "--loglevel",
            "INFO",
            "--concurrency",
            str(settings.worker_concurrency),
        ]
    if command == "proxy":
        return [python, "-m", "cli.main", "proxy"]
    return [python, "-m", "celery", "-A", "workers.app", "beat", "--loglevel", "INFO"]


def processes(targets: Mapping[str, Target], public_host: str | None = None) -> tuple[str, ...]:
    """What ``rollhook up`` runs: the proxy too when a target, or rollhook itself
    (``ROLLHOOK_PUBLIC_HOST``), is served through it."""
    proxied = bool(public_host) or any(t.proxy is not None for t in targets.values())
    return ("web", "worker", "beat", "proxy") if proxied else ("web", "worker", "beat")


def checked_targets(settings: Settings) -> dict[str, Target]:
    """The targets file, loaded and checked as the processes will need it (or ConfigError)."""
    targets = load_targets(settings.config)
    for problem in several_hosts_problems(
        targets,
        embedded_broker=settings.embedded_broker,
        sqlite_records=settings.records_url().startswith("sqlite"),
    ):
        raise ConfigError(problem)
    return targets


def prepare() -> tuple[Settings, dict[str, Target]]:
    """Fail fast, with one line, before any process starts; migrate once."""
    settings = load_settings()
    targets = checked_targets(settings)
    prepare_data_dir(settings.data_dir)
    engine = make_engine(settings.records_url())
    try:
        migrate(engine, settings.data_dir)
    finally:
        engine.dispose()
    return settings, targets


def run_process(args: argparse.Namespace) -> int:
    settings, targets = prepare()
    host = getattr(args, "host", "127.0.0.1")
    port = getattr(args, "port", None) or settings.port
    if args.command != "up":
        worker_host = getattr(args, "worker_host", LOCAL_HOST)
        try:
            check_host_name(worker_host)
        except ValueError as exc:
            raise ConfigError(f"--host {worker_host!r}: {exc}") from exc
        # The worker's Celery app reads it from the environment (rollhook.settings).
        os.environ["ROLLHOOK_WORKER_HOST"] = worker_host
        argv = _argv(args.command, settings, host, port, worker_host)
        os.execv(argv[0], argv)
    from cli.reload import Reloader

    names = processes(targets, settings.public_host)
    supervisor = Supervisor({name: _argv(name, settings, host, port) for name in names})
    # Editing the targets file (or a SIGHUP) applies it to the running processes.
    reloader = Reloader(supervisor, settings, targets, lambda n: _argv(n, settings, host, port))
    supervisor.start()
    others = ", ".join(names[1:-1]) + f" and {names[-1]}"
    print(f"rollhook up: web on http://{host}:{port}, {others} started", flush=True)
    return supervisor.run(settings, tick=reloader.tick)


class Supervisor:
    """Runs processes side by side, like a Procfile runner: when one ends, or on Ctrl-C,
    all of them are stopped (within 10 s). Their output goes to the terminal, each line
    named by its process, while ``echo`` is set; to ``log_dir/<name>.log`` if given."""

    def __init__(self, commands: dict[str, list[str]], *, log_dir: Path | None = None) -> None:
        self.commands = commands
        self.log_dir = log_dir
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        # Replaced processes still finishing their work (a worker's running deployment).
        self.retiring: dict[str, subprocess.Popen[bytes]] = {}
        self.echo = threading.Event()
        self.echo.set()
        self.done = threading.Event()
        self._width = max(6, *(len(name) + 1 for name in commands))

    def start(self) -> None:
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGTERM, self._stop)
        for name, argv in self.commands.items():
            self.children[name] = self.spawn(name, argv)

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Their own sessions: a terminal's Ctrl-C reaches this supervisor only,
            # which then stops them in order (a worker hit directly would wait for
            # its tasks).
            start_new_session=True,
        )
        stream = child.stdout  # a pipe, as asked above
        threading.Thread(target=self._pipe, args=(name, stream), daemon=True).start()
        return child

    def signal(self, name: str, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.children[name].pid, sig)

    def retire(self, name: str, argv: list[str]) -> None:
        """Start a new ``name`` beside the old one, then let the old one finish its work
        (SIGTERM: a worker's warm shutdown ends its running task first) and end."""
        if self.done.is_set():
            return  # stopping: everything ends anyway
        old = self.children[name]
        self.children[name] = self.spawn(name, argv)
        with contextlib.suppress(ProcessLookupError):
            os.kill(old.pid, signal.SIGTERM)
        self.retiring[f"old {name} ({old.pid})"] = old

    def restart(self, name: str, argv: list[str] | None, grace: float = STOP_GRACE) -> None:
        """Stop ``name`` (if it runs), then start it again with ``argv`` (unless None)."""
        if self.done.is_set():
            return  # stopping: everything ends anyway
        old = self.children.get(name)  # listed while it stops: a second Ctrl-C kills it
        if old is not None:
            stop_children({name: old}, grace)
            del self.children[name]
        if argv is not None and not self.done.is_set():
            self.children[name] = self.spawn(name, argv)

    def _stop(self, *_: object) -> None:
        if self.done.is_set():  # a second Ctrl-C: no more patience
            for child in [*self.children.values(), *self.retiring.values()]:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
        self.done.set()

    def _pipe(self, name: str, stream: IO[bytes]) -> None:
        log = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log = (self.log_dir / f"{name}.log").open("a", encoding="utf-8")
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode(errors="replace").rstrip("\n")
                if log is not None:
                    log.write(line + "\n")
                    log.flush()
                if self.echo.is_set():
                    sys.stdout.write(f"{name:<{self._width}}| {line}\n")
                    sys.stdout.flush()
        finally:
            if log is not None:
                log.close()

    def run(
        self,
        settings: Settings,
        name: str = "rollhook up",
        tick: Callable[[], None] | None = None,
    ) -> int:
        """Wait for Ctrl-C or a process's end, calling ``tick`` every half second; stop
        them all; the exit code."""
        gc.freeze()  # the final collection of what is loaded would delay the exit (1-2 s)
        try:
            while not self.done.wait(0.5):
                if any(child.poll() is not None for child in self.children.values()):
                    break
                self.retiring = {n: c for n, c in self.retiring.items() if c.poll() is None}
                if tick is not None:
                    tick()
        finally:  # whatever ended the loop, no process outlives this one
            failed = [n for n, c in self.children.items() if c.poll() not in (None, 0)]
            stop_children({**self.children, **self.retiring})
        for line in end_interrupted_deployments(settings):
            print(f"{name}: {line}", flush=True)
        print(f"{name}: stopped", flush=True)
        if failed:
            print(f"{name}: {', '.join(failed)} exited with an error", file=sys.stderr)
            return 1
        return 0


def stop_children(
    children: dict[str, subprocess.Popen[bytes]], grace: float = STOP_GRACE
) -> list[str]:
    """SIGTERM each process, SIGKILL its whole process group after ``grace``.

    Web and beat stop in about a second. An idle worker too; a worker in the middle of a
    deployment would wait for it (Celery's warm shutdown), which can take minutes, so it
    is killed: the deployment stays ``running`` in the records with its journal, and the
    next start takes it over once its lease expires (see ``end_interrupted_deployments``).
    Returns the names of the processes that had to be killed.
    """
    for child in children.values():
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)  # the leader only: it stops its own
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(c.poll() is None for c in children.values()):
        time.sleep(0.1)
    killed = []
    for name, child in children.items():
        if child.poll() is None:
            killed.append(name)
            print(f"rollhook up: {name} still stopping after {grace:g} s; ending it", flush=True)
        # The group too: a worker's pool processes, the web process's records writer.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    return killed


def end_interrupted_deployments(settings: Settings) -> list[str]:
    """End what a killed worker's deployments had running; say what happens to them.

    Each deployment still ``running`` keeps its journal: the next ``rollhook up`` (its
    worker at start, or beat every 2 s) takes the target over once the lease has expired
    (``ROLLHOOK_LEASE_SECONDS``), ends any leftover child, and resumes from the journal:
    before ``start`` it runs again from the top (the old version kept serving, unless it
    was stopped, in which case it is started again first); from ``start`` on it is
    applied again and gated, and rolled back if that fails.
    """
    lines = []
    try:
        targets = load_targets(settings.config)
        engine = make_engine(settings.records_url())
    except Exception:  # noqa: BLE001 - stopping must not fail on a bad config
        return []
    try:
        with engine.connect() as conn:
            running = [r for name in targets for r in deployments.running(conn, name)]
    except Exception:  # noqa: BLE001 - nor on a records database that is gone
        running = []
    finally:
        engine.dispose()
    for record in running:
        for child in record.children or []:
            end_group(child, grace=1.0)
        step = next((s["name"] for s in reversed(record.steps or [])), "start")
        lines.append(
            f"deployment {record.id} of {record.target} was interrupted at {step!r}; "
            f"the next start finishes it or rolls it back (within "
            f"{settings.lease_seconds:g} s of its lease)"
        )
    return lines
