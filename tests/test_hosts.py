"""Several hosts, as an operator runs them: one web process and beat, Redis and
PostgreSQL, and a worker on each of two Docker hosts (two private engines), started with
``rollhook worker --host a`` / ``--host b``.

Each target deploys only on its own host's engine; with host b's worker stopped, b's
target waits (``waiting_for_host``, its deployment still queued) while a's deploys, and
runs when b's worker is back; a worker of b SIGKILLed mid-deployment is recovered by a
worker of b, never by a's (which is alive all along).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from rollhook.records.schema import TERMINAL_STATUSES
from tests.harness.engine import PrivateEngine
from tests.stack import Stack, running_stack
from tests.test_end_to_end import Infra, queued_id

pytestmark = pytest.mark.engine

LEASE = "6"  # seconds: a dead worker's deployment is recoverable this soon


@pytest.fixture(scope="module")
def engine_b(harness_root: Path, harness_logs: Path) -> Iterator[PrivateEngine]:
    """A second private dockerd: host b's engine (host a's is the session's)."""
    logs = harness_logs / "engine-b"
    logs.mkdir(exist_ok=True)
    engine = PrivateEngine(harness_root / "engine-b", logs)
    try:
        engine.start()
        yield engine
    finally:
        engine.stop()


def projects_on(engine_host: str) -> set[str]:
    with closing(docker.DockerClient(base_url=engine_host, timeout=30)) as client:
        return {
            c.labels.get("com.docker.compose.project", "") for c in client.containers.list(all=True)
        }


def _target(infra: Infra, host: str) -> dict[str, Any]:
    target: dict[str, Any] = yaml.safe_load(infra.config())["targets"]["llm"]
    # Webhooks only: a poll would deploy the first commit before the test's push does.
    return {**target, "host": host, "sync": {"interval": 0}}


def _worker(stack: Stack, host: str, engine: str) -> None:
    env = {"DOCKER_HOST": engine, "ROLLHOOK_DATA_DIR": str(stack.root / f"host-{host}")}
    stack.start("worker", "--host", host, env=env, as_name=f"worker-{host}")


def ran(stack: Stack, worker: str, target: str) -> list[str]:
    """The deployments of ``target`` whose steps this worker's log shows it running."""
    marker = f"target={target} deployment="
    return [
        line.split(marker, 1)[1].split()[0]
        for line in stack.log(worker).splitlines()
        if marker in line
    ]


def _status(stack: Stack, target: str) -> str:
    return str(stack.api.get(f"/targets/{target}").json()["sync"]["status"])


def _hosts(stack: Stack) -> dict[str, str]:
    return {h["name"]: h["state"] for h in stack.api.get("/hosts").json()["hosts"]}


