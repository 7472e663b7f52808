"""The demo's pieces, all local: a registry, a tiny app image, and an infra repo.

Nothing is pulled from the internet. The app image is made here from the host's busybox
(with its libraries when it is not the static build) and an entrypoint script, imported
into the Docker engine and pushed to a registry on 127.0.0.1 (Docker treats loopback
registries as plain HTTP by default). rollhook resolves every image to a digest in its
registry and pulls by digest, so the demo needs a registry: Debian's ``docker-registry``
(CNCF Distribution), run by ``rollhook demo`` next to rollhook's own processes.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
import yaml

REPOSITORY = "rollhook-demo/app"
PROJECT = "rollhook-demo"
SERVICE = "app"
TARGET = "demo"
# tag -> broken: 2.0.0 migrates the data, then cannot start (rollhook rolls it back).
VERSIONS = {"1.0.0": False, "1.1.0": False, "2.0.0": True}
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"

ENTRYPOINT = """#!/bin/sh
# The rollhook demo app: a page with its version and the history of its data (/data).
mkdir -p /data /www/api
now() { date -u +%Y-%m-%dT%H:%M:%SZ; }
echo "$(now) $APP_VERSION started" >> /data/history.log
if [ "$APP_BROKEN" = 1 ]; then
    echo "$(now) $APP_VERSION migrated the data to schema 2" >> /data/history.log
    echo "demo app $APP_VERSION: the migrated data does not load; exiting" >&2
    exit 1
fi
echo ok > /www/api/ping
{ echo "<h1>rollhook demo app $APP_VERSION</h1><pre>"; cat /data/history.log; echo "</pre>"; } \\
    > /www/index.html
echo "demo app $APP_VERSION serving on 127.0.0.1:$PORT"
trap 'exit 0' TERM INT
httpd -f -p "127.0.0.1:$PORT" -h /www &
wait $!
"""


class DemoError(Exception):
    """Something the demo needs is missing here; the message says what to do."""


@dataclass(frozen=True)
class DemoLayout:
    root: Path  # $ROLLHOOK_DATA_DIR/demo

    @property
    def infra(self) -> Path:
        return self.root / "infra"

    @property
    def registry(self) -> Path:
        return self.root / "registry"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def config(self) -> Path:
        return self.root / "rollhook.yml"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def repo_url(self) -> str:
        return self.infra.resolve().as_uri()


# -- the registry ------------------------------------------------------------------------


def registry_command(layout: DemoLayout, port: int) -> list[str]:
    """The argv that serves the demo's registry on 127.0.0.1:port (its config written)."""
    binary = shutil.which("docker-registry") or next(
        (p for p in ("/usr/bin/docker-registry", "/usr/sbin/docker-registry") if Path(p).exists()),
        None,
    )
    if binary is None:
        raise DemoError(
            "the demo needs a local image registry: install Debian's docker-registry "
            "(apt-get install docker-registry; `make demo` does it for you)"
        )
    layout.registry.mkdir(parents=True, exist_ok=True)
    config = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(layout.registry / "storage")}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
    }
    path = layout.registry / "config.yml"
    path.write_text(yaml.safe_dump(config))
    return [binary, "serve", str(path)]


