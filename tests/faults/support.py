"""What the fault suite shares: a target wired for faults, a worker process to SIGKILL at a
point seen from outside, recovery as beat and the next worker do it, and the checks that
recovery was right.

A killed worker is a real process (``tests/faults/worker.py``) killed with SIGKILL, never
told: the kill comes when the test sees the moment it wants, in the records (a step turning
``running``, a child process recorded), on the host (a file the stand-in writes, a staged
restore appearing) or on the app's port. Recovery is what production does: beat's check
(``targets_needing_a_worker``) names the target once the dead worker's lease expired, and
``run_target`` adopts the deployment.

The checks, after recovery (``check_recovered``): the record is final; what it says is what
serves (succeeded: the new version, and the target's current deployment is this one;
anything else: the old version, still current); the running container carries the current
deployment's label; the storage's schema is the serving version's; the data written before
the deployment is all there (the stand-in's database only grows, so what it held before
is a prefix of what it holds now), and after a rollback it is the backup's, the new
version's migration undone; no staged restore copy or rollhook file is left in the live
tree (set-aside copies next to it are kept by design, until prune); the lease is free.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import docker
from sqlalchemy import Engine

from rollhook.records.deployments import DeploymentRecord
from rollhook.records.schema import TERMINAL_STATUSES
from tests.faults.worker import write_spec
from tests.harness import infra_files
from tests.harness.tcpproxy import TcpProxy
from tests.workers.deployer import Deployer
from workers.backup.restore import ASIDE, STAGED
from workers.dispatcher import targets_needing_a_worker
from workers.failpoints import ENV
from workers.runner import run_target

ROOT = Path(__file__).resolve().parents[2]
LEASE = 3.0
# Schema versions of the stand-in images (tests/harness/standin.py DEFAULT_SET).
SCHEMA = {"1.0.0": 1, "2.0.0": 2, "2.0.0-slow": 2, "3.0.0-never-healthy": 3}


class FaultTarget(Deployer):
    """A deployer whose images come through a proxy in front of the registry (to slow it or
    take it away), whose compose files take run-time knobs for the stand-in, and whose
    worker can run as a process of its own."""

    def __init__(
        self, root: Path, records: Engine, *, standin: Any, proxy: TcpProxy, **options: Any
    ) -> None:
        options.setdefault("lease_seconds", LEASE)
        super().__init__(root, records, standin=standin, registry_host=proxy.host, **options)
        self.proxy = proxy
        self.workers: list[WorkerProcess] = []

    def commit(self, tag: str, message: str = "deploy", **environment: str | None) -> str:  # type: ignore[override]
        """Commit ``tag``'s image (through the proxy) with stand-in knobs as environment."""
        image = self.standin.ref(tag, registry_host=self.proxy.host)
        env = {k: v for k, v in environment.items() if v is not None}
        sha: str = self.repo.commit(infra_files(image, self.port, environment=env), message)
        return sha

    def worker(self, *failpoints: str) -> WorkerProcess:
        """A worker process; it stops itself at each of ``failpoints`` (workers/failpoints)."""
        process = WorkerProcess(self, failpoints)
        self.workers.append(process)
        return process

    def step(self, deployment_id: str) -> dict[str, Any] | None:
        """The step the journal shows running now, if any."""
        steps = self.record(deployment_id).steps or []
        return steps[-1] if steps and steps[-1]["outcome"] == "running" else None

    def running(self, deployment_id: str, name: str) -> bool:
        step = self.step(deployment_id)
        return step is not None and step["name"] == name

    def children_since(self, deployment_id: str, step: dict[str, Any], what: str) -> int:
        """Child processes (``git``, ``compose``) recorded since ``step`` began."""
        children = self.record(deployment_id).children or []
        return sum(1 for c in children if c["what"] == what and c["at"] >= step["started_at"])

    def database(self) -> bytes:
        return (self.storage / "anythingllm.db").read_bytes()

    def gated_labels(self) -> dict[str, str] | None:
        """The labels of the running container of the gated service, or None."""
        with closing(docker.DockerClient(base_url=self.docker_host, timeout=60)) as client:
            for container in client.containers.list(
                filters={"label": f"com.docker.compose.project={self.target.project}"}
            ):
                labels: dict[str, str] = container.labels
                if labels.get("com.docker.compose.service") == self.target.service:
                    return labels
        return None

    def stop_workers(self) -> None:
        for process in self.workers:
            process.kill()