def test_each_targets_work_runs_on_its_own_host_only(  # noqa: PLR0917 (fixtures)
    tmp_path: Path,
    git_server: Any,
    standin: Any,
    registry: Any,
    docker_host: str,
    engine_b: PrivateEngine,
    redis_url: str,
    postgres_server: Any,
) -> None:
    web = Infra(git_server.create_repo("hosts-web"), standin, registry.host)
    db = Infra(git_server.create_repo("hosts-db"), standin, registry.host)
    on_b = _target(db, "b")
    on_b["health"]["settle"] = "8s"  # a gate long enough to be killed inside, under load
    config = yaml.safe_dump({"targets": {"web": _target(web, "a"), "db": on_b}})
    env = {
        "ROLLHOOK_REDIS_URL": redis_url.rsplit("/", 1)[0] + "/6",
        "ROLLHOOK_DATABASE_URL": postgres_server.create_database(),
        "ROLLHOOK_LEASE_SECONDS": LEASE,
        "ROLLHOOK_NOTIFY_CONSOLE": "true",
        "DOCKER_HOST": "unix:///nonexistent/docker.sock",  # web and beat need no engine
    }
    web.commit("1.0.0")
    db.commit("1.0.0")
    try:
        with running_stack(tmp_path, config, env, processes=("web", "beat")) as stack:
            _worker(stack, "a", docker_host)
            _worker(stack, "b", engine_b.host)
            stack.wait_for(lambda: _hosts(stack) == {"a": "up", "b": "up"}, 60, "both hosts up")

            # 1. Each target deploys on its own host's engine, and only there.
            first_web = queued_id(stack.github_push(web.commit("1.0.0", "w1", n="1"), "w-1"))
            first_db = queued_id(stack.github_push(db.commit("1.0.0", "d1", n="1"), "d-1"))
            [w1] = stack.wait_final(first_web)
            [d1] = stack.wait_final(first_db)
            assert (w1["status"], d1["status"]) == ("succeeded", "succeeded"), stack.all_logs()
            assert web.project in projects_on(docker_host)
            assert web.project not in projects_on(engine_b.host)
            assert db.project in projects_on(engine_b.host)
            assert db.project not in projects_on(docker_host)
            # Any worker may record a job ("queued as ..."); only the host's runs it.
            assert ran(stack, "worker-a", "db") == [] and ran(stack, "worker-b", "web") == []
            assert d1["id"] in ran(stack, "worker-b", "db")

            # 2. Host b's worker stops: b's target waits, a's goes on.
            stack.kill("worker-b", signal.SIGTERM)
            stack.wait_for(lambda: _hosts(stack).get("b") == "down", 60, "host b down")
            waiting = queued_id(stack.github_push(db.commit("2.0.0", "d2"), "d-2"))
            moved = queued_id(stack.github_push(web.commit("2.0.0", "w2"), "w-2"))
            [w2] = stack.wait_final(moved)
            assert w2["status"] == "succeeded" and web.app_version() == "2.0.0"
            stack.wait_for(lambda: _status(stack, "db") == "waiting_for_host", 30, "db waits")
            [job] = stack.api.get(f"/events/{waiting}").json()["jobs"]
            assert job["deployment_id"]  # recorded by any worker, run by none
            assert stack.deployment(job["deployment_id"])["status"] == "queued"
            status = subprocess.run(
                [sys.executable, "-m", "cli.main", "status"],
                env={**stack.env, "ROLLHOOK_URL": stack.url},
                capture_output=True, text=True, check=False, timeout=60,
            )  # fmt: skip
            assert "waiting for host b" in status.stdout, status.stdout + status.stderr
            told = "notification: host b is DOWN"
            stack.wait_for(lambda: told in stack.log("worker-a"), 30, "host b told down")
            assert db.app_version() == "1.0.0"  # nothing ran it elsewhere

            # 3. b's worker is back: what waited runs there.
            _worker(stack, "b", engine_b.host)
            [d2] = stack.wait_final(waiting)
            assert d2["status"] == "succeeded" and db.app_version() == "2.0.0"
            stack.wait_for(lambda: "notification: host b is back" in stack.all_logs(), 30, "back")
            assert db.project not in projects_on(docker_host)

            # 4. b's worker SIGKILLed mid-deployment: only a worker of b recovers it.
            slow = queued_id(stack.github_push(db.commit("2.0.0-slow", "d3"), "d-3"))

            def deploying() -> str | None:
                jobs = stack.api.get(f"/events/{slow}").json()["jobs"]
                ids = [j["deployment_id"] for j in jobs if j.get("deployment_id")]
                if not ids:
                    return None
                return ids[0] if stack.deployment(ids[0])["status"] == "running" else None

            killed = stack.wait_for(deploying, 120, "the slow deployment running")
            stack.kill("worker-b")  # SIGKILL, the whole process group
            time.sleep(float(LEASE) * 3)  # beat's kicks go to b's queue; a must not take it
            assert stack.deployment(killed)["status"] == "running"
            assert ran(stack, "worker-a", "db") == []
            assert db.project not in projects_on(docker_host)
            _worker(stack, "b", engine_b.host)
            recovered = stack.wait_for(
                lambda: (r := stack.deployment(killed))["status"] in TERMINAL_STATUSES and r,
                180,
                "recovery by host b's worker",
            )
            assert recovered["status"] in {"succeeded", "rolled_back"}, recovered
            assert killed in ran(stack, "worker-b", "db") and ran(stack, "worker-a", "db") == []
            assert db.project not in projects_on(docker_host)
    finally:
        web.down(docker_host)
        db.down(engine_b.host)