def registry_answers(host: str) -> bool:
    try:
        return httpx.get(f"http://{host}/v2/", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def has_tag(host: str, tag: str) -> bool:
    url = f"http://{host}/v2/{REPOSITORY}/manifests/{tag}"
    try:
        return httpx.head(url, headers={"Accept": MANIFEST}, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


# -- the app image ------------------------------------------------------------------------


def _busybox() -> Path:
    for candidate in (shutil.which("busybox"), "/usr/bin/busybox", "/bin/busybox"):
        if candidate and Path(candidate).is_file():
            return Path(candidate).resolve()
    raise DemoError("the demo app is made from busybox: apt-get install busybox-static")


def _libraries(binary: Path) -> list[Path]:
    """The shared libraries (and loader) a dynamic binary needs; none for a static one."""
    done = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    if done.returncode != 0:  # "not a dynamic executable"
        return []
    found = re.findall(r"(/\S+)", done.stdout)
    return sorted({Path(p) for p in found if Path(p).is_file()})


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def rootfs() -> bytes:
    """busybox, a link per applet, its libraries, and the entrypoint: a tar stream."""
    busybox = _busybox()
    applets = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, mode in (("bin", 0o755), ("tmp", 0o1777), ("etc", 0o755), ("www", 0o755)):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        _add(tar, "bin/busybox", busybox.read_bytes(), 0o755)
        for applet in applets:
            if applet != "busybox":
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
        for library in _libraries(busybox):
            _add(tar, str(library).lstrip("/"), library.read_bytes(), 0o755)
        _add(tar, "etc/passwd", b"root:x:0:0:root:/:/bin/sh\n", 0o644)
        _add(tar, "entrypoint.sh", ENTRYPOINT.encode(), 0o755)
    return buffer.getvalue()


def build_and_push(docker_host: str | None, registry_host: str) -> list[str]:
    """Build the versions the registry does not have yet and push them; what was pushed."""
    missing = [tag for tag in VERSIONS if not has_tag(registry_host, tag)]
    if not missing:
        return []
    tree = rootfs()
    repository = f"{registry_host}/{REPOSITORY}"
    client = docker.DockerClient(base_url=docker_host or "unix:///var/run/docker.sock")
    try:
        for tag in missing:
            changes = [
                'CMD ["/bin/sh", "/entrypoint.sh"]',
                "ENV PATH=/bin",
                f"ENV APP_VERSION={tag}",
                f"ENV APP_BROKEN={int(VERSIONS[tag])}",
                "ENV PORT=8081",
            ]
            client.api.import_image_from_data(tree, repository=repository, tag=tag, changes=changes)
            for line in client.api.push(repository, tag=tag, stream=True, decode=True):
                if "error" in line:
                    raise DemoError(f"pushing {repository}:{tag} failed: {line['error']}")
    finally:
        client.close()
    return missing


# -- the infra repo -----------------------------------------------------------------------

COMPOSE = """# The demo's desired state: rollhook deploys what this folder says, at each commit.
services:
  app:
    image: ${DEMO_REGISTRY}/rollhook-demo/app:${APP_VERSION}
    network_mode: host
    restart: unless-stopped
    environment:
      PORT: ${APP_PORT}
    volumes:
      - ./data:/data          # the app's data: backed up before each deployment
    stop_grace_period: 5s
"""


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False, timeout=60
    )
    if done.returncode != 0:
        raise DemoError(f"git {' '.join(args)} in {repo}: {done.stderr.strip()}")
    return done.stdout.strip()


def create_infra(layout: DemoLayout, registry_host: str, app_port: int) -> bool:
    """The infra repo (a plain git repository, fetched by rollhook as file://); False if
    it exists already (the operator's commits in it are kept)."""
    if (layout.infra / ".git").exists():
        return False
    layout.infra.mkdir(parents=True, exist_ok=True)
    _git(layout.infra, "init", "-q", "-b", "main")
    # Commits in the demo repo need a name: a local one, so no global git config changes.
    _git(layout.infra, "config", "user.name", "rollhook demo")
    _git(layout.infra, "config", "user.email", "demo@rollhook.invalid")
    (layout.infra / "docker-compose.yml").write_text(COMPOSE)
    (layout.infra / ".env").write_text(
        f"APP_VERSION=1.0.0\nAPP_PORT={app_port}\nDEMO_REGISTRY={registry_host}\n"
    )
    _git(layout.infra, "add", "docker-compose.yml", ".env")
    _git(layout.infra, "commit", "-q", "-m", "demo app 1.0.0")
    return True


def head(layout: DemoLayout) -> str:
    return _git(layout.infra, "rev-parse", "HEAD")


def targets_file(layout: DemoLayout, registry_host: str, app_port: int) -> str:
    target: dict[str, Any] = {
        "repo": layout.repo_url,
        "branch": "main",
        "path": ".",
        "project": PROJECT,
        "service": SERVICE,
        "images": [f"{registry_host}/{REPOSITORY}"],
        "health": {
            "url": f"http://127.0.0.1:{app_port}/api/ping",
            "timeout": "30s",
            "settle": "2s",
            "interval": "0.5s",
        },
        "backup": {"keep": 3},
        "stop_timeout": "5s",
    }
    head_comment = "# Written by `rollhook demo`: the demo's one target.\n"
    return head_comment + yaml.safe_dump({"targets": {TARGET: target}}, sort_keys=False)


def load_state(layout: DemoLayout) -> dict[str, int]:
    try:
        state = json.loads(layout.state.read_text())
    except (OSError, ValueError):
        return {}
    return {k: int(v) for k, v in state.items() if isinstance(v, int)}


def save_state(layout: DemoLayout, state: dict[str, int]) -> None:
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.state.write_text(json.dumps(state))
