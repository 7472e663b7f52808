"""start-first's two colours: the same service as two compose projects on a pair of ports.

Blue is the target's own ``project`` on ``proxy.port``; green is ``<project>-green`` on
``proxy.port + 1``. Compose sees the colour's port as ``${ROLLHOOK_PORT}``. One colour
serves (the proxy's switch points at its port); a deployment starts the new version as
the other one, gates it on its own port, and switches.

Which colour serves is what the deployment record says (its ``colours`` column, written
before anything starts and again, before the switch, once the gate passed), so that a
worker picking up a dead one's deployment, and ``rollhook proxy`` starting again, know
it without asking the engine or Caddy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from rollhook.records import deployments
from rollhook.records import targets as target_records
from rollhook.records.deployments import DeploymentRecord
from rollhook.targets import GREEN_SUFFIX, Target

Name = Literal["blue", "green"]


@dataclass(frozen=True)
class Colour:
    name: Name
    project: str
    port: int


def pair(target: Target) -> tuple[Colour, Colour]:
    """Blue and green of a start-first target."""
    if target.proxy is None:
        raise ValueError(f"{target.name} has no proxy: no pair of ports")
    blue, green = target.proxy.ports
    return (
        Colour("blue", target.project, blue),
        Colour("green", f"{target.project}{GREEN_SUFFIX}", green),
    )


def named(target: Target, name: str) -> Colour:
    blue, green = pair(target)
    return green if name == "green" else blue


def other(target: Target, colour: Colour) -> Colour:
    blue, green = pair(target)
    return blue if colour.name == "green" else green


def serving(target: Target, record: DeploymentRecord | None) -> Colour:
    """The colour a deployment record says serves; blue when it says nothing (the first
    start-first deployment, or one that followed ``recreate``: its project and port)."""
    recorded = (record.colours or {}) if record is not None else {}
    return named(target, str(recorded.get("serving") or "blue"))


def projects(target: Target) -> tuple[str, ...]:
    """The compose projects a target's app may run as: both colours' for start-first."""
    if target.strategy != "start-first" or target.proxy is None:
        return (target.project,)
    return tuple(colour.project for colour in pair(target))


def serving_colour(target: Target, record: DeploymentRecord | None) -> Colour | None:
    """start-first: the colour ``record`` says serves (its project is what drift is
    compared with and what a heal applies again); None for every other strategy."""
    if target.strategy != "start-first" or target.proxy is None:
        return None
    return serving(target, record)


def describe(
    serving: Colour, old: Colour, new: Colour, containers: Mapping[str, list[str]]
) -> dict[str, Any]:
    """The record's ``colours``: which serves, which ran before and which this deployment
    starts, and each one's project, port and running containers."""
    value: dict[str, Any] = {"serving": serving.name, "old": old.name, "new": new.name}
    for colour in (old, new):
        value[colour.name] = {
            "project": colour.project,
            "port": colour.port,
            "containers": list(containers.get(colour.name, [])),
        }
    return value


def gate_url(url: str | None, port: int) -> str | None:
    """The health URL with the colour's port (the targets file names ``proxy.port``)."""
    if url is None:
        return None
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return urlunsplit(parts._replace(netloc=f"{host}:{port}"))


def serving_ports(conn: Any, targets: Mapping[str, Target]) -> dict[str, int]:
    """Per start-first target, the port of the colour its current deployment serves."""
    ports = {}
    for target in targets.values():
        if target.strategy != "start-first" or target.proxy is None:
            continue
        state = target_records.get(conn, target.name)
        current = state.current_deployment_id if state is not None else None
        record = deployments.get(conn, current) if current else None
        ports[target.name] = serving(target, record).port
    return ports
