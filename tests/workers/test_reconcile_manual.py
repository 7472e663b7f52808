"""Manual mode (``sync.auto: false``) on the real engine, git server and registry: what
polling finds waits, shown as pending and told once, until a person's sync approves it;
drift is recorded and told, never healed by itself, and put back by a sync."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing

import docker
import pytest
from sqlalchemy import select

from rollhook.records import targets as target_records
from rollhook.records.schema import notifications
from service.syncview import sync_view
from tests.workers.deployer import Deployer
from tests.workers.loop import Loop
from tests.workers.notify.flow import notifiers_for
from tests.workers.test_reconcile_drift import app_container, compose_by_hand, published
from workers.engine import DockerEngine
from workers.healing import look

pytestmark = pytest.mark.engine
MANUAL = [{"sync": {"auto": False}}]


@pytest.fixture
def client(docker_host: str) -> Iterator[docker.DockerClient]:
    with closing(docker.DockerClient(base_url=docker_host, timeout=120)) as found:
        yield found


def status(deployer: Deployer) -> dict[str, object]:
    with deployer.records.connect() as conn:
        state = target_records.get(conn, deployer.name)
        assert state is not None
        return sync_view(conn, deployer.target, state)


def told(deployer: Deployer) -> list[str]:
    query = select(notifications.c.subject).where(
        notifications.c.kind == "target", notifications.c.channel == "console"
    )
    with deployer.records.connect() as conn:
        return sorted(subject.split(":")[1] for (subject,) in conn.execute(query))


@pytest.mark.parametrize("deployer", MANUAL, indirect=True)
def test_a_change_found_by_polling_waits_until_a_person_approves_it(deployer: Deployer) -> None:
    deployer.ctx.notifiers = notifiers_for(notify_console=True)
    loop = Loop(deployer)
    deployer.commit("1.0.0")
    assert deployer.deploy(manual=True, source="api").status == "succeeded"
    second = deployer.commit("2.0.0", "anything-llm 2.0.0")

    [_] = loop.poll().raised["llm"]
    loop.work()  # queued, not started
    [waiting] = [r for r in loop.history() if r.status == "queued"]
    assert (waiting.trigger["source"], deployer.app_version()) == ("poll", "1.0.0")
    shown = status(deployer)
    assert shown["status"] == "pending"
    assert [d["deployment"] for d in shown["pending"]["deployments"]] == [waiting.id]  # type: ignore[index]
    assert told(deployer) == ["pending"]
    assert loop.poll().raised == {}  # raised once
    loop.work()
    assert told(deployer) == ["pending"]  # told once

    # The approval: a person's sync, recorded with who asked.
    approval = deployer.queue(action="sync", manual=True, source="api", actor="alice")
    deployer.run()
    record = deployer.record(approval)
    assert (record.kind, record.status, record.commit) == ("sync", "succeeded", second), record.log
    assert record.requested["approved_by"] == "alice"
    assert record.requested["coalesced"] == [waiting.id]
    assert deployer.record(waiting.id).status == "superseded"
    assert deployer.app_version() == "2.0.0"
    assert status(deployer)["status"] == "synced"

    # Nothing new: a sync says so and changes nothing.
    again = deployer.queue(action="sync", manual=True, source="api", actor="alice")
    deployer.run()
    record = deployer.record(again)
    assert record.status == "no_op" and (record.reason or "").startswith("already in sync")


@pytest.mark.parametrize("deployer", MANUAL, indirect=True)
def test_drift_in_manual_mode_waits_for_a_sync_which_heals_it(
    deployer: Deployer, client: docker.DockerClient
) -> None:
    deployer.ctx.notifiers = notifiers_for(notify_console=True)
    loop = Loop(deployer)
    deployer.commit("1.0.0")
    assert deployer.deploy(manual=True, source="api").status == "succeeded"
    good = deployer.state().current_deployment_id
    compose_by_hand(deployer, "services:\n  anything-llm:\n    environment:\n      DEBUG: 'yes'\n")

    with DockerEngine(deployer.docker_host) as engine:
        assert look(deployer.ctx, deployer.target, engine) is not None
    assert published(deployer) == []  # no heal by itself
    assert [d["what"] for d in loop.sync().drift] == ["config"]
    assert status(deployer)["status"] == "pending"
    assert told(deployer) == ["drift"]

    approval = deployer.queue(action="sync", manual=True, source="api", actor="alice")
    deployer.run()
    record = deployer.record(approval)
    assert (record.kind, record.status) == ("sync", "succeeded"), record.log
    assert [s["name"] for s in record.steps] == ["sync", "plan", "inspect", "start", "gate"]
    assert deployer.state().current_deployment_id == good  # put back, not a new current
    assert "DEBUG=yes" not in app_container(deployer, client).attrs["Config"]["Env"]
    assert loop.sync().drift == []
    assert status(deployer)["status"] == "synced"
    assert told(deployer) == ["drift", "in_sync"]


def backups_of(deployer: Deployer) -> list[str]:
    where = deployer.dirs.backups
    return sorted(p.name for p in where.iterdir()) if where.exists() else []


@pytest.mark.parametrize("deployer", MANUAL, indirect=True)
def test_a_sync_of_a_container_stopped_by_hand_heals_it_without_a_deployment(
    deployer: Deployer, client: docker.DockerClient
) -> None:
    loop = Loop(deployer)
    deployer.commit("1.0.0")
    assert deployer.deploy(manual=True, source="api").status == "succeeded"
    good = deployer.state().current_deployment_id
    backups = backups_of(deployer)
    app_container(deployer, client).stop(timeout=5)  # same commit, same digests: only stopped

    approval = deployer.queue(action="sync", manual=True, source="api", actor="alice")
    deployer.run()
    record = deployer.record(approval)
    assert (record.kind, record.status) == ("sync", "succeeded"), record.log
    # A heal: started again behind the gate; no backup, no stop, no new current deployment.
    assert [s["name"] for s in record.steps] == ["sync", "plan", "inspect", "start", "gate"]
    assert f"the desired state is {good}'s" in record.log
    assert backups_of(deployer) == backups
    assert deployer.state().current_deployment_id == good
    assert app_container(deployer, client).labels["rollhook.deployment"] == good
    assert deployer.app_version() == "1.0.0"
    assert loop.sync().drift == []
