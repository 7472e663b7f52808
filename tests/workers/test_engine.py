"""The Docker engine adapter against the private engine and the local registry."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from rollhook.images import parse_reference
from tests.harness import free_port
from workers.engine import DockerEngine
from workers.errors import InfrastructureError, OperatorError


@pytest.fixture
def engine(docker_host: str) -> Iterator[DockerEngine]:
    with DockerEngine(docker_host, timeout=30) as connected:
        yield connected


@pytest.fixture
def client(docker_host: str) -> Iterator[docker.DockerClient]:
    """A plain SDK client for arranging what the adapter then looks at."""
    sdk = docker.DockerClient(base_url=docker_host, version="auto", timeout=60)
    yield sdk
    sdk.close()


def test_resolve_asks_the_registry(engine: DockerEngine, standin: Any) -> None:
    ref = parse_reference(standin.ref("1.0.0"))
    assert engine.resolve(ref) == standin.digests[standin.ref("1.0.0")]
    assert engine.resolve(parse_reference(standin.ref("2.0.0"))) != engine.resolve(ref)

    with pytest.raises(OperatorError, match="manifest unknown"):
        engine.resolve(parse_reference(standin.ref("9.9.9")))
    with pytest.raises(OperatorError):
        engine.resolve(parse_reference(standin.ref("1.0.0", repository="acme/no-such-repo")))
    with pytest.raises(InfrastructureError, match="connection refused"):
        engine.resolve(parse_reference(f"127.0.0.1:{free_port()}/acme/anythingllm:1.0.0"))


def test_pull_by_digest_and_prune(engine: DockerEngine, standin: Any, client: Any) -> None:
    tag = f"engine-{uuid.uuid4().hex[:8]}"
    standin.build(tag, 1)
    pinned = standin.digest_ref(tag)
    assert engine.remove_image(standin.ref(tag))  # the only reference: the image goes
    assert engine.image_id(pinned) is None

    image_id = engine.pull(pinned)
    assert engine.image_id(pinned) == image_id
    assert engine.pull(parse_reference(pinned)) == image_id  # already here: no second pull
    with pytest.raises(OperatorError, match="by digest only"):
        engine.pull(standin.ref(tag))
    with pytest.raises(OperatorError):
        engine.pull(pinned.split("@")[0] + "@sha256:" + "0" * 64)

    project = f"enginetest{uuid.uuid4().hex[:6]}"
    labels = {"com.docker.compose.project": project, "com.docker.compose.service": "app"}
    container = client.containers.create(pinned, labels=labels)
    try:
        assert not engine.remove_image(pinned)  # a stopped container may be started again
        [info] = engine.containers(project)
        assert (info.service, info.container_id, info.image_id) == ("app", container.id, image_id)
        assert info.state.status == "created" and not info.running
        assert pinned in info.repo_digests
    finally:
        container.remove(force=True)
    assert engine.containers(project) == []
    assert engine.remove_image(pinned)
    assert not engine.remove_image(pinned)  # already gone


def test_container_state_after_an_exit(engine: DockerEngine, standin: Any, client: Any) -> None:
    container = client.containers.run(
        standin.ref("1.0.0"), ["sh", "-c", "exit 3"], detach=True, network_mode="host"
    )
    try:
        container.wait(timeout=30)
        state = engine.state(container.id)
        assert state is not None
        assert (state.status, state.running, state.exit_code) == ("exited", False, 3)
        assert state.started_at and state.finished_at
        # Docker may stamp a quick exit a hair before the start: only closeness is certain.
        assert abs((state.finished_at - state.started_at).total_seconds()) < 30
        assert state.health is None and state.restart_count == 0
    finally:
        container.remove(force=True)
    assert engine.state(container.id) is None


def test_volumes_and_data_root(engine: DockerEngine, client: Any) -> None:
    name = f"enginetest-{uuid.uuid4().hex[:8]}"
    volume = client.volumes.create(name)
    try:
        path = engine.volume_path(name)
        assert path is not None and path.name == "_data"
        assert path.is_relative_to(engine.docker_root())
    finally:
        volume.remove()
    assert engine.volume_path(name) is None
    assert engine.docker_root().is_dir()


def test_an_engine_that_is_not_there(tmp_path: Path) -> None:
    with pytest.raises(InfrastructureError, match="socket is missing"):
        DockerEngine(f"unix://{tmp_path}/no.sock", timeout=5)
