"""Drift on the real engine: containers stopped, removed or recreated by hand are put back
by a heal, seen within seconds through the engine's events; a target that keeps drifting
stops at its heal limit; rollhook's own deployments are never drift; prune removes what
Git no longer has."""

from __future__ import annotations

import dataclasses
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import docker
import pytest
import yaml
from sqlalchemy import select

from rollhook.broker import PROCESS_JOBS
from rollhook.jobs import Job
from rollhook.records import targets as target_records
from rollhook.records.schema import notifications
from tests.harness import INFRA_PATH, compose_file
from tests.workers.deployer import Deployer
from tests.workers.loop import Loop
from tests.workers.notify.flow import notifiers_for
from tests.workers.test_engine_events import Relay
from workers.engine import DockerEngine
from workers.healing import look
from workers.watcher import DriftWatcher

pytestmark = pytest.mark.engine
DEADLINE = 60.0  # generous: the point is that it happens, not how fast (bench/reconcile.py)


@contextmanager
def watching(deployer: Deployer) -> Iterator[DriftWatcher]:
    watcher = DriftWatcher(deployer.ctx, backoff=(0.1, 1.0))
    watcher.start()
    try:
        time.sleep(0.5)  # connected before the test acts
        yield watcher
    finally:
        watcher.stop()


def published(deployer: Deployer) -> list[Job]:
    return [
        Job.from_json(text)
        for task, args in list(deployer.sent)
        if task == PROCESS_JOBS
        for text in args[0]
    ]


