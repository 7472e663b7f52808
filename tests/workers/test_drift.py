"""Drift between a deployment and the containers that run: a pure comparison, table-style."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from workers.drift import Expected, compare, snapshot
from workers.engine import ContainerInfo, ContainerState

REPO = "127.0.0.1:5000/acme/anythingllm"
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
APP = f"{REPO}:1.0.0@{D1}"
EXPECTED = Expected(
    deployment_id="d-good",
    images={"app": APP, "db": f"docker.io/library/postgres:16@{D2}"},
    gated="app",
    config_hash="sha256:cfg",
    containers={"app": "h-app", "db": "h-db"},
)


def state(status: str = "running", **changes: Any) -> ContainerState:
    base = ContainerState(
        container_id="c",
        status=status,
        running=status in {"running", "paused"},
        restarting=status == "restarting",
        exit_code=0,
        restart_count=0,
        started_at=None,
        finished_at=None,
        health=None,
    )
    return replace(base, **changes)


def container(service: str, **changes: Any) -> ContainerInfo:
    labels = {"com.docker.compose.config-hash": f"h-{service}"}
    if service == "app":
        labels["rollhook.config-hash"] = "sha256:cfg"
    base = ContainerInfo(
        service=service,
        container_id=f"id-{service}",
        name=f"proj-{service}-1",
        image=dict(EXPECTED.images).get(service, f"{REPO}:x"),
        image_id="sha256:img",
        repo_digests=[],
        labels=labels,
        state=state(),
        restart_policy="unless-stopped",
    )
    return replace(base, **changes)


APP_OK, DB_OK = container("app"), container("db")


@pytest.mark.parametrize(
    ("containers", "prune", "expected"),
    [
        ([APP_OK, DB_OK], True, []),
        ([APP_OK], True, [("db", "missing")]),
        ([APP_OK, replace(DB_OK, state=state("exited", exit_code=137))], True, [("db", "stopped")]),
        ([APP_OK, replace(DB_OK, state=state("exited", exit_code=0))], True, [("db", "stopped")]),
        # exited 0 under no restart policy: a one-off init service that finished
        ([APP_OK, replace(DB_OK, state=state("exited"), restart_policy="no")], True, []),
        (
            [APP_OK, replace(DB_OK, state=state("exited", exit_code=1), restart_policy="no")],
            True,
            [("db", "stopped")],
        ),
        ([APP_OK, replace(DB_OK, state=state("created"))], True, [("db", "stopped")]),
        ([APP_OK, replace(DB_OK, state=state("paused"))], True, [("db", "stopped")]),
        ([APP_OK, replace(DB_OK, state=state("dead"))], True, [("db", "stopped")]),
        # the restart policy restarting it: the app's own failure, not drift
        ([APP_OK, replace(DB_OK, state=state("restarting", exit_code=1))], True, []),
        ([replace(APP_OK, image=f"{REPO}:2.0.0@{D2}"), DB_OK], True, [("app", "image")]),
        ([replace(APP_OK, image=f"{REPO}@{D1}"), DB_OK], True, []),  # the same digest
        ([replace(APP_OK, image=f"{REPO}:1.0.0"), DB_OK], True, [("app", "image")]),
        (
            [replace(APP_OK, labels={"com.docker.compose.config-hash": "h-app"}), DB_OK],
            True,
            [("app", "config")],
        ),
        (
            [APP_OK, replace(DB_OK, labels={"com.docker.compose.config-hash": "other"})],
            True,
            [("db", "config")],
        ),
        ([APP_OK, DB_OK, container("extra")], True, [("extra", "orphan")]),
        ([APP_OK, DB_OK, container("extra")], False, []),
        # started by hand with the project's label only: compose does not see it either
        ([APP_OK, DB_OK, container("extra", labels={})], True, []),
        # a one-off (`docker compose run`) container is nobody's drift
        (
            [APP_OK, DB_OK, container("extra", labels={"com.docker.compose.oneoff": "True"})],
            True,
            [],
        ),
    ],
)
def test_what_counts_as_drift(
    containers: list[ContainerInfo], prune: bool, expected: list[tuple[str, str]]
) -> None:
    inspection = compare(EXPECTED, containers, prune=prune)
    assert [(d["service"], d["what"]) for d in inspection.drift] == expected


def test_live_shows_services_and_orphans() -> None:
    stopped = replace(DB_OK, state=state("exited", exit_code=137))
    inspection = compare(EXPECTED, [APP_OK, stopped, container("extra")], prune=False)
    assert inspection.live["services"]["db"][0]["status"] == "exited"
    assert inspection.live["services"]["db"][0]["exit_code"] == 137
    assert [o["service"] for o in inspection.live["orphans"]] == ["extra"]
    [drift] = inspection.drift
    assert drift["detail"].startswith("exited (137)")


def test_a_record_without_a_snapshot_skips_the_compose_hash() -> None:
    old = replace(EXPECTED, containers=None)
    other = replace(DB_OK, labels={"com.docker.compose.config-hash": "other"})
    assert compare(old, [APP_OK, other], prune=True).drift == []


def test_the_snapshot_is_each_running_service_hash() -> None:
    stopped = replace(DB_OK, state=state("exited"))
    oneoff = container(
        "job", labels={"com.docker.compose.oneoff": "True", "com.docker.compose.config-hash": "h"}
    )
    assert snapshot([APP_OK, stopped, oneoff]) == {"app": "h-app"}
