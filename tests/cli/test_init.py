"""`rollhook init` adopts a stand-in anything-llm started by hand, with no downtime.

The project runs as an operator started it (`docker compose up -d` in its own folder,
a secret written into the compose file). `rollhook init` writes the targets file, the
infra folder and the host env file; the folder is committed; rollhook runs; the first
deployment adopts the project while a client keeps calling it: no failed request, the
same container. A real change afterwards is a recreate, and a rollback returns to the
adopted state.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
import yaml

from tests.cli.upstack import Up
from tests.harness import compose_file, free_port
from workers.compose import find_compose

SECRET = "jwt-secret-written-into-the-compose-file"
PROJECT = "adoptme"


class HandStarted:
    """anything-llm's stand-in, started with `docker compose up -d` in its own folder."""

    def __init__(self, root: Path, image: str, docker_host: str) -> None:
        self.root, self.docker_host = root, docker_host
        self.port = free_port()
        root.mkdir(parents=True)
        service = yaml.safe_load(compose_file(image, environment={"JWT_SECRET": SECRET}))
        # anything-llm's runtime .env beside compose's own .env, as the docs suggest.
        service["services"]["anything-llm"]["volumes"] = [
            "./storage:/app/server/storage",
            "./runtime.env:/app/server/.env",
        ]
        (root / "docker-compose.yml").write_text(yaml.safe_dump(service))
        (root / ".env").write_text(f"SERVER_PORT={self.port}\n")  # compose's .env
        (root / "storage").mkdir()
        (root / "runtime.env").touch()
        self.compose("up", "-d")
        deadline = time.monotonic() + 60
        while not self.ping():
            assert time.monotonic() < deadline, "the hand-started app did not answer"
            time.sleep(0.2)

    def compose(self, *args: str) -> None:
        subprocess.run(
            [*find_compose(), "-p", PROJECT, *args],
            cwd=self.root, env={"DOCKER_HOST": self.docker_host, "PATH": os.environ["PATH"]},
            check=True, capture_output=True, timeout=180,
        )  # fmt: skip

    def ping(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/api/ping", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def version(self) -> str:
        answer = httpx.get(f"http://127.0.0.1:{self.port}/api/utils/metrics", timeout=5)
        version: str = answer.json()["appVersion"]
        return version


class SteadyClient(threading.Thread):
    """Calls the app every 50 ms; counts what failed."""

    def __init__(self, app: HandStarted) -> None:
        super().__init__(daemon=True)
        self.app, self.calls, self.failures = app, 0, 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.calls += 1
            self.failures += 0 if self.app.ping() else 1
            time.sleep(0.05)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)


@pytest.fixture
def hand_started(tmp_path: Path, standin: Any, docker_host: str) -> Iterator[HandStarted]:
    app = HandStarted(tmp_path / "opt" / PROJECT, standin.ref("1.0.0"), docker_host)
    try:
        yield app
    finally:
        app.compose("down", "--timeout", "2")


def container_id(docker_host: str) -> str:
    client = docker.DockerClient(base_url=docker_host)
    try:
        [found] = client.containers.list(filters={"label": f"com.docker.compose.project={PROJECT}"})
        return str(found.id)
    finally:
        client.close()


def test_init_then_the_first_deployment_adopts_without_downtime(
    tmp_path: Path, hand_started: HandStarted, git_server: Any, docker_host: str
) -> None:
    repo = git_server.create_repo("adopted-infra")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "DOCKER_HOST": docker_host}

    def init_cli(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli.main", "init", "--project", PROJECT, "--repo", repo.url,
             "--secrets-dir", str(tmp_path / "secrets"), *extra],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    looked = init_cli("--dry-run")  # the proposal only: nothing written
    assert looked.returncode == 0, looked.stdout + looked.stderr
    assert f"{PROJECT}: gate service anything-llm" in looked.stdout
    assert "/api/ping (200 now)" in looked.stdout
    assert SECRET not in looked.stdout
    assert not any((tmp_path / name).exists() for name in ("rollhook.yml", "infra", "secrets"))
    init = init_cli()
    assert init.returncode == 0, init.stdout + init.stderr
    assert init_cli().returncode == 3  # rollhook.yml exists: --force replaces it
    assert "secrets  JWT_SECRET moved to" in init.stdout

    # What it wrote: a target gated on the ping, secrets on the host only.
    target = yaml.safe_load((tmp_path / "rollhook.yml").read_text())["targets"][PROJECT]
    assert target["service"] == "anything-llm"
    assert target["health"]["url"] == f"http://127.0.0.1:{hand_started.port}/api/ping"
    secrets_file = tmp_path / "secrets" / f"{PROJECT}.env"
    assert target["env_files"] == [str(secrets_file)]
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert f"JWT_SECRET={SECRET}" in secrets_file.read_text()
    folder = tmp_path / "infra" / PROJECT
    files = {p.name: p.read_text() for p in folder.iterdir()}
    assert SECRET not in "".join(files.values())
    assert "${JWT_SECRET}" in files["docker-compose.yml"]
    assert "anythingllm:${ANYTHING_LLM_TAG}" in files["docker-compose.yml"]
    assert "ANYTHING_LLM_TAG=1.0.0" in files[".env"]
    assert str(hand_started.root / "storage") in files["docker-compose.yml"]  # data in place
    repo.commit({f"{PROJECT}/{name}": text for name, text in files.items()}, "adopt")

    before = container_id(docker_host)
    up = Up(
        tmp_path / "rollhook", (tmp_path / "rollhook.yml").read_text(), {"DOCKER_HOST": docker_host}
    )
    client = SteadyClient(hand_started)
    try:
        up.start()
        up.wait_ready()
        cli_env = {**up.env, "ROLLHOOK_URL": up.url}

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "cli.main", *args], env=cli_env,
                capture_output=True, text=True, timeout=300, check=False,
            )  # fmt: skip

        client.start()
        adopted = cli("deploy", PROJECT, "--wait")
        time.sleep(1)
        client.stop()
        assert adopted.returncode == 0, adopted.stdout + adopted.stderr + up.text
        assert f"adopted project {PROJECT}" in adopted.stdout
        assert "nothing restarted" in adopted.stdout
        assert client.calls > 20 and client.failures == 0
        assert container_id(docker_host) == before  # not recreated
        again = cli("deploy", PROJECT, "--wait")  # adopted already: nothing to do
        assert again.returncode == 0, again.stdout + again.stderr
        assert "no_op" in again.stdout
        assert container_id(docker_host) == before

        # A real change is a recreate, with rollhook's labels from then on.
        bumped = files[".env"].replace("ANYTHING_LLM_TAG=1.0.0", "ANYTHING_LLM_TAG=2.0.0")
        repo.commit({f"{PROJECT}/.env": bumped}, "anything-llm 2.0.0")
        upgraded = cli("deploy", PROJECT, "--wait")
        assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
        assert hand_started.version() == "2.0.0"
        assert container_id(docker_host) != before
        # The adoption is a good deployment: a rollback goes back to it.
        back = cli("rollback", PROJECT, "--wait")
        assert back.returncode == 0, back.stdout + back.stderr
        assert hand_started.version() == "1.0.0"
    finally:
        client.stop()
        up.kill()
