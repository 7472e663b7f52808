"""rollhook's dependencies failing in the middle of a deployment.

The Docker engine restarted during ``start`` and during ``gate`` (an engine of the module's
own: a restart stops every container on it); the registry going away during the pull (the
app must not have been stopped); the disk filling up during the backup (the data directory
on a small tmpfs: the deployment fails before ``stop``, nothing lost); Redis down while
events arrive and while a deployment runs (the whole stack, on a Redis of the test's own);
the records database locked (SQLite) or read-only (PostgreSQL, as after a failover) for a
while; the git server down during ``sync``; the old version killed while a rollback gates it.

The worker runs in a thread of the test (nothing kills it here); when a fault left the
deployment to recovery, beat's check and the next worker finish it, as in production.
Afterwards ``check_recovered`` holds (the record final and true, the data kept).
"""

from __future__ import annotations

import contextlib
import gc
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import psycopg
import pytest
import yaml

from rollhook.records.deployments import DeploymentRecord
from rollhook.records.schema import TERMINAL_STATUSES
from tests.faults.support import (
    FaultTarget,
    check_no_leftovers,
    check_recovered,
    recover,
    wait_until,
)
from tests.harness import INFRA_PATH
from tests.harness.engine import PrivateEngine
from tests.harness.gitserver import GitServer
from tests.harness.postgres import PostgresServer
from tests.harness.redis import RedisServer
from tests.stack import running_stack

pytestmark = [
    pytest.mark.fault,
    # docker-py leaves a unix socket unclosed when the engine refuses a connection (a
    # restart in progress, a dependency cut); each test collects its own at its end (the
    # fixture below), so none is found later, in another test's phase.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]


@pytest.fixture(autouse=True)
def _collect_leaked_sockets() -> Iterator[None]:
    yield
    gc.collect()


class Background:
    """``run_target`` in a thread, as a worker that nothing kills."""

    def __init__(self, target: FaultTarget) -> None:
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(target,), daemon=True)
        self.thread.start()

    def _run(self, target: FaultTarget) -> None:
        try:
            target.run()
        except BaseException as exc:  # shown by the test, never swallowed
            self.error = exc

    def join(self, timeout: float = 300) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the worker is still running"


def settle(target: FaultTarget, deployment_id: str, worker: Background) -> DeploymentRecord:
    """The deployment's final record: the worker's own, or recovery's when the fault left
    it running (the worker lost its lease or its records)."""
    worker.join()
    record = target.record(deployment_id)
    if record.status not in TERMINAL_STATUSES:
        record = recover(target, deployment_id, time.monotonic())
    return record


def running(target: FaultTarget, deployment_id: str, name: str, child: str | None = None) -> bool:
    step = target.step(deployment_id)
    if step is None or step["name"] != name:
        return False
    return child is None or target.children_since(deployment_id, step, child) > 0


def container(target: FaultTarget) -> tuple[str, str]:
    """The gated service's container: its id and when it started."""
    with contextlib.closing(docker.DockerClient(base_url=target.docker_host)) as client:
        [found] = [
            c
            for c in client.containers.list(all=True)
            if c.labels.get("com.docker.compose.project") == target.target.project
        ]
        return found.id, found.attrs["State"]["StartedAt"]


# -- the Docker engine --------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_engine(
    harness_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrivateEngine]:
    """A Docker engine of this module's own: restarting it stops every container on it."""
    engine = PrivateEngine(harness_root / "engine-faults", tmp_path_factory.mktemp("engine"))
    try:
        engine.start()
        yield engine
    finally:
        engine.stop()


# docker-py's unix socket connection (docker/transport/unixconn.py) leaves the socket of a
# connect that failed unclosed; while the engine restarts every client call does that.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)
@pytest.mark.parametrize("step", ["start", "gate"])
def test_the_engine_restarted_mid_deployment(
    step: str, make_target: Callable[..., FaultTarget], own_engine: PrivateEngine
) -> None:
    new = "2.0.0-slow" if step == "gate" else "2.0.0"  # slow: the gate is still waiting
    target = make_target(docker_host=own_engine.host)
    target.commit("1.0.0")
    assert target.deploy().status == "succeeded"
    target.commit(new)
    before = target.database()
    deployment_id = target.queue()
    worker = Background(target)
    child = "compose" if step == "start" else None
    wait_until(lambda: running(target, deployment_id, step, child), f"{step} to run")
    own_engine.restart()

    record = settle(target, deployment_id, worker)
    check_recovered(
        target, record, old="1.0.0", new=new, before=before, allowed={"succeeded", "rolled_back"}
    )
    gc.collect()  # those sockets go now, under this test's filter, not in the next test


