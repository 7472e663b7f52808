"""rollhook's own image (the Dockerfile), built and run on the private engine.

No base image can be pulled here: the base is Debian made by debootstrap from this
machine's apt mirror (``tests/harness/debian.py``, cached across runs), and the Dockerfile
is built FROM it through its ``BASE`` build argument. The image then runs as
``deploy/rollhook.compose.yml`` runs it: ``rollhook up`` (web, worker, beat) on the host's
network, the data directory and the engine's socket mounted at the same paths inside and
out, and it deploys the stand-in from a signed push.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
import yaml
from docker.models.containers import Container

from tests.harness import INFRA_PATH, SERVICE, free_port, infra_files
from tests.harness.debian import base_tarball, build_image, configured_mirror, import_base
from tests.harness.engine import PrivateEngine
from tests.stack import SECRETS, Stack

# A cold run makes the base first (debootstrap): minutes, inside the first test's setup.
pytestmark = [pytest.mark.slow, pytest.mark.engine, pytest.mark.timeout(1800)]

BASE = "rollhook-base:bookworm"
IMAGE = "rollhook:test"


@pytest.fixture(scope="module")
def image(docker_engine: PrivateEngine, docker_client: docker.DockerClient) -> str:
    """The Dockerfile built FROM the debootstrap base; how long each part took is printed
    (``-s``), for the CI budget."""
    started = time.monotonic()
    mirror = configured_mirror()
    tarball = base_tarball(mirror)
    made = time.monotonic()
    import_base(docker_client, tarball, BASE)
    imported = time.monotonic()
    _, build_seconds = build_image(docker_engine.host, IMAGE, {"BASE": BASE, "UV_NATIVE_TLS": "1"})
    print(
        f"\nrollhook image: base from {mirror} {made - started:.0f} s (debootstrap, or the "
        f"cache: {tarball}), import {imported - made:.0f} s, docker build {build_seconds:.0f} s"
    )
    return IMAGE


def run_once(client: docker.DockerClient, *command: str, **options: Any) -> str:
    """Run the image to its end; its output. A non-zero exit raises with the output."""
    output: bytes = client.containers.run(
        IMAGE, list(command), network_mode="host", remove=True, stderr=True, **options
    )
    return output.decode(errors="replace")


def test_the_image_carries_the_cli_and_the_tools_it_drives(
    image: str, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    assert run_once(docker_client, "--version").strip().startswith("rollhook 0.")
    # What rollhook runs: git (sync), restic (off-host backups), caddy (the proxy), the
    # bundled compose.
    tools = run_once(
        docker_client,
        "-c",
        "git --version && restic version && caddy version && "
        '"$(python3 -c "from workers.compose import bundled_compose as b; print(b())")" '
        "version --short",
        entrypoint=["sh"],
    )
    git, restic, caddy, compose_version = tools.splitlines()
    assert git.startswith("git version") and restic.startswith("restic "), tools
    assert caddy.lstrip("v").startswith("2.") and compose_version.startswith("2."), tools
    config = tmp_path / "rollhook.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "targets": {
                    "llm": {
                        "repo": "https://git.example.test/acme/infra.git",
                        "path": INFRA_PATH,
                        "project": "llm",
                        "service": SERVICE,
                        "health": {"url": "http://127.0.0.1:3001/api/ping"},
                    }
                }
            }
        )
    )
    checked = run_once(
        docker_client,
        "check-config",
        volumes={str(config): {"bind": "/etc/rollhook/rollhook.yml", "mode": "ro"}},
        environment={"ROLLHOOK_DATA_DIR": "/tmp/rollhook"},
    )
    assert "llm" in checked, checked
    refused = run_once(
        docker_client,
        "-c",
        "rollhook check-config; echo exit $?",
        entrypoint=["sh"],
        environment={"ROLLHOOK_CONFIG": "/etc/rollhook/missing.yml"},
    )
    assert "ROLLHOOK_CONFIG: cannot read /etc/rollhook/missing.yml" in refused, refused
    assert refused.strip().endswith("exit 3"), refused  # nothing to check: usage


class ImageStack(Stack):
    """The Stack of the end-to-end tests, its processes in containers of the image."""

    def __init__(
        self,
        root: Path,
        config: str,
        env: dict[str, str],
        engine: PrivateEngine,
        *,
        mount_volumes: bool = True,
    ) -> None:
        super().__init__(root, config, env)
        self.engine = engine
        self.mount_volumes = mount_volumes
        self.containers: dict[str, Container] = {}

    def start(self, name: str) -> Any:
        environment = {k: v for k, v in self.env.items() if k not in {"PATH", "HOME"}}
        environment["DOCKER_HOST"] = self.engine.host
        # The same paths inside and out: compose resolves bind mounts on the host.
        mounts = {
            str(self.root): {"bind": str(self.root), "mode": "rw"},
            str(self.engine.socket): {"bind": str(self.engine.socket), "mode": "rw"},
        }
        if self.mount_volumes:  # the engine's named volumes, which backups read
            volumes = str(self.engine.root / "data" / "volumes")
            mounts[volumes] = {"bind": volumes, "mode": "rw"}
        with closing(self.engine.client()) as client:
            container = client.containers.run(
                IMAGE,
                [name, "--host", "127.0.0.1", "--port", str(self.port)],
                name=f"rollhook-{name}-{uuid.uuid4().hex[:8]}",
                detach=True,
                network_mode="host",
                environment=environment,
                volumes=mounts,
            )
        self.containers[name] = container
        return container

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, container in self.containers.items():
                container.reload()
                if container.status == "exited":
                    raise AssertionError(f"{name} exited early:\n{self.log(name)}")
            with suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.5)
        raise AssertionError(f"rollhook's image did not become ready:\n{self.all_logs()}")

    def log(self, name: str) -> str:
        container = self.containers.get(name)
        if container is None:
            return ""
        with suppress(docker.errors.APIError):
            logs: bytes = container.logs()
            return logs.decode(errors="replace")
        return ""

    def all_logs(self) -> str:
        return "\n".join(f"===== {name}\n{self.log(name)}" for name in self.containers)

    def stop(self) -> None:
        for container in self.containers.values():
            with suppress(docker.errors.APIError):
                container.stop(timeout=15)
            with suppress(docker.errors.APIError):
                container.remove(force=True)
        self.containers.clear()
        self.api.close()


@pytest.fixture
def image_stack(
    *,
    request: pytest.FixtureRequest,
    image: str,
    tmp_path: Path,
    git_server: Any,
    standin: Any,
    registry: Any,
    docker_engine: PrivateEngine,
    compose_bin: Path,
) -> Iterator[tuple[ImageStack, Any, int]]:
    repo = git_server.create_repo("image-infra")
    port = free_port()
    project = f"img{uuid.uuid4().hex[:8]}"
    target = {
        "repo": repo.url,
        "branch": "main",
        "path": INFRA_PATH,
        "project": project,
        "service": SERVICE,
        "images": [f"{registry.host}/acme/anythingllm"],
        "health": {
            "url": f"http://127.0.0.1:{port}/api/ping",
            "timeout": "60s",
            "settle": "1s",
            "interval": "0.2s",
        },
        "backup": {"keep": 3},
    }
    config = yaml.safe_dump({"targets": {"llm": target}})
    stack = ImageStack(
        tmp_path,
        config,
        {"ROLLHOOK_NOTIFY_CONSOLE": "true"},
        docker_engine,
        mount_volumes=getattr(request, "param", True),
    )
    try:
        stack.start("up")
        stack.wait_ready()
        yield stack, repo, port
    finally:
        stack.stop()
        subprocess.run(
            [str(compose_bin), "-p", project, "down", "--timeout", "2"],
            env=docker_engine.env({"PATH": "/usr/bin:/bin"}),
            capture_output=True,
            check=False,
            timeout=120,
        )


@pytest.mark.parametrize(
    "image_stack", [True, False], ids=["as-compose-file", "socket-and-data-only"], indirect=True
)
def test_the_image_deploys_a_signed_push(
    image_stack: tuple[ImageStack, Any, int], standin: Any, registry: Any
) -> None:
    """web takes the push, the worker rolls the stand-in out through the mounted engine
    socket, and the app answers on its port: the image is a whole rollhook. Without the
    engine's volumes mounted (an app with bind mounts only needs none), the engine's data
    root is not visible: the free-space check for images is skipped, with a word."""
    stack, repo, port = image_stack
    assert httpx.get(f"{stack.url}/healthz", timeout=5).status_code == 200
    image = standin.ref("1.0.0", "acme/anythingllm", registry_host=registry.host)
    files = infra_files(image, port)
    head = repo.commit(files, message="anything-llm 1.0.0")
    push = {
        "ref": "refs/heads/main",
        "before": "0" * 40,
        "after": head,
        "created": True,
        "deleted": False,
        "forced": False,
        "commits": [{"id": head, "message": "anything-llm 1.0.0", "modified": sorted(files)}],
        "repository": {"full_name": "acme/infra", "clone_url": repo.url},
        "pusher": {"name": "dev"},
    }
    answer = stack.github_push(push, "image-1")
    assert answer.status_code == 202, answer.text
    [deployment] = stack.wait_final(answer.json()["id"], timeout=300)
    assert deployment["status"] == "succeeded", deployment["log"]
    assert deployment["commit"] == head
    unchecked = "free space for images not checked" in deployment["log"]
    assert unchecked is not stack.mount_volumes, deployment["log"]
    ping = httpx.get(f"http://127.0.0.1:{port}/api/utils/metrics", timeout=5)
    assert ping.json()["appVersion"] == "1.0.0"
    # The records and the app's data are on the host, where the mounts put them.
    assert (stack.data_dir / "targets" / "llm" / "work" / "storage").is_dir()
    assert SECRETS["ROLLHOOK_API_TOKEN"] not in stack.all_logs()