def wait_for(predicate: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if found := predicate():
            return found
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def heal_queued(deployer: Deployer) -> Job:
    found: Job = wait_for(
        lambda: next((j for j in published(deployer) if j.action == "heal"), None), "a heal"
    )
    return found


def app_container(deployer: Deployer, client: docker.DockerClient) -> Any:
    [found] = client.containers.list(
        all=True,
        filters={
            "label": [
                f"com.docker.compose.project={deployer.target.project}",
                "com.docker.compose.service=anything-llm",
            ]
        },
    )
    return found


@pytest.fixture
def client(docker_host: str) -> Iterator[docker.DockerClient]:
    with closing(docker.DockerClient(base_url=docker_host, timeout=120)) as found:
        yield found


@pytest.fixture
def deployed(deployer: Deployer) -> Deployer:
    deployer.commit("1.0.0")
    first = deployer.deploy()
    assert first.status == "succeeded", first.log
    assert first.containers and set(first.containers) == {"anything-llm"}
    return deployer


@pytest.mark.parametrize("how", ["stop", "remove"])
def test_a_container_stopped_or_removed_by_hand_is_healed(
    deployed: Deployer, client: docker.DockerClient, how: str
) -> None:
    loop = Loop(deployed)
    good = deployed.state().current_deployment_id
    with watching(deployed):
        container = app_container(deployed, client)
        if how == "stop":
            container.stop(timeout=5)
        else:
            container.remove(force=True)
        heal = heal_queued(deployed)
    assert heal.trigger.source == "heal"
    state = loop.sync()
    assert [d["what"] for d in state.drift] == ["stopped" if how == "stop" else "missing"]
    assert state.drift_counts == {"stopped" if how == "stop" else "missing": 1}
    assert state.heal_count == 1 and state.heals_for == good

    loop.work()
    record = loop.latest()
    assert (record.kind, record.status) == ("heal", "succeeded"), record.log
    assert [s["name"] for s in record.steps] == ["inspect", "start", "gate"]
    assert record.requested["heal_of"] == good
    assert deployed.app_version() == "1.0.0"
    assert deployed.state().current_deployment_id == good  # a heal never changes it
    state = loop.sync()
    assert (state.drift, state.drift_since) == ([], None)
    labels = app_container(deployed, client).labels
    assert labels["rollhook.deployment"] == good  # the good deployment's override again


def test_a_container_stopped_while_rollhook_works_is_looked_at_once_it_is_done(
    deployed: Deployer, client: docker.DockerClient
) -> None:
    """Nothing is compared while the target's lease is held (rollhook's own work is never
    drift); the watcher looks again once it is free instead of leaving it to the poll."""
    loop = Loop(deployed)
    with deployed.records.begin() as conn:
        token = target_records.acquire_lease(conn, deployed.name, "someone", 60)
    assert token is not None
    with watching(deployed):
        app_container(deployed, client).stop(timeout=5)
        time.sleep(2.0)
        assert published(deployed) == [] and loop.sync().drift == []  # held: not compared
        with deployed.records.begin() as conn:
            target_records.release_lease(conn, deployed.name, token)
        heal_queued(deployed)
    assert [d["what"] for d in loop.sync().drift] == ["stopped"]


def test_drift_while_the_engine_was_out_of_reach_is_seen_when_it_is_back(
    deployed: Deployer, client: docker.DockerClient, tmp_path: Path
) -> None:
    """The watcher survives losing the engine: it reconnects and looks at every target,
    so what happened while it was away is healed too."""
    loop = Loop(deployed)
    engine_socket = urlsplit(deployed.docker_host).path
    relay = Relay(tmp_path / "relay.sock", engine_socket)
    relay.restore()
    through_relay = dataclasses.replace(deployed.ctx, docker_host=f"unix://{relay.path}")
    watcher = DriftWatcher(through_relay, backoff=(0.1, 0.5))
    watcher.start()
    try:
        time.sleep(0.5)
        relay.cut()  # the engine, as the watcher sees it, is gone
        app_container(deployed, client).stop(timeout=5)
        time.sleep(1.0)
        assert published(deployed) == []  # nobody saw it yet
        relay.restore()
        heal_queued(deployed)
    finally:
        watcher.stop()
        relay.cut()
    assert [d["what"] for d in loop.sync().drift] == ["stopped"]
    loop.work()
    assert loop.latest().status == "succeeded", loop.latest().log
    assert deployed.app_version() == "1.0.0"


def test_a_container_recreated_by_hand_with_other_settings_is_healed(
    deployed: Deployer, client: docker.DockerClient
) -> None:
    loop = Loop(deployed)
    good = deployed.state().current_deployment_id
    assert good is not None
    # Someone runs `docker compose up` by hand with rollhook's files plus a change of
    # their own: the container carries rollhook's labels but another compose config.
    with watching(deployed):
        compose_by_hand(
            deployed, "services:\n  anything-llm:\n    environment:\n      DEBUG: 'yes'\n"
        )
        heal_queued(deployed)
    assert [d["what"] for d in loop.sync().drift] == ["config"]
    assert "DEBUG=yes" in app_container(deployed, client).attrs["Config"]["Env"]
    loop.work()
    record = loop.latest()
    assert (record.kind, record.status) == ("heal", "succeeded"), record.log
    assert "DEBUG=yes" not in app_container(deployed, client).attrs["Config"]["Env"]
    assert loop.sync().drift == []


@pytest.mark.parametrize("deployer", [{"sync": {"heal_limit": "2/1h"}}], indirect=True)
def test_a_target_that_keeps_drifting_stops_at_its_heal_limit(
    deployed: Deployer, client: docker.DockerClient
) -> None:
    loop = Loop(deployed)
    deployed.ctx.notifiers = notifiers_for(notify_console=True)
    with watching(deployed):
        for _ in (1, 2):
            app_container(deployed, client).stop(timeout=5)
            heal_queued(deployed)
            loop.work()  # takes what was published
            assert loop.latest().status == "succeeded"
        app_container(deployed, client).stop(timeout=5)
        state = wait_for(lambda: (s := loop.sync()).degraded and s, "degraded")
        time.sleep(1)
    assert published(deployed) == []  # no third heal
    assert state.heal_count == 2 and "2 heals of" in (state.degraded_reason or "")
    assert deployed.app_version() is None  # left alone, stopped
    # Looking again (the next poll, another event) tells nothing new: degraded is told once.
    with DockerEngine(deployed.docker_host) as engine:
        assert look(deployed.ctx, deployed.target, engine) is not None
    assert published(deployed) == []
    told = notices(deployed)  # two heals that worked, then degraded: told once
    assert sorted(told) == ["degraded", "drift", "drift", "drift", "in_sync", "in_sync"], told

    # A person's deploy (here: the same state again, by hand) starts over.
    record = deployed.deploy(manual=True)
    assert record.status == "succeeded", record.log
    state = loop.sync()
    assert not state.degraded and state.heals == []


def test_rollhooks_own_deployments_are_never_drift(
    deployed: Deployer, client: docker.DockerClient
) -> None:
    loop = Loop(deployed)
    with watching(deployed) as watcher:
        deployed.commit("2.0.0")
        record = deployed.deploy()  # stops, recreates, starts: a burst of engine events
        assert record.status == "succeeded", record.log
        wait_for(lambda: watcher.looks > 0, "the watcher to look")
        time.sleep(2 * watcher.debounce + 1)
    assert [j for j in published(deployed) if j.action == "heal"] == []
    state = loop.sync()
    assert state.drift == [] and state.drift_counts == {} and state.heal_count == 0


def test_a_restart_by_the_restart_policy_is_the_apps_failure_not_drift(
    deployed: Deployer, client: docker.DockerClient
) -> None:
    loop = Loop(deployed)
    container = app_container(deployed, client)
    with watching(deployed) as watcher:
        # The app dies on its own (its listener killed); unless-stopped restarts it.
        container.exec_run(["sh", "-c", "kill $(pidof acceptor)"])  # the listener
        wait_for(lambda: app_container(deployed, client).attrs["RestartCount"] > 0, "a restart")
        wait_for(lambda: watcher.looks > 0, "the watcher to look")
        wait_for(deployed.app_version, "the app to serve again")
        time.sleep(2 * watcher.debounce + 1)
    assert [j for j in published(deployed) if j.action == "heal"] == []
    state = loop.sync()
    assert state.drift == [] and state.drift_counts == {}
    assert state.live["services"]["anything-llm"][0]["restarts"] >= 1


def test_prune_removes_what_git_no_longer_has(
    deployer: Deployer, client: docker.DockerClient
) -> None:
    loop = Loop(deployer)
    sidecar = compose_file(deployer.standin.ref("1.0.0"), service="sidecar")
    two = {
        f"{INFRA_PATH}/docker-compose.yml": _merge(
            compose_file(deployer.standin.ref("1.0.0")), sidecar, deployer.port
        )
    }
    deployer.commit("1.0.0", **two)
    assert deployer.deploy().status == "succeeded"
    assert _services(deployer, client) == ["anything-llm", "sidecar"]
    deployer.commit("1.0.0", "sidecar removed")  # the plain compose file: one service
    record = deployer.deploy()
    assert record.status == "succeeded", record.log
    assert _services(deployer, client) == ["anything-llm"]

    # Someone brings up a service Git does not have, by hand, in the project.
    with watching(deployer):
        stray = {"image": deployer.standin.ref("1.0.0"), "command": ["sleep", "300"]}
        compose_by_hand(
            deployer,
            yaml.safe_dump({"services": {"stray": {**stray, "network_mode": "host"}}}),
        )
        heal_queued(deployer)
    assert [(d["service"], d["what"]) for d in loop.sync().drift] == [("stray", "orphan")]
    loop.work()
    assert loop.latest().status == "succeeded", loop.latest().log
    assert _services(deployer, client) == ["anything-llm"]


def notices(deployer: Deployer) -> list[str]:
    """The target notices scheduled (console rows): their events."""
    query = (
        select(notifications.c.subject)
        .where(notifications.c.kind == "target", notifications.c.channel == "console")
        .order_by(notifications.c.created_at)
    )
    with deployer.records.connect() as conn:
        return [subject.split(":")[1] for (subject,) in conn.execute(query)]


def compose_by_hand(deployer: Deployer, extra: str) -> None:
    """``docker compose up`` run by a person with rollhook's files plus one of their own:
    what it creates carries rollhook's labels but another compose config."""
    good = deployer.state().current_deployment_id
    assert good is not None
    release = deployer.dirs.release(deployer.record(good).commit or "")
    by_hand = deployer.root / "by-hand.yml"
    by_hand.write_text(extra)
    subprocess.run(
        [
            *deployer.ctx.compose_argv, "-p", deployer.target.project,
            "--project-directory", str(deployer.dirs.work),
            "-f", str(release / "docker-compose.yml"),
            "-f", str(deployer.dirs.override(good)),
            "-f", str(by_hand),
            "--env-file", str(release / ".env"),
            "up", "-d",
        ],
        env={"DOCKER_HOST": deployer.docker_host, "PATH": "/usr/bin:/bin"},
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip


def _services(deployer: Deployer, client: docker.DockerClient) -> list[str]:
    found = client.containers.list(
        all=True, filters={"label": f"com.docker.compose.project={deployer.target.project}"}
    )
    return sorted(c.labels["com.docker.compose.service"] for c in found)


def _merge(first: str, second: str, port: int) -> str:
    one, two = yaml.safe_load(first), yaml.safe_load(second)
    sidecar = two["services"]["sidecar"]
    sidecar["environment"]["SERVER_PORT"] = str(port + 1)
    sidecar["volumes"] = ["./sidecar:/app/server/storage"]
    one["services"]["sidecar"] = sidecar
    return yaml.safe_dump(one, sort_keys=False)