def test_the_old_version_killed_while_its_rollback_gates_it_is_started_again(
    make_target: Callable[..., FaultTarget],
) -> None:
    """Killed from outside (the OOM killer, a stop still under way) just after the rollback
    started it: it served before, so it is started again rather than the app declared down."""
    target = make_target(health={"timeout": 3, "settle": 2})
    target.commit("1.0.0")
    assert target.deploy().status == "succeeded"
    target.commit("3.0.0-never-healthy")
    before = target.database()
    deployment_id = target.queue()
    worker = Background(target)
    wait_until(
        lambda: running(target, deployment_id, "rollback") and target.app_version() == "1.0.0",
        "the rollback's gate of 1.0.0",
    )
    with contextlib.closing(docker.DockerClient(base_url=target.docker_host)) as client:
        client.containers.get(container(target)[0]).kill()

    record = settle(target, deployment_id, worker)
    check_recovered(
        target,
        record,
        old="1.0.0",
        new="3.0.0-never-healthy",
        before=before,
        allowed={"rolled_back"},
    )
    assert "is not running" in record.log and "starting it again" in record.log


# -- the registry -------------------------------------------------------------------------


def test_the_registry_gone_during_the_pull_leaves_the_app_running(
    make_target: Callable[..., FaultTarget],
) -> None:
    target = make_target()
    target.commit("1.0.0")
    assert target.deploy().status == "succeeded"
    serving = container(target)
    target.commit("2.0.0")
    before = target.database()
    deployment_id = target.queue()
    target.proxy.latency = 1.0  # the pull takes seconds: room to go down in the middle
    worker = Background(target)
    base: list[int] = []

    def pulling() -> bool:
        if not running(target, deployment_id, "preflight"):
            return False
        base.append(target.proxy.chunks)
        return target.proxy.chunks > base[0]

    wait_until(pulling, "the pull to reach the registry")
    target.proxy.stop()
    try:
        record = settle(target, deployment_id, worker)
    finally:
        target.proxy.latency = 0.0
        target.proxy.start()

    assert record.status == "failed", record.log
    assert record.reason and "pull" in record.reason, record.reason
    assert "stop" not in [s["name"] for s in record.steps]
    assert container(target) == serving  # never stopped, never restarted
    check_recovered(target, record, old="1.0.0", new="2.0.0", before=before, allowed={"failed"})
    # Back up, the next request deploys.
    assert target.deploy(manual=True).status == "succeeded"
    assert target.app_version() == "2.0.0"


