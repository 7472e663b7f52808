"""The off-host snapshot benchmark with the app running (``bench/offsite.py --app``).

A whole target on private servers (a Docker engine, a registry, a git server: the test
harness's, started by ``bench/rollout_setup.start_servers`` as for ``bench/rollout.py``)
with the anything-llm stand-in, its storage filled, and ``final_pass: stop``: a prober
asks /api/ping 20 times a second while ``workers/offsite/snapshots.take`` runs, so the
downtime is what a user would see (the service's stop, the final pass, its start and
boot), not an estimate. Then the latest snapshot is restored with ``restore
--from-remote``'s own code (a backup of the current data first, the swap with the app
stopped, the health gate).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.rollout_setup import start_servers
from rollhook.records.db import make_engine, migrate
from tests.harness.sshd import SftpServer
from tests.harness.standin import StandInImages
from tests.workers.deployer import Deployer
from workers.offsite import snapshots
from workers.offsite.restore import restore_from_remote


@dataclass
class Prober:
    """GET /api/ping every 50 ms; the longest stretch without a 200 is the downtime."""

    url: str
    down: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        since: float | None = None
        with httpx.Client(timeout=0.5) as client:
            while not self._stop.is_set():
                now = time.monotonic()
                try:
                    ok = client.get(self.url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                if not ok and since is None:
                    since = now
                elif ok and since is not None:
                    self.down.append(now - since)
                    since = None
                time.sleep(0.05)
        if since is not None:
            self.down.append(time.monotonic() - since)

    @contextmanager
    def watching(self) -> Iterator[Prober]:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()

    @property
    def longest(self) -> float:
        return max(self.down, default=0.0)


def seed(storage: Path, size: int, rng: random.Random) -> list[Path]:
    made = []
    written = n = 0
    while written < size:
        length = min(size - written, rng.randint(64 << 10, 1 << 20))
        folder = storage / "documents" / f"{n % 16:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"doc-{n:05d}.bin"
        path.write_bytes(rng.randbytes(length))
        made.append(path)
        written += length
        n += 1
    return made


def rewrite(files: list[Path], size: int, rng: random.Random) -> int:
    changed = 0
    for path in rng.sample(files, len(files)):
        length = path.stat().st_size
        if changed + length > size // 100:
            continue
        path.write_bytes(rng.randbytes(length))
        changed += length
    return changed


def with_app(sizes: list[tuple[str, int]], tell: Callable[[str], None]) -> list[str]:
    rows = [
        "| data | snapshot | staging (both passes) | downtime seen by a prober | upload | total |",
        "|---|---|---|---|---|---|",
    ]
    restores = [
        "| data | restore from the remote snapshot | downtime seen by a prober |",
        "|---|---|---|",
    ]
    with ExitStack() as stack:
        infra = start_servers(stack)
        standin = StandInImages(infra.engine.host, infra.registry.host)
        stack.callback(standin.close)
        standin.build_default_set()
        server = SftpServer(infra.root / "sshd", infra.root / "logs")
        stack.callback(server.stop)
        server.start()
        for n, (label, size) in enumerate(sizes):
            root = infra.root / f"host-{n}"
            root.mkdir()
            records = make_engine(f"sqlite:///{root / 'records.sqlite'}")
            migrate(records, root)
            password = root / "restic-password"
            password.write_text("bench-password\n")
            password.chmod(0o600)
            remote = {
                "repository": server.repository(root / "repository"),
                "password_file": str(password),
                "options": server.options(),
                "final_pass": "stop",
            }
            deployer = Deployer(
                root,
                records,
                repo=infra.git.create_repo(f"infra-{n}"),
                docker_host=infra.engine.host,
                standin=standin,
                registry_host=infra.registry.host,
                backup={"keep": 3, "remote": remote},
                health={"timeout": 120},
            )
            stack.callback(deployer.down)
            deployer.commit("1.0.0")
            record = deployer.deploy()
            if record.status != "succeeded":
                raise RuntimeError(f"the first deployment ended {record.status}: {record.reason}")
            rng = random.Random(size)
            tell(f"{label} with the app: writing the data...")
            files = seed(deployer.storage, size, rng)
            url = f"http://127.0.0.1:{deployer.port}/api/ping"
            for which in ("first", "second, 1% changed"):
                if which != "first":
                    rewrite(files, size, rng)
                tell(f"{label} with the app: {which} snapshot...")
                with Prober(url).watching() as probe:
                    began = time.monotonic()
                    result = snapshots.take(deployer.ctx, deployer.target)
                    total = time.monotonic() - began
                if result.status != "taken":
                    raise RuntimeError(f"snapshot {result.status}: {result.detail}")
                rows.append(
                    f"| {label} | {which} | {result.staging_seconds:.2f} s "
                    f"| {probe.longest:.2f} s | {result.upload_seconds:.2f} s | {total:.2f} s |"
                )
            tell(f"{label} with the app: restoring the latest snapshot...")
            with Prober(url).watching() as probe:
                began = time.monotonic()
                restored = restore_from_remote(
                    deployer.ctx, deployer.target, "latest", lambda _: None
                )
                took = time.monotonic() - began
            if restored.status != "succeeded":
                raise RuntimeError(f"restore {restored.status}: {restored.reason}")
            restores.append(f"| {label} | {took:.2f} s | {probe.longest:.2f} s |")
    return [*rows, "", *restores]
