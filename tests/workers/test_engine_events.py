"""The engine event watcher, on the harness's private engine and on one restarted here."""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.harness.engine import PrivateEngine
from tests.harness.ports import stop_listening
from workers.engine_events import ContainerEvent, EngineEvents, Reconnected

Item = ContainerEvent | Reconnected
DEADLINE = 30.0  # generous: a loaded machine is slow, and the point is arrival, not speed


@contextmanager
def watching(watcher: EngineEvents) -> Iterator[queue.Queue[Item]]:
    """Run ``watcher`` in a thread; yield what it reports; stop it and check it ended."""
    seen: queue.Queue[Item] = queue.Queue()

    def run() -> None:
        for item in watcher.watch():
            seen.put(item)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        watcher.stop()
        thread.join(10)
        assert not thread.is_alive(), "stop() did not end watch()"


def collect(seen: queue.Queue[Item], *wanted: Callable[[Item], bool]) -> list[Item]:
    """Everything reported until each of ``wanted`` has matched some item."""
    found: list[Item] = []
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if all(any(match(item) for item in found) for match in wanted):
            return found
        with contextlib.suppress(queue.Empty):
            found.append(seen.get(timeout=0.2))
    pytest.fail(f"not everything arrived within {DEADLINE:g}s; seen: {found}")


def actions(items: list[Item], container_id: str) -> list[str]:
    return [
        i.action for i in items if isinstance(i, ContainerEvent) and i.container_id == container_id
    ]


def is_event(action: str, container_id: str) -> Callable[[Item], bool]:
    return lambda i: (
        isinstance(i, ContainerEvent) and i.action == action and i.container_id == container_id
    )


def _labels(project: str) -> dict[str, str]:
    return {
        "com.docker.compose.project": project,
        "com.docker.compose.service": "app",
        "rollhook.deployment": "d-42",
        "other.label": "x",
    }


def _sleeper(client: docker.DockerClient, image: str, project: str, **extra: Any) -> Any:
    """A container that only sleeps, and dies at once when stopped."""
    return client.containers.create(
        image,
        ["sleep", "300"],
        labels=_labels(project),
        stop_signal="SIGKILL",
        network_mode="host",
        **extra,
    )


def test_containers_stopped_and_removed_by_hand_are_reported(
    docker_host: str, docker_client: docker.DockerClient, standin: Any
) -> None:
    project = f"events{uuid.uuid4().hex[:8]}"
    other = f"{project}other"
    watcher = EngineEvents(docker_host, projects={project}, backoff=(0.1, 0.5))
    with watching(watcher) as seen:
        time.sleep(0.5)  # connected (a since in the past would replay these anyway)
        bystander = _sleeper(docker_client, standin.ref("1.0.0"), other)
        container = _sleeper(docker_client, standin.ref("1.0.0"), project)
        try:
            container.start()
            bystander.start()
            container.stop()
            container.remove()
            items = collect(seen, is_event("destroy", container.id))
        finally:
            bystander.remove(force=True)
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)

    assert actions(items, container.id) == ["create", "start", "kill", "die", "stop", "destroy"]
    assert not [
        i for i in items if isinstance(i, ContainerEvent) and i.container_id == bystander.id
    ]
    die = next(i for i in items if isinstance(i, ContainerEvent) and i.action == "die")
    assert (die.project, die.service, die.exit_code) == (project, "app", 137)
    assert die.labels == {"rollhook.deployment": "d-42"}  # rollhook's own labels only
    assert die.name == container.name
    assert not any(isinstance(i, Reconnected) for i in items)


def test_several_projects_and_a_stop_while_waiting(
    docker_host: str, docker_client: docker.DockerClient, standin: Any
) -> None:
    first, second = (f"events{uuid.uuid4().hex[:8]}" for _ in range(2))
    watcher = EngineEvents(docker_host, projects={first, second}, actions=["create", "destroy"])
    with watching(watcher) as seen:
        time.sleep(0.5)
        one = _sleeper(docker_client, standin.ref("1.0.0"), first)
        two = _sleeper(docker_client, standin.ref("1.0.0"), second)
        three = _sleeper(docker_client, standin.ref("1.0.0"), f"{first}x")
        for container in (one, two, three):
            container.remove()
        items = collect(seen, is_event("destroy", one.id), is_event("destroy", two.id))
    assert actions(items, one.id) == ["create", "destroy"]
    assert actions(items, two.id) == ["create", "destroy"]
    assert actions(items, three.id) == []
    # watching() has checked that stop() ended a watch() that was waiting for events.


