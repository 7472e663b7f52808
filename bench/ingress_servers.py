"""The two servers bench/ingress.py compares, each started and stopped by the bench.

rollhook runs as in production: the Procfile's web command, Redis as broker, SQLite
records (the default). adnanh/webhook checks the same HMAC and runs /bin/true.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from rollhook.broker import HOUSEKEEPING_QUEUE
from tests.harness.ports import free_port
from tests.harness.process import Daemon

REPO = Path(__file__).resolve().parent.parent
PAYLOAD = Path("/work/shared/payloads/github-push.json")
APP_FACTORY = "service.app:create_app"

# The target the payload matches: its repository (Codertocat/Hello-World) and branch.
TARGETS_YAML = """\
targets:
  hello:
    repo: https://github.com/Codertocat/Hello-World.git
    branch: master
    project: hello
    service: web
"""


def procfile_command(name: str) -> str:
    for line in (REPO / "Procfile").read_text().splitlines():
        key, sep, command = line.partition(":")
        if sep and key.strip() == name:
            return command.strip()
    raise RuntimeError(f"the Procfile has no {name} process")


def _pid(daemon: Daemon) -> int:
    if daemon.pid is None:
        raise RuntimeError(f"{daemon.name} is not running")
    return daemon.pid


def wait_until_answering(daemon: Daemon, url: str, timeout: float = 60.0) -> None:
    def answers() -> bool:
        with httpx.Client(timeout=1) as client:
            client.get(url)
        return True

    daemon.wait_until(answers, f"an answer from {url}", timeout=timeout)


class Rollhook:
    """The Procfile's web line, run by a shell as a Procfile runner would.

    ``factory`` swaps the app for another (bench/ingress_ceiling.py) on the same line.
    """

    ok = 202

    def __init__(
        self,
        name: str,
        root: Path,
        redis_url: str,
        secret: str,
        factory: str | None = None,
        *,
        workers: int = 1,
    ) -> None:
        self.name = name
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks/github"
        config = root / "rollhook.yml"
        root.mkdir(parents=True, exist_ok=True)
        config.write_text(TARGETS_YAML)
        self.data_dir = root / "data"
        bin_dir = str(Path(sys.executable).parent)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLHOOK_")}
        env |= {
            "PATH": f"{bin_dir}:{env.get('PATH', '')}",
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "ROLLHOOK_CONFIG": str(config),
            "ROLLHOOK_DATA_DIR": str(self.data_dir),
            "ROLLHOOK_GITHUB_SECRET": secret,
            "ROLLHOOK_REDIS_URL": redis_url,
            "WEB_CONCURRENCY": str(workers),  # uvicorn's --workers, the Procfile line unchanged
        }
        self.command = procfile_command("web")
        if factory is not None:
            self.command = self.command.replace(APP_FACTORY, factory)
        self.daemon = Daemon(
            "rollhook-web",
            ["bash", "-c", f"exec {self.command}"],
            root / "web.log",
            env=env,
            cwd=REPO,
        )

    @property
    def pid(self) -> int:
        return _pid(self.daemon)

    def start(self) -> None:
        self.daemon.start()
        wait_until_answering(self.daemon, f"http://127.0.0.1:{self.port}/healthz")

    def stop(self) -> None:
        self.daemon.stop(timeout=30)

    def records(self) -> Records:
        path = self.data_dir / "records.sqlite"
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as conn:
            events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
            jobs, dispatched = conn.execute(
                "SELECT count(*), count(dispatched_at) FROM jobs"
            ).fetchone()
        conn.close()
        return Records(events, jobs, dispatched)


@dataclass(frozen=True)
class Records:
    events: int
    jobs: int
    dispatched: int


def queued_in_redis(url: str) -> tuple[int, int]:
    """(messages, jobs) in the queue the web process publishes jobs to (process_jobs goes
    to housekeeping, which every worker takes), read as a worker would receive them."""
    messages = jobs = 0
    with redis.Redis.from_url(url) as client:
        for raw in client.lrange(HOUSEKEEPING_QUEUE, 0, -1):
            messages += 1
            args = json.loads(base64.b64decode(json.loads(raw)["body"]))[0]
            batch = args[0]
            jobs += len(batch) if isinstance(batch, list) else 1
    return messages, jobs


class Webhook:
    """adnanh/webhook: the same HMAC rule on X-Hub-Signature-256, then /bin/true."""

    name = "webhook"
    ok = 200

    def __init__(self, root: Path, secret: str) -> None:
        binary = shutil.which("webhook")
        if binary is None:
            raise RuntimeError("webhook is missing: apt-get install webhook")
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks/github"
        hooks = [
            {
                "id": "github",
                "execute-command": "/bin/true",
                "command-working-directory": str(root),
                "http-methods": ["POST"],
                # Without this a failed rule still answers 200; 401 shows the check happen.
                "trigger-rule-mismatch-http-response-code": 401,
                "trigger-rule": {
                    "match": {
                        "type": "payload-hmac-sha256",
                        "secret": secret,
                        "parameter": {"source": "header", "name": "X-Hub-Signature-256"},
                    }
                },
            }
        ]
        (root / "hooks.json").write_text(json.dumps(hooks, indent=2))
        argv = [binary, "-hooks", str(root / "hooks.json"), "-ip", "127.0.0.1"]
        argv += ["-port", str(self.port)]
        self.daemon = Daemon("webhook", argv, root / "webhook.log", cwd=root)

    @property
    def pid(self) -> int:
        return _pid(self.daemon)

    def start(self) -> None:
        self.daemon.start()
        wait_until_answering(self.daemon, f"http://127.0.0.1:{self.port}/")

    def stop(self) -> None:
        self.daemon.stop()

    @staticmethod
    def version() -> str:
        done = subprocess.run(["webhook", "-version"], capture_output=True, text=True, check=False)
        return done.stdout.strip() or "webhook"


def wait_for(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def tree_cpu(pgid: int) -> float:
    """CPU seconds of a server's process group, reaped children included."""
    total = 0
    for pid in subprocess.run(
        ["pgrep", "-g", str(pgid)], capture_output=True, text=True, check=False
    ).stdout.split():
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


def settle(pgid: int, timeout: float = 60.0) -> float:
    """Wait until a server stops working after its last answer; returns how long it took.

    adnanh/webhook answers before it runs its command, so after a run it keeps running
    the commands it owes (on both cores); rollhook's writer hands the last jobs to Redis.
    Neither may eat into the next server's round.
    """
    started = time.monotonic()
    before = tree_cpu(pgid)
    while time.monotonic() - started < timeout:
        time.sleep(0.5)
        now = tree_cpu(pgid)
        if now - before < 0.02:  # under 4% of a core for half a second: idle
            return time.monotonic() - started - 0.5
        before = now
    return timeout


def commit_sizes(port: int) -> tuple[float, float]:
    """(commits, events) so far, from rollhook's /metrics: how well requests share commits."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("rollhook_commit_events_count", "rollhook_commit_events_sum"):
            values[name] = float(value)
    return values.get("rollhook_commit_events_count", 0.0), values.get(
        "rollhook_commit_events_sum", 0.0
    )
