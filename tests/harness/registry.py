"""A local CNCF Distribution registry (Debian's docker-registry 2.8) on 127.0.0.1.

The private engine treats 127.0.0.0/8 registries as insecure (plain HTTP) by default, so
pushes and pulls need no TLS. ``notifying()`` starts a second instance over the same
storage whose notifications go to a URL, as a registry configured for rollhook would.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.harness.ports import free_port
from tests.harness.process import Daemon

MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)


class Registry:
    def __init__(self, root: Path, log_dir: Path) -> None:
        self.root = root
        self.log_dir = log_dir
        self.storage = root / "storage"
        # Both instances must share the upload secret: an upload started on one is valid on
        # the other only if they sign upload state alike.
        self._secret = secrets.token_hex(16)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self._daemons: list[Daemon] = []

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._daemons.append(self._serve("registry", self.port, notifications=None))

    def stop(self) -> None:
        for daemon in self._daemons:
            daemon.stop()
        self._daemons.clear()

    @contextmanager
    def notifying(self, url: str, token: str) -> Iterator[str]:
        """A second registry over the same storage that POSTs its events to ``url``.

        Yields its host ("127.0.0.1:<port>"). Pushes through that host are notified (with
        ``Authorization: Bearer <token>``); pulls are not. Events still queued when the
        block ends are lost, as they are when a real registry restarts.
        """
        port = free_port()
        endpoint = {
            "name": "rollhook",
            "url": url,
            "headers": {"Authorization": [f"Bearer {token}"]},
            "timeout": "2s",
            "threshold": 3,
            "backoff": "1s",
            # Registry 2.x applies ignore.actions only when some media type is ignored too
            # (newIgnoredSink returns early on an empty media type list): name one that
            # never occurs so that pulls are really left out.
            "ignore": {"mediatypes": ["application/x-rollhook-never"], "actions": ["pull"]},
        }
        daemon = self._serve(f"registry-notifying-{port}", port, notifications=endpoint)
        self._daemons.append(daemon)
        try:
            yield f"127.0.0.1:{port}"
        finally:
            daemon.stop()
            self._daemons.remove(daemon)

    def _serve(self, name: str, port: int, notifications: dict[str, Any] | None) -> Daemon:
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
                # No "cache" section: two instances over one storage must not answer from
                # a blob descriptor cache that misses the other's deletes.
            },
            "http": {"addr": f"127.0.0.1:{port}", "secret": self._secret},
        }
        if notifications is not None:
            config["notifications"] = {
                "events": {"includereferences": True},
                "endpoints": [notifications],
            }
        config_path = self.root / f"{name}.yml"
        config_path.write_text(yaml.safe_dump(config))
        binary = shutil.which("docker-registry")
        if binary is None:
            raise RuntimeError("docker-registry is missing: run scripts/install-test-deps.sh")
        daemon = Daemon(name, [binary, "serve", config_path], self.log_dir / f"{name}.log")
        daemon.start()

        def answers() -> bool:
            return httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code == 200

        daemon.wait_until(answers, "registry /v2/", timeout=30)
        return daemon

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The digest the registry serves for repository:reference, or None if unknown."""
        response = httpx.head(
            f"{self.url}/v2/{repository}/manifests/{reference}",
            headers={"Accept": ", ".join(MANIFEST_TYPES)},
            timeout=10,
        )
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.headers["Docker-Content-Digest"]

    def tags(self, repository: str) -> list[str]:
        response = httpx.get(f"{self.url}/v2/{repository}/tags/list", timeout=10)
        if response.status_code == 404:
            return []
        response.raise_for_status()
        return list(response.json().get("tags") or [])