# -- the disk -----------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """rollhook's data directory on a tmpfs of 400 MiB (the app's storage lives there too)."""
    data = tmp_path / "data"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400m", "tmpfs", str(data)], check=True)
    try:
        yield data
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Fill the filesystem until only ``leave`` bytes are free."""
    filler = disk / "filler.bin"
    with filler.open("wb") as handle:
        chunk = b"\0" * (1 << 20)
        with contextlib.suppress(OSError):
            while (free := _free(disk)) > leave:
                handle.write(chunk[: min(len(chunk), free - leave)])
                handle.flush()
    return filler


def _free(path: Path) -> int:
    return shutil.disk_usage(path).free


def test_the_disk_full_during_the_backup_fails_before_stop(
    small_disk: Path, make_target: Callable[..., FaultTarget]
) -> None:
    target = make_target()
    assert target.dirs.data_dir == small_disk
    target.commit("1.0.0")
    assert target.deploy().status == "succeeded"
    serving = container(target)
    documents = target.storage / "documents"
    for n in range(60):  # 60 MiB to back up; the preflight check wants 256 MiB more free
        (documents / f"doc-{n:02d}.bin").write_bytes(bytes([n]) * (1 << 20))
    target.commit("2.0.0")
    before = target.database()
    deployment_id = target.queue()
    target.proxy.latency = 0.5  # the pull, after the disk check, gives time to fill the disk
    worker = Background(target)
    wait_until(lambda: running(target, deployment_id, "preflight"), "the preflight")
    # The pull talks to the registry only after the disk check passed: fill then (the
    # step's start alone comes before the check, which would then refuse the backup).
    chunks = target.proxy.chunks
    wait_until(lambda: target.proxy.chunks > chunks, "the pull, after the disk check")
    filler = fill(small_disk, leave=20 << 20)  # the backup runs out 20 MiB in
    target.proxy.latency = 0.0
    try:
        record = settle(target, deployment_id, worker)
    finally:
        filler.unlink()

    assert record.status == "failed", record.log
    backup = next(s for s in record.steps if s["name"] == "backup")
    assert backup["outcome"] == "failed" and "space" in backup["detail"].lower(), backup
    assert "stop" not in [s["name"] for s in record.steps]
    assert container(target) == serving
    check_recovered(target, record, old="1.0.0", new="2.0.0", before=before, allowed={"failed"})
    for n in range(60):
        assert (documents / f"doc-{n:02d}.bin").read_bytes() == bytes([n]) * (1 << 20)
    partials = [p.name for p in target.dirs.backups.iterdir() if p.name.endswith(".partial")]
    assert not partials, partials  # the half-written backup went with the failure
    assert target.deploy(manual=True).status == "succeeded"


# -- the git server -----------------------------------------------------------------------


def test_the_git_server_down_during_sync_leaves_the_app_running(
    make_target: Callable[..., FaultTarget], git_server: GitServer
) -> None:
    target = make_target()
    target.commit("1.0.0")
    assert target.deploy().status == "succeeded"
    serving = container(target)
    target.commit("2.0.0")
    before = target.database()
    deployment_id = target.queue()
    git_server.delay = 1.0  # the fetch's first request is in flight when the server goes
    worker = Background(target)
    try:
        wait_until(lambda: running(target, deployment_id, "sync", "git"), "the fetch")
        git_server.stop()
        record = settle(target, deployment_id, worker)
    finally:
        git_server.delay = 0.0
        git_server.start()

    assert record.status == "failed", record.log
    assert [s["name"] for s in record.steps] == ["sync"], record.steps
    assert container(target) == serving
    check_recovered(target, record, old="1.0.0", new="2.0.0", before=before, allowed={"failed"})
    assert target.deploy(manual=True).status == "succeeded"


# -- the records database -----------------------------------------------------------------


def test_the_records_locked_for_a_while_mid_deployment(
    make_target: Callable[..., FaultTarget], tmp_path: Path
) -> None:
    """Another process holds SQLite's write lock for twice the lease while the gate runs:
    the worker's journal and heartbeat wait (busy timeout), nothing is lost."""
    target = make_target()
    target.commit("1.0.0")
    assert target.deploy().status == "succeeded"
    target.commit("2.0.0-slow")
    before = target.database()
    deployment_id = target.queue()
    worker = Background(target)
    wait_until(lambda: running(target, deployment_id, "gate"), "the gate")
    lock = sqlite3.connect(tmp_path / "records.sqlite", timeout=30, isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        time.sleep(2 * target.ctx.lease_seconds)
        lock.execute("ROLLBACK")
    finally:
        lock.close()

    record = settle(target, deployment_id, worker)
    check_recovered(
        target,
        record,
        old="1.0.0",
        new="2.0.0-slow",
        before=before,
        allowed={"succeeded", "rolled_back"},
    )


@contextlib.contextmanager
def read_only(server: PostgresServer) -> Iterator[None]:
    """Every session of the cluster read-only, as a primary demoted by a failover."""

    def configure(value: str) -> None:
        with psycopg.connect(server._dsn("postgres"), autocommit=True) as admin:
            admin.execute(f"ALTER SYSTEM SET default_transaction_read_only = {value}")
            admin.execute("SELECT pg_reload_conf()")

    configure("on")
    try:
        yield
    finally:
        configure("off")


@pytest.mark.parametrize("records", ["postgresql"], indirect=True)
@pytest.mark.parametrize("step", ["stop", "gate"])
def test_the_records_read_only_for_a_while_mid_deployment(
    step: str,
    make_target: Callable[..., FaultTarget],
    postgres_server: PostgresServer,
) -> None:
    """PostgreSQL refuses every write for twice the lease while the old version drains
    (``stop``) or while the new one is gated: the worker's journal writes fail; whatever
    it then leaves, recovery finishes once the records take writes again."""
    target = make_target()
    target.commit("1.0.0", STOP_DELAY="3")
    assert target.deploy().status == "succeeded"
    new = "2.0.0-slow" if step == "gate" else "2.0.0"
    target.commit(new)
    before = target.database()
    deployment_id = target.queue()
    worker = Background(target)
    signals = target.storage / "stop-signals.log"  # 1.0.0 draining

    def moment() -> bool:
        return running(target, deployment_id, step) and (step != "stop" or signals.exists())

    wait_until(moment, f"{step} to run")
    with read_only(postgres_server):
        time.sleep(2 * target.ctx.lease_seconds)

    record = settle(target, deployment_id, worker)
    check_recovered(
        target, record, old="1.0.0", new=new, before=before, allowed={"succeeded", "rolled_back"}
    )


# -- the broker ---------------------------------------------------------------------------


def push(target: FaultTarget, tag: str, message: str) -> dict[str, Any]:
    """Commit ``tag`` and return the push GitHub would send for it."""
    head = target.commit(tag, message)
    return {
        "ref": "refs/heads/main",
        "before": "0" * 40,
        "after": head,
        "created": False,
        "deleted": False,
        "forced": False,
        "commits": [
            {
                "id": head,
                "message": message,
                "author": {"name": "Dev", "email": "dev@example.test"},
                "added": [],
                "removed": [],
                "modified": [f"{INFRA_PATH}/docker-compose.yml"],
            }
        ],
        "repository": {"full_name": "acme/faults", "clone_url": target.repo.url},
        "pusher": {"name": "dev"},
    }


def test_redis_down_while_events_arrive_and_a_deployment_runs(
    tmp_path: Path, make_target: Callable[..., FaultTarget], docker_host: str
) -> None:
    """The whole stack on a Redis of its own. Redis goes while a deployment is gated, an
    event arrives meanwhile (stored, its job waiting in the outbox), Redis comes back
    (empty): the running deployment ends, the waiting one runs once, nothing is lost."""
    redis = RedisServer(tmp_path / "redis", tmp_path / "redis-logs")
    redis.start()
    target = make_target(lease_seconds=4)
    config = {"targets": {"llm": target.target.model_dump(mode="json", exclude={"name"})}}
    env = {
        "DOCKER_HOST": docker_host,
        "ROLLHOOK_REDIS_URL": redis.url,
        "ROLLHOOK_DATABASE_URL": target.records.url.render_as_string(hide_password=False),
        "ROLLHOOK_LEASE_SECONDS": "4",
    }
    try:
        with running_stack(tmp_path, yaml.safe_dump(config), env) as stack:

            def accepted(answer: Any) -> str:
                assert answer.status_code == 202, answer.text
                return str(answer.json()["id"])

            [first] = stack.wait_final(
                accepted(stack.github_push(push(target, "1.0.0", "v1"), "r1"))
            )
            assert first["status"] == "succeeded", first["log"]
            before = target.database()

            gated = accepted(stack.github_push(push(target, "2.0.0-slow", "slow"), "r2"))
            wait_until(
                lambda: any(
                    target.running(d["id"], "gate") for d in stack.deployments("llm", limit=5)
                ),
                "the deployment's gate",
            )
            with redis.stopped():
                waiting = accepted(stack.github_push(push(target, "2.0.0", "v2"), "r3"))
                jobs = stack.api.get(f"/events/{waiting}").json()["jobs"]
                assert [j["dispatched_at"] for j in jobs] == [None]  # in the outbox
                time.sleep(3)

            [slow] = stack.wait_final(gated, timeout=180)
            [last] = stack.wait_final(waiting, timeout=180)
            assert slow["status"] == "succeeded", slow["log"]
            assert last["status"] == "succeeded", last["log"]
            jobs = [
                j for e in (gated, waiting) for j in stack.api.get(f"/events/{e}").json()["jobs"]
            ]
            assert all(j["consumed_at"] for j in jobs)
            assert len(stack.deployments("llm")) == 3  # each event processed once
            record = target.record(last["id"])
            check_recovered(
                target, record, old="2.0.0-slow", new="2.0.0", before=before, allowed={"succeeded"}
            )
    finally:
        redis.stop()
    check_no_leftovers(target)
