"""Drift: how the containers that run differ from the deployment that should run.

A pure comparison (:func:`compare`), table-tested with container values. What counts:

- ``missing``: a service of the deployment has no container;
- ``stopped``: its container is exited, dead, created or paused. One that its restart
  policy is restarting is the app's own failure, not drift; one that exited 0 under no
  restart policy (``no``, ``on-failure``) finished its work (a one-off init service);
- ``image``: it runs another image than the deployment's digest;
- ``config``: it was created with other settings: the gated service's
  ``rollhook.config-hash`` label differs from the deployment's, or a service's compose
  config hash differs from the one recorded when the deployment passed its gate (records
  made before that was recorded skip this check);
- ``orphan``: a container of the project for a service the deployment does not have
  (drift only with ``prune``; otherwise it is listed in ``live`` only). Only containers
  that compose made count (they carry its config hash): those are what a heal's
  ``--remove-orphans`` removes. One started by hand with a project label only is listed
  in ``live``: compose does not see it, so healing could never put it right.

The data and anything-llm's runtime ``.env`` are never looked at. One-off containers
(``docker compose run``) are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rollhook.images import ReferenceError, parse_reference
from rollhook.records.deployments import DeploymentRecord
from workers.engine import ContainerInfo

COMPOSE_HASH = "com.docker.compose.config-hash"
ONEOFF = "com.docker.compose.oneoff"
STOPPED = frozenset({"exited", "dead", "created", "paused"})
FINISHED_OK = frozenset({"", "no", "on-failure"})  # a clean exit is the end of its work


@dataclass(frozen=True)
class Expected:
    """What the current deployment says should run."""

    deployment_id: str
    images: Mapping[str, str]  # service -> repo:tag@digest
    gated: str  # the target's gated service, labelled by rollhook
    config_hash: str | None  # the deployment's (the gated service's rollhook label)
    containers: Mapping[str, str] | None = None  # service -> compose config hash at the gate

    @classmethod
    def of(cls, record: DeploymentRecord, gated: str) -> Expected:
        return cls(
            deployment_id=record.id,
            images={s: str(v.get("new") or "") for s, v in (record.images or {}).items()},
            gated=gated,
            config_hash=record.config_hash,
            containers=record.containers,
        )


@dataclass(frozen=True)
class Inspection:
    drift: list[dict[str, str]] = field(default_factory=list)  # service, what, detail
    live: dict[str, Any] = field(default_factory=dict)  # services and orphans, as seen


def _same_image(running: str, wanted: str) -> bool:
    if running == wanted:
        return True
    try:
        have, want = parse_reference(running), parse_reference(wanted)
    except ReferenceError:
        return False
    return have.name == want.name and bool(have.digest) and have.digest == want.digest


def _when(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else "?"


def _stopped(container: ContainerInfo) -> str | None:
    """Why this container counts as stopped, or None."""
    state = container.state
    if state.restarting or (state.running and state.status != "paused"):
        return None
    if state.status not in STOPPED:
        return None
    if (
        state.status == "exited"
        and state.exit_code == 0
        and container.restart_policy in FINISHED_OK
    ):
        return None
    if state.status == "exited":
        return f"exited ({state.exit_code}) at {_when(state.finished_at)}"
    return state.status


def _config(expected: Expected, service: str, container: ContainerInfo) -> str | None:
    labels = container.labels
    if service == expected.gated and labels.get("rollhook.config-hash") != expected.config_hash:
        if "rollhook.config-hash" not in labels:
            return "not created by rollhook (no rollhook.config-hash label)"
        return f"created with other settings than {expected.deployment_id}"
    recorded = (expected.containers or {}).get(service)
    if recorded and labels.get(COMPOSE_HASH) != recorded:
        return f"created with other settings than {expected.deployment_id} (compose config hash)"
    return None


def _seen(container: ContainerInfo) -> dict[str, Any]:
    state = container.state
    return {
        "container": container.name,
        "status": state.status,
        "image": container.image,
        "exit_code": state.exit_code,
        "restarts": state.restart_count,
        "started_at": _when(state.started_at),
    }


def compare(expected: Expected, containers: list[ContainerInfo], *, prune: bool) -> Inspection:
    """The drift between ``expected`` and the project's ``containers`` (all of them,
    stopped ones too), and what runs (``live``)."""
    drift: list[dict[str, str]] = []
    services: dict[str, list[dict[str, Any]]] = {}
    orphans: list[dict[str, Any]] = []
    mine = [c for c in containers if c.labels.get(ONEOFF, "False") != "True"]
    for service, image in sorted(expected.images.items()):
        found = [c for c in mine if c.service == service]
        services[service] = [_seen(c) for c in found]
        if not found:
            drift.append({"service": service, "what": "missing", "detail": "no container"})
            continue
        for container in found:
            if (why := _stopped(container)) is not None:
                drift.append({"service": service, "what": "stopped", "detail": why})
            elif not _same_image(container.image, image):
                detail = f"runs {container.image or '?'}, deployed {image}"
                drift.append({"service": service, "what": "image", "detail": detail})
            elif (why := _config(expected, service, container)) is not None:
                drift.append({"service": service, "what": "config", "detail": why})
    for container in mine:
        if container.service not in expected.images:
            orphans.append({"service": container.service, **_seen(container)})
            if prune and COMPOSE_HASH in container.labels:
                detail = f"{container.name}: the deployment has no service {container.service!r}"
                drift.append({"service": container.service, "what": "orphan", "detail": detail})
    return Inspection(drift=drift, live={"services": services, "orphans": orphans})


def snapshot(containers: list[ContainerInfo]) -> dict[str, str]:
    """service -> compose config hash of the running containers: recorded when a
    deployment passes its gate, compared by :func:`compare` later."""
    return {
        c.service: c.labels[COMPOSE_HASH]
        for c in containers
        if c.running and COMPOSE_HASH in c.labels and c.labels.get(ONEOFF, "False") != "True"
    }
