"""The Docker engine and, through it, the registry: digests, pulls, containers, volumes.

Registry credentials are the host's own (``docker login``): the Docker SDK reads them from
the Docker config file for each request. Digests come from the registry, never from a
webhook payload. Every call has a timeout (the SDK's per request; a pull has a deadline).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests

from rollhook.images import ImageRef, ReferenceError, parse_reference
from workers.closeable import Closeable
from workers.errors import InfrastructureError, OperatorError, StepTimeout

SERVICE_LABEL = "com.docker.compose.service"
PROJECT_LABEL = "com.docker.compose.project"
DEFAULT_SOCKET = "unix:///var/run/docker.sock"


@dataclass(frozen=True)
class ContainerState:
    container_id: str
    status: str  # created, running, restarting, exited, dead, paused
    running: bool
    restarting: bool
    exit_code: int
    restart_count: int
    started_at: datetime | None
    finished_at: datetime | None
    health: str | None  # starting, healthy, unhealthy; None without a healthcheck


@dataclass(frozen=True)
class ContainerInfo:
    service: str
    container_id: str
    name: str
    image: str  # as configured (e.g. repo:tag@digest)
    image_id: str
    repo_digests: list[str]
    labels: dict[str, str]
    state: ContainerState = field(repr=False)
    restart_policy: str = ""  # no | always | unless-stopped | on-failure ("" when unset)

    @property
    def running(self) -> bool:
        return self.state.running


def _time(text: str | None) -> datetime | None:
    """Docker's RFC 3339 with nanoseconds; its zero time means "never"."""
    if not text or text.startswith("0001-"):
        return None
    head, _, frac = text.rstrip("Z").partition(".")
    zone = ""
    for sign in "+-":
        if sign in frac:
            frac, _, zone = frac.partition(sign)
            zone = sign + zone
    return datetime.fromisoformat(f"{head}.{(frac or '0')[:6]:0<6}{zone or '+00:00'}")


def _state(data: dict[str, Any]) -> ContainerState:
    state = data.get("State") or {}
    return ContainerState(
        container_id=data["Id"],
        status=state.get("Status", "unknown"),
        running=bool(state.get("Running")),
        restarting=bool(state.get("Restarting")),
        exit_code=int(state.get("ExitCode") or 0),
        restart_count=int(data.get("RestartCount") or 0),
        started_at=_time(state.get("StartedAt")),
        finished_at=_time(state.get("FinishedAt")),
        health=(state.get("Health") or {}).get("Status"),
    )


@contextlib.contextmanager
def _errors(what: str) -> Iterator[None]:
    """Docker SDK and transport failures become the project's own errors."""
    try:
        yield
    except docker.errors.NotFound as exc:
        raise OperatorError(f"{what}: {_reason(exc)}") from exc
    except docker.errors.APIError as exc:
        reason = _reason(exc)
        denied = exc.status_code in {401, 403} or "denied" in reason or "unauthorized" in reason
        if denied:
            raise OperatorError(f"{what}: {reason} (is the host logged in: docker login?)") from exc
        raise InfrastructureError(f"{what}: {reason}") from exc
    except requests.exceptions.Timeout as exc:
        raise StepTimeout(f"{what}: the Docker engine did not answer in time") from exc
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise InfrastructureError(f"{what}: {exc}") from exc


def _reason(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc).strip()