def test_an_engine_that_is_not_there_yet(tmp_path: Path) -> None:
    watcher = EngineEvents(f"unix://{tmp_path}/docker.sock", backoff=(0.05, 0.1))
    with watching(watcher):
        deadline = time.monotonic() + DEADLINE
        while watcher.last_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
    assert watcher.last_error is not None and "docker.sock" in watcher.last_error


@pytest.fixture
def own_engine(harness_root: Path, harness_logs: Path) -> Iterator[PrivateEngine]:
    """A second private engine, restarted by the test (the session's stays undisturbed)."""
    engine = PrivateEngine(harness_root / f"ev{uuid.uuid4().hex[:6]}", harness_logs)
    try:
        engine.start()
        yield engine
    finally:
        engine.stop()


def test_the_watcher_survives_an_engine_restart(
    own_engine: PrivateEngine, standin: Any, registry: Any
) -> None:
    project = f"events{uuid.uuid4().hex[:8]}"
    with closing(own_engine.client()) as client:
        client.images.pull(standin.ref("1.0.0"))
        keeper = _sleeper(client, standin.ref("1.0.0"), project, restart_policy={"Name": "always"})
        keeper.start()
    watcher = EngineEvents(own_engine.host, projects={project}, backoff=(0.1, 0.5))
    with watching(watcher) as seen:
        time.sleep(0.5)
        own_engine.daemon.stop(timeout=30)  # the engine goes away: its containers die
        restarted_at = time.time()
        own_engine.start()
        # The engine starts `always` containers as it boots, maybe before we are back:
        # resuming with `since` replays that start.
        items = collect(seen, is_event("start", keeper.id))
        with closing(own_engine.client()) as client:
            client.containers.get(keeper.id).remove(force=True)
        items += collect(seen, is_event("destroy", keeper.id))

    back = [i for i in items if isinstance(i, Reconnected)]
    assert back, items
    assert "closed the event stream" in back[0].error or "connecting" in back[0].error
    start = next(i for i in items if isinstance(i, ContainerEvent) and i.action == "start")
    assert start.time.timestamp() >= restarted_at - 1
    assert "destroy" in actions(items, keeper.id)


class Relay:
    """A unix socket relayed to the engine's; ``cut()`` drops every connection and refuses
    new ones (the engine, as the watcher sees it, is gone) until ``restore()``."""

    def __init__(self, path: Path, target: str) -> None:
        self.path, self.target = path, target
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._open: list[socket.socket] = []

    def restore(self) -> None:
        self._listener = socket.socket(socket.AF_UNIX)
        self._listener.bind(str(self.path))
        self._listener.listen(16)
        self._acceptor = threading.Thread(target=self._accept, args=(self._listener,), daemon=True)
        self._acceptor.start()

    def cut(self) -> None:
        if self._listener is not None and self._acceptor is not None:
            stop_listening(self._listener, self._acceptor, timeout=10)
            self.path.unlink(missing_ok=True)
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.target)
            self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def test_what_happened_while_away_is_replayed(
    docker_engine: PrivateEngine, docker_client: docker.DockerClient, standin: Any, tmp_path: Path
) -> None:
    relay = Relay(tmp_path / "relay.sock", str(docker_engine.socket))
    relay.restore()
    project = f"events{uuid.uuid4().hex[:8]}"
    watcher = EngineEvents(f"unix://{relay.path}", projects={project}, backoff=(0.1, 0.2))
    try:
        with watching(watcher) as seen:
            first = _sleeper(docker_client, standin.ref("1.0.0"), project)
            collect(seen, is_event("create", first.id))
            relay.cut()  # the watcher loses the engine, which carries on
            deadline = time.monotonic() + DEADLINE
            while watcher.last_error is None and time.monotonic() < deadline:
                time.sleep(0.05)
            first.remove()
            missed = _sleeper(docker_client, standin.ref("1.0.0"), project)
            missed.remove()
            relay.restore()
            items = collect(seen, is_event("destroy", missed.id))
    finally:
        relay.cut()

    back = next(i for i in items if isinstance(i, Reconnected))
    replayed = [i for i in items if isinstance(i, ContainerEvent)]
    assert [(i.container_id, i.action) for i in replayed] == [
        (first.id, "destroy"),
        (missed.id, "create"),
        (missed.id, "destroy"),
    ]
    assert all(i.time < back.time for i in replayed)  # they happened while we were away
    assert back.lost_at < replayed[0].time