class WorkerProcess:
    """``run_target`` once, in a process of its own (``python -m tests.faults.worker``),
    started at once and run by :meth:`go`."""

    def __init__(self, target: FaultTarget, failpoints: tuple[str, ...] = ()) -> None:
        spec = target.root / f"worker-{uuid.uuid4().hex[:8]}.json"
        write_spec(spec, target.ctx, target.target)
        self.log = spec.with_suffix(".log")
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.faults.worker", str(spec)],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=os.environ | {ENV: ",".join(failpoints)},
            )

    def go(self) -> None:
        """Run the target now (the process started early, its imports done meanwhile)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.close()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stopped(self) -> bool:
        """Stopped by a signal: it reached an armed failpoint."""
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except FileNotFoundError:
            return False
        return stat.rpartition(")")[2].split()[0] in ("T", "t")

    def kill(self) -> None:
        """SIGKILL the worker alone: its children (compose, git) lead groups of their own
        and live on, as they do when a real worker dies."""
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        if self.proc.stdin is not None:
            self.proc.stdin.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def kill_when(
    target: FaultTarget,
    worker: WorkerProcess,
    deployment_id: str,
    condition: Callable[[], bool],
    *,
    step: str,
    timeout: float = 90.0,
) -> float:
    """SIGKILL ``worker`` as soon as ``condition`` holds; it must be inside ``step`` then.

    Returns the moment of the kill (monotonic)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert worker.alive(), f"the worker ended before the kill:\n{worker.output()}"
        assert time.monotonic() < deadline, (
            f"never saw the moment to kill in {step}; journal: "
            f"{[(s['name'], s['outcome']) for s in target.record(deployment_id).steps]}"
        )
        time.sleep(0.01)
    worker.kill()
    killed_at = time.monotonic()
    record = target.record(deployment_id)
    assert record.status == "running"
    last = record.steps[-1]
    assert (last["name"], last["outcome"]) == (step, "running"), (
        f"killed outside {step}: {[(s['name'], s['outcome']) for s in record.steps]}"
    )
    return killed_at


def recover(target: FaultTarget, deployment_id: str, killed_at: float) -> DeploymentRecord:
    """Beat's check until it finds the dead worker's target (within lease + a few seconds),
    then the next worker's ``run_target``; the deployment must be final after it."""
    beat_deadline = killed_at + LEASE + 5
    while target.name not in targets_needing_a_worker(target.ctx):
        assert time.monotonic() < beat_deadline, "beat found no orphaned work in lease + 5 s"
        time.sleep(0.2)
    run_target(target.ctx, target.name)
    record = target.record(deployment_id)
    assert record.status in TERMINAL_STATUSES, record.log
    return record


def check_recovered(
    target: FaultTarget,
    record: DeploymentRecord,
    *,
    old: str,
    new: str,
    before: bytes,
    allowed: set[str],
) -> str:
    """Everything recovery promises (see the module's docstring); returns what serves."""
    assert record.status in allowed, f"{record.status}: {record.reason}\n{record.log}"
    serving = wait_until(target.app_version, "the app to answer", timeout=30)
    state = target.state()
    assert state.lease_owner is None
    if record.status == "succeeded":
        assert serving == new, record.log
        assert state.current_deployment_id == record.id
    else:
        assert serving == old, f"{record.status}: {record.reason}; serving {serving}"
        assert state.current_deployment_id == record.previous_deployment_id
        assert record.reason and "ROLLBACK FAILED" not in record.reason, record.log
    labels = target.gated_labels()
    assert labels is not None and labels["rollhook.deployment"] == state.current_deployment_id
    assert target.schema() == SCHEMA[serving]
    now = target.database()
    assert now.startswith(before), "data written before the deployment is gone"
    if record.status == "rolled_back":
        assert record.backup_id is not None
        [backup_db] = (target.dirs.backups / record.backup_id).glob("data/*/anythingllm.db")
        assert now.startswith(backup_db.read_bytes()), "the data is not the backup's"
        assert f"-> {SCHEMA[new]} by {new}".encode() not in now, "the migration was not undone"
    check_no_leftovers(target)
    return serving


def check_no_leftovers(target: FaultTarget) -> None:
    """No staged restore copy next to the live data, nothing of rollhook's inside it."""
    work = target.dirs.work
    staged = [p.name for p in work.iterdir() if STAGED in p.name]
    assert not staged, f"half-restored: {staged}"
    inside = [
        str(Path(root, name).relative_to(target.storage))
        for root, dirs, files in os.walk(target.storage)
        for name in dirs + files
        if ".rollhook-" in name
    ]
    assert not inside, f"rollhook's files in the live data: {inside}"
    asides = [p.name for p in work.iterdir() if ASIDE in p.name]
    for name in asides:  # kept for forensics until prune, only where a restore swapped
        assert name.startswith(("storage", ".env")), name