class DockerEngine(Closeable):
    """One connection to a Docker engine; use as a context manager (it holds a pool)."""

    def __init__(self, base_url: str | None, timeout: float = 60.0) -> None:
        self.timeout = timeout
        base_url = base_url or DEFAULT_SOCKET
        if base_url.startswith("unix://") and not Path(base_url.removeprefix("unix://")).exists():
            raise InfrastructureError(f"no Docker engine at {base_url} (the socket is missing)")
        with _errors(f"connecting to the Docker engine at {base_url}"):
            # "auto": engines as old as 20.10 (API 1.41) refuse newer client versions.
            self._client = docker.DockerClient(base_url=base_url, version="auto", timeout=timeout)
        self._api = self._client.api

    def close(self) -> None:
        self._client.close()

    # -- images ---------------------------------------------------------------------------

    def resolve(self, ref: ImageRef) -> str:
        """The digest the registry serves for ``ref``'s tag (index or manifest)."""
        with _errors(f"resolving {ref.name}:{ref.tag or 'latest'} in its registry"):
            answer = self._api.inspect_distribution(f"{ref.name}:{ref.tag or 'latest'}")
        return str(answer["Descriptor"]["digest"])

    def pull(self, ref: ImageRef | str, timeout: float = 1800.0) -> str:
        """Pull by digest (``repo[:tag]@digest``) unless present; the local image id."""
        try:
            image = ref if isinstance(ref, ImageRef) else parse_reference(ref)
        except ReferenceError as exc:
            raise OperatorError(str(exc)) from exc
        if not image.digest:
            raise OperatorError(f"{image} has no digest: rollhook pulls by digest only")
        if (present := self.image_id(image.pullable())) is not None:
            return present
        deadline = time.monotonic() + timeout
        with _errors(f"pulling {image.pullable()}"):
            for event in self._api.pull(image.pullable(), stream=True, decode=True):
                if "error" in event:
                    raise InfrastructureError(f"pulling {image}: {event['error']}")
                if time.monotonic() > deadline:
                    # Dropping our connections ends the request, and the engine cancels
                    # the pull with it; the pool opens new connections on the next call.
                    self._api.close()
                    raise StepTimeout(f"pulling {image} ran past {timeout:g}s")
        found = self.image_id(image.pullable())
        if found is None:
            raise InfrastructureError(f"{image} is not present after pulling it")
        return found

    def image_id(self, ref: str) -> str | None:
        """The local image id for a reference or id, or None if it is not here."""
        found = self._inspect(f"image {ref}", self._api.inspect_image, ref)
        return None if found is None else str(found["Id"])

    def remove_image(self, ref_or_id: str) -> bool:
        """Remove an image (or one reference to it) that no container uses; True if done."""
        image_id = self.image_id(ref_or_id)
        if image_id is None:
            return False
        with _errors(f"removing image {ref_or_id}"):
            # Stopped containers count: a rollback may start one of them again.
            if self._api.containers(all=True, filters={"ancestor": image_id}, quiet=True):
                return False
            try:
                self._api.remove_image(ref_or_id, force=False, noprune=False)
            except docker.errors.APIError as exc:
                if exc.status_code in {404, 409}:  # gone meanwhile, or the engine says in use
                    return False
                raise
        return True

    # -- containers and volumes ----------------------------------------------------------

    def containers(self, project: str) -> list[ContainerInfo]:
        """Every container of a compose project, running or not."""
        found = []
        with _errors(f"listing the containers of {project}"):
            listed = self._api.containers(all=True, filters={"label": f"{PROJECT_LABEL}={project}"})
            for summary in listed:
                try:
                    data = self._api.inspect_container(summary["Id"])
                    image = self._api.inspect_image(data["Image"])
                except docker.errors.NotFound:  # removed while we looked
                    continue
                labels = data["Config"].get("Labels") or {}
                found.append(
                    ContainerInfo(
                        service=labels.get(SERVICE_LABEL, ""),
                        container_id=data["Id"],
                        name=data["Name"].lstrip("/"),
                        image=data["Config"].get("Image", ""),
                        image_id=data["Image"],
                        repo_digests=list(image.get("RepoDigests") or []),
                        labels=dict(labels),
                        state=_state(data),
                        restart_policy=str(
                            ((data.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name")
                            or ""
                        ),
                    )
                )
        return sorted(found, key=lambda c: (c.service, c.name))

    def state(self, container_id: str) -> ContainerState | None:
        """A container's state now, or None if it no longer exists."""
        what = f"container {container_id[:12]}"
        found = self._inspect(what, self._api.inspect_container, container_id)
        return None if found is None else _state(found)

    def volume_path(self, name: str) -> Path | None:
        """Where a named volume's data lives on the host, or None if there is no such volume."""
        found = self._inspect(f"volume {name}", self._api.inspect_volume, name)
        return None if found is None else Path(found["Mountpoint"])

    def _inspect(self, what: str, inspect: Callable[[str], Any], name: str) -> Any | None:
        """The engine's description of an image, container or volume; None if there is none."""
        with _errors(f"inspecting {what}"):
            try:
                return inspect(name)
            except docker.errors.NotFound:
                return None

    def answers(self) -> bool:
        """Whether the engine answers now (it may be restarting: a short wait, no error)."""
        try:
            return bool(self._api.ping())
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            return False

    def version(self) -> str:
        """The engine's version (``27.3.1``)."""
        with _errors("asking the Docker engine for its version"):
            return str(self._api.version().get("Version") or "?")

    def docker_root(self) -> Path:
        """The engine's data root, where pulled images take their space."""
        with _errors("asking the Docker engine for its data root"):
            return Path(self._api.info()["DockerRootDir"])
