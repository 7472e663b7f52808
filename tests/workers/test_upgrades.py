"""Upgrades users do not notice: a steady client through the real proxy during rollouts.

Each test routes a target of its own on the session's Caddy pair (as ``rollhook proxy``
would), deploys the stand-in through the worker's entry points, and keeps a client
sending 20 requests a second through the proxy, GETs and POSTs with a 64 KiB body in
turn, to the stand-in's ``/cgi-bin/echo``, which says which version answered and the
digest of the body it got. No request may fail, and the version the client sees (in the
order requests were sent) changes exactly once per successful upgrade.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from contextlib import closing
from typing import Any

import docker
import pytest

from rollhook.records.deployments import DeploymentRecord
from tests.harness.caddy import CaddyProxy
from tests.harness.webapp import StandInClient
from tests.workers.deployer import Deployer
from tests.workers.loop import Loop
from workers.engine import DockerEngine
from workers.healing import inspect, look
from workers.proxy.config import loopback
from workers.proxy.process import recorded_upstreams
from workers.runner import run_target
from workers.traffic import Traffic

pytestmark = pytest.mark.engine

ROLLHOOK_PORT = {"environment": {"SERVER_PORT": "${ROLLHOOK_PORT}"}}
STATELESS = {**ROLLHOOK_PORT, "volumes": False}
LEASE = 3.0

Make = Callable[..., Deployer]


@pytest.fixture
def behind(make_deployer: Make, caddy_proxy: CaddyProxy) -> Make:
    """A deployer whose target is served through the proxy."""

    def make(**options: Any) -> Deployer:
        compose = options.pop("compose", ROLLHOOK_PORT)
        return make_deployer(proxy=caddy_proxy, compose=compose, **options)

    return make


def steps(record: Any) -> list[str]:
    return [step["name"] for step in record.steps]


def served_upstream(deployer: Deployer) -> tuple[str, bool]:
    assert deployer.caddy is not None
    with deployer.caddy.driver() as driver:
        state = driver.state(deployer.name)
    assert state is not None
    return state.upstream, state.ready


def during(deployer: Deployer, action: Callable[[], Any]) -> tuple[StandInClient, Any]:
    """Run ``action`` while a steady client sends through the proxy, before and after."""
    with StandInClient(deployer.url) as client:
        client.wait_for(10)
        result = action()
        client.wait_for(10, after=time.monotonic())
    return client, result


def _worker(deployer: Deployer) -> None:
    deployer.ctx.records.dispose(close=False)
    deployer.ctx.refresh_owner()
    run_target(deployer.ctx, deployer.name)
    os._exit(0)


def kill_at(deployer: Deployer, deployment_id: str, step: str) -> None:
    """Run the target in a forked worker and SIGKILL it once ``step`` is running."""
    child = multiprocessing.get_context("fork").Process(target=_worker, args=(deployer,))
    child.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if any(
            s["name"] == step and s["outcome"] == "running"
            for s in deployer.record(deployment_id).steps
        ):
            break
        assert child.is_alive(), "the worker finished before the step it should die in"
        time.sleep(0.05)
    else:
        raise AssertionError(f"step {step} never started")
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join()


# -- recreate --------------------------------------------------------------------------


def test_an_upgrade_behind_the_proxy_fails_no_request(behind: Make) -> None:
    deployer = behind()
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"
    deployer.commit("2.0.0-slow")  # boots in 3 s: requests wait that long, and more
    client, record = during(deployer, deployer.deploy)

    assert record.status == "succeeded", record.log
    assert client.failed == [], (record.log if "record" in dir() else "", client.failed[:3])
    assert client.changes() == [("1.0.0", "2.0.0-slow")]
    # Requests of both kinds were sent while no version ran, and waited in the proxy.
    stop = next(s for s in record.steps if s["name"] == "stop")
    assert "holding new requests" in record.log
    assert max(client.latencies()) > 3.0, stop
    assert served_upstream(deployer) == (loopback(deployer.port), True)


@pytest.mark.parametrize("broken", ["3.0.0-crash"])
def test_a_broken_release_behind_the_proxy_rolls_back_without_a_failed_request(
    behind: Make, broken: str
) -> None:
    deployer = behind()
    deployer.commit("2.0.0")
    assert deployer.deploy().status == "succeeded"
    deployer.commit(broken)
    client, record = during(deployer, deployer.deploy)

    assert record.status == "rolled_back", record.log
    assert client.failed == [], (record.log if "record" in dir() else "", client.failed[:3])
    # The broken version never answered a request: it was never served.
    assert client.changes() == []
    assert set(client.versions()) == {"2.0.0"}
    assert "copied while the new version was gated" in record.log
    backup = next(s for s in record.steps if s["name"] == "backup")
    assert "the rollback's copy made from it" in backup["detail"], backup
    assert served_upstream(deployer) == (loopback(deployer.port), True)


@pytest.mark.parametrize("deployer_lease", [LEASE])
def test_a_worker_killed_mid_upgrade_behind_the_proxy_fails_no_request(
    behind: Make, deployer_lease: float
) -> None:
    deployer = behind(lease_seconds=deployer_lease)
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"
    deployer.commit("2.0.0-slow")
    deployment_id = deployer.queue()

    def die_and_recover() -> None:
        kill_at(deployer, deployment_id, "gate")
        # The dead worker left the proxy holding: requests wait, none fails.
        assert served_upstream(deployer) == (loopback(deployer.port), False)
        time.sleep(deployer_lease + 0.5)
        deployer.run()

    client, _ = during(deployer, die_and_recover)
    record = deployer.record(deployment_id)
    assert record.status == "succeeded", record.log
    assert record.attempt == 2
    assert client.failed == [], (record.log if "record" in dir() else "", client.failed[:3])
    assert client.changes() == [("1.0.0", "2.0.0-slow")]
    assert served_upstream(deployer) == (loopback(deployer.port), True)


# -- start-first -----------------------------------------------------------------------


def running_ids(deployer: Deployer, project: str) -> list[str]:
    with DockerEngine(deployer.docker_host) as engine:
        return [c.container_id for c in engine.containers(project) if c.running]


def start_first(behind: Make, **options: Any) -> Deployer:
    options.setdefault("compose", STATELESS)
    return behind(strategy="start-first", **options)


def test_a_start_first_upgrade_switches_once_and_stops_the_old_colour(behind: Make) -> None:
    deployer = start_first(behind)
    blue, green = deployer.target.project, f"{deployer.target.project}-green"
    deployer.commit("1.0.0")
    first = deployer.deploy()
    assert first.status == "succeeded", first.log
    assert first.colours is not None and first.colours["serving"] == "green"
    assert served_upstream(deployer) == (loopback(deployer.port + 1), True)
    # What `rollhook proxy` would serve if it started again now.
    recorded = {deployer.name: deployer.target}
    assert recorded_upstreams(deployer.records, recorded) == {
        deployer.name: loopback(deployer.port + 1)
    }

    deployer.commit("2.0.0-slow")
    client, record = during(deployer, deployer.deploy)

    assert record.status == "succeeded", record.log
    assert client.failed == [], (record.log, client.failed[:3])
    assert client.changes() == [("1.0.0", "2.0.0-slow")]
    # Nobody waited for the new version's boot: it booted beside the old one.
    assert max(client.latencies()) < 3.0
    assert steps(record) == [
        *["sync", "plan", "preflight", "backup"],
        *["start", "gate", "switch", "stop"],
    ]
    colours = record.colours
    assert colours is not None
    assert (colours["serving"], colours["old"], colours["new"]) == ("blue", "green", "blue")
    assert colours["blue"]["port"] == deployer.port
    assert colours["green"]["port"] == deployer.port + 1
    assert colours["blue"]["containers"] == running_ids(deployer, blue) != []
    assert running_ids(deployer, green) == []  # the old colour stopped, after the switch
    assert first.colours["green"]["containers"] != []
    assert served_upstream(deployer) == (loopback(deployer.port), True)
    assert recorded_upstreams(deployer.records, recorded) == {
        deployer.name: loopback(deployer.port)
    }
    assert deployer.app_version() == "2.0.0-slow"


def test_a_start_first_release_that_fails_its_gate_never_touches_the_old_one(
    behind: Make,
) -> None:
    deployer = start_first(behind, health={"timeout": 5})
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"
    green = f"{deployer.target.project}-green"
    serving = running_ids(deployer, green)

    deployer.commit("3.0.0-never-healthy")
    client, record = during(deployer, deployer.deploy)

    assert record.status == "rolled_back", record.log
    assert "kept serving" in (record.reason or "")
    assert client.failed == [], (record.log, client.failed[:3])
    assert client.changes() == []
    assert steps(record)[-3:] == ["start", "gate", "discard"]
    assert running_ids(deployer, green) == serving  # the same container, never restarted
    assert running_ids(deployer, deployer.target.project) == []  # the failed one stopped
    assert served_upstream(deployer) == (loopback(deployer.port + 1), True)
    assert deployer.state().failed_fingerprint == record.fingerprint


@pytest.mark.parametrize("step", ["gate", "stop"])
def test_a_worker_killed_mid_start_first_is_finished_from_the_recorded_colours(
    behind: Make, step: str
) -> None:
    # The old version takes 4 s to stop: the worker is killed while it does.
    slow_stop = {"environment": {**STATELESS["environment"], "STOP_DELAY": "4"}}
    deployer = start_first(behind, lease_seconds=LEASE, compose={**STATELESS, **slow_stop})
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"
    deployer.commit("2.0.0-slow")
    deployment_id = deployer.queue()

    def die_and_recover() -> None:
        kill_at(deployer, deployment_id, step)
        recorded = deployer.record(deployment_id).colours
        assert recorded is not None
        assert recorded["serving"] == ("blue" if step == "stop" else "green")
        time.sleep(LEASE + 0.5)
        deployer.run()

    client, _ = during(deployer, die_and_recover)
    record = deployer.record(deployment_id)
    assert record.status == "succeeded", record.log
    assert record.attempt == 2
    assert "recovery: resuming" in record.log
    assert client.failed == [], (record.log, client.failed[:3])
    assert client.changes() == [("1.0.0", "2.0.0-slow")]
    assert running_ids(deployer, f"{deployer.target.project}-green") == []
    assert served_upstream(deployer) == (loopback(deployer.port), True)


def test_start_first_refuses_a_service_that_mounts_its_data(behind: Make) -> None:
    deployer = start_first(behind)
    deployer.compose = ROLLHOOK_PORT  # ./storage and ./.env mounted read-write
    deployer.commit("1.0.0")
    record = deployer.deploy()
    assert record.status == "failed"
    assert "start-first" in (record.reason or "") and "read-write" in (record.reason or "")
    assert "\n" not in (record.reason or "")
    assert steps(record) == ["sync", "plan"]


# -- heals behind the proxy ------------------------------------------------------------


def drift_and_heal(
    deployer: Deployer, project: str, how: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[StandInClient, DeploymentRecord, float]:
    """Under the steady client: the app's container killed or stopped by hand, the drift
    looked at (a heal queued) and the heal run; returns when the heal held the proxy."""
    held: list[float] = []
    hold = Traffic.hold

    def noted(traffic: Traffic, **options: bool) -> None:
        held.append(time.monotonic())
        hold(traffic, **options)

    monkeypatch.setattr(Traffic, "hold", noted)
    loop = Loop(deployer)

    def act() -> None:
        with DockerEngine(deployer.docker_host) as engine:
            [app] = [c for c in engine.containers(project) if c.service == deployer.target.service]
        with closing(docker.DockerClient(base_url=deployer.docker_host, timeout=60)) as client:
            container = client.containers.get(app.container_id)
            if how == "kill":
                container.kill()
            else:
                container.stop(timeout=5)
        with DockerEngine(deployer.docker_host) as engine:
            assert look(deployer.ctx, deployer.target, engine) is not None
        loop.work()

    client, _ = during(deployer, act)
    record = loop.latest()
    assert (record.kind, record.status) == ("heal", "succeeded"), record.log
    assert len(held) == 1, record.log
    return client, record, held[0]


def held_throughout(client: StandInClient, hold_at: float) -> None:
    """No request sent once the proxy held (plus the probe's few tenths of a second to
    see it) failed: the heal itself costs no request. Those sent between the hand's kill
    and the hold are the drift's, not the heal's (see the heal test below)."""
    after = [s for s in client.failed if s.sent >= hold_at + 0.5]
    assert after == [], after[:3]


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_a_heal_behind_the_proxy_holds_requests_like_a_recreate(
    behind: Make, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployer = behind()
    deployer.commit("1.0.0")
    first = deployer.deploy()
    assert first.status == "succeeded", first.log
    client, record, hold_at = drift_and_heal(deployer, deployer.target.project, how, monkeypatch)

    assert [s["name"] for s in record.steps] == ["inspect", "start", "gate"]
    assert "holding new requests" in record.log
    held_throughout(client, hold_at)
    # Requests sent while the heal booted the app again waited in the proxy.
    during_heal = [s for s in client.sent if s.sent >= hold_at + 0.5 and s.done - s.sent > 1.0]
    assert during_heal, "no request was held during the heal"
    assert {s.method for s in during_heal} == {"GET", "POST"}
    assert set(client.versions()) == {"1.0.0"}
    assert served_upstream(deployer) == (loopback(deployer.port), True)
    assert deployer.state().current_deployment_id == first.id


def test_a_start_first_heal_puts_the_serving_colour_back(
    behind: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployer = start_first(behind)
    blue, green = deployer.target.project, f"{deployer.target.project}-green"
    deployer.commit("1.0.0")
    first = deployer.deploy()
    assert first.status == "succeeded", first.log
    assert first.colours is not None and first.colours["serving"] == "green"
    serving = running_ids(deployer, green)

    client, record, hold_at = drift_and_heal(deployer, green, "kill", monkeypatch)

    start = next(s for s in record.steps if s["name"] == "start")
    assert f"as green ({green}, port {deployer.port + 1})" in start["detail"], record.steps
    held_throughout(client, hold_at)
    assert set(client.versions()) == {"1.0.0"}
    assert running_ids(deployer, green) == serving  # the same container, started again
    assert running_ids(deployer, blue) == []  # the other colour was never started
    assert served_upstream(deployer) == (loopback(deployer.port + 1), True)
    assert deployer.state().current_deployment_id == first.id
    with DockerEngine(deployer.docker_host) as engine:
        assert inspect(deployer.target, first, engine).drift == []
