"""``rollhook up | web | worker | beat``: the three processes, alone or supervised together."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from typing import IO

from rollhook.datadir import prepare_data_dir
from rollhook.records.db import make_engine, migrate
from rollhook.settings import Settings, load_settings
from rollhook.targets import load_targets

QUEUES = "deploy,notify,housekeeping,backup"


def _argv(command: str, settings: Settings, host: str, port: int) -> list[str]:
    python = sys.executable
    if command == "web":
        return [
            python,
            "-m",
            "uvicorn",
            "--factory",
            "service.app:create_app",
            "--host",
            host,
            "--port",
            str(port),
            "--no-server-header",
            # Whose X-Forwarded-For to believe is ROLLHOOK_TRUSTED_PROXIES' call alone.
            "--no-proxy-headers",
            # Bounds what slow clients can hold (each may buffer up to the body cap).
            "--limit-concurrency",
            "256",
        ]
    if command == "worker":
        return [
            python,
            "-m",
            "celery",
            "-A",
            "workers.app",
            "worker",
            "-Q",
            QUEUES,
            "--loglevel",
            "INFO",
            "--concurrency",
            str(settings.worker_concurrency),
        ]
    return [python, "-m", "celery", "-A", "workers.app", "beat", "--loglevel", "INFO"]


def _prepare() -> Settings:
    """Fail fast, with one line, before any process starts; migrate once."""
    settings = load_settings()
    load_targets(settings.config)
    prepare_data_dir(settings.data_dir)
    engine = make_engine(settings.records_url())
    try:
        migrate(engine, settings.data_dir)
    finally:
        engine.dispose()
    return settings


def run_process(args: argparse.Namespace) -> int:
    settings = _prepare()
    host = getattr(args, "host", "127.0.0.1")
    port = getattr(args, "port", None) or settings.port
    if args.command != "up":
        argv = _argv(args.command, settings, host, port)
        os.execv(argv[0], argv)
    return _supervise(settings, host, port)


def _pipe(name: str, stream: IO[bytes]) -> None:
    width = 6
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace").rstrip("\n")
        sys.stdout.write(f"{name:<{width}}| {line}\n")
        sys.stdout.flush()


def _supervise(settings: Settings, host: str, port: int) -> int:
    """Run web, worker and beat; when one ends, stop the others (like a Procfile runner)."""
    children: dict[str, subprocess.Popen[bytes]] = {}
    done = threading.Event()
    for name in ("web", "worker", "beat"):
        child = subprocess.Popen(
            _argv(name, settings, host, port),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        children[name] = child
        threading.Thread(target=_pipe, args=(name, child.stdout), daemon=True).start()

    def stop(*_: object) -> None:
        done.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print(f"rollhook up: web on http://{host}:{port}, worker and beat started", flush=True)
    while not done.wait(0.5):
        if any(child.poll() is not None for child in children.values()):
            break
    failed = [n for n, c in children.items() if c.poll() not in (None, 0)]
    for child in children.values():
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
    for name, child in children.items():
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            print(f"rollhook up: {name} did not stop in 60s; killing it", flush=True)
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    if failed:
        print(f"rollhook up: {', '.join(failed)} exited with an error", file=sys.stderr)
        return 1
    return 0
