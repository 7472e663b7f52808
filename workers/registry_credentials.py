"""Registry credentials the way the Docker client keeps them: the host's ``docker login``.

rollhook asks registries with the same credentials the engine's own client uses, read from
the Docker client config (``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``):

- ``credHelpers`` (per registry) and ``credsStore`` (every registry) name a
  ``docker-credential-<helper>`` program, asked with ``get`` and the server address on
  stdin, as the Docker CLI does; with ``credsStore`` set, the inline entries are ignored,
  as the Docker CLI ignores them;
- otherwise ``auths``: base64 ``auth`` ("user:password"), ``username``/``password``, or
  an ``identitytoken`` (an OAuth refresh token, for the registry's token service).

Docker Hub's credentials live under ``https://index.docker.io/v1/``. Secrets never appear
in a message or a repr.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers import procs
from workers.errors import InfrastructureError, OperatorError

HUB_SERVER = "https://index.docker.io/v1/"  # where `docker login` keeps Docker Hub's credentials
HUB_NAMES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
_HELPER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_NOT_FOUND = re.compile(r"credentials not found|not found in native keychain", re.IGNORECASE)
# A helper's Username when its Secret is an identity token, not a password.
IDENTITY_TOKEN_USER = "<token>"  # noqa: S105 - a marker, not a secret


@dataclass(frozen=True)
class Credentials:
    """Who to be at one registry: a user and password, or an identity token."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)

    @property
    def secrets(self) -> list[str]:
        """Everything to scrub from a message."""
        return [s for s in (self.password, self.identity_token) if s]


def config_dir() -> Path:
    """The Docker client's config folder: ``$DOCKER_CONFIG`` or ``~/.docker``."""
    return Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")


def server_key(name: str) -> str:
    """A registry as the config's keys name it: ``https://x:5000/v1/`` -> ``x:5000``."""
    text = name.strip().lower()
    for scheme in ("https://", "http://"):
        text = text.removeprefix(scheme)
    host = text.split("/", 1)[0]
    return "docker.io" if host in HUB_NAMES else host


class DockerCredentials:
    """Credentials per registry from one Docker client config; the file is read once."""

    def __init__(self, directory: Path | None = None, *, helper_timeout: float = 15.0) -> None:
        self.path = (directory or config_dir()) / "config.json"
        self.helper_timeout = helper_timeout
        self._config: dict[str, Any] | None = None

    def lookup(self, registry: str) -> Credentials | None:
        """The credentials for ``registry`` (``docker.io`` or ``host[:port]``), or None."""
        config = self._read()
        key = server_key(registry)
        server = HUB_SERVER if key == "docker.io" else key
        helpers = config.get("credHelpers") or {}
        helper = next((h for name, h in helpers.items() if server_key(name) == key), None)
        helper = helper or config.get("credsStore")
        if helper:
            return self._ask_helper(str(helper), server)
        auths = config.get("auths") or {}
        entry = next((e for name, e in auths.items() if server_key(name) == key), None)
        return _inline(entry, self.path) if isinstance(entry, dict) else None

    def _read(self) -> dict[str, Any]:
        if self._config is None:
            try:
                data = json.loads(self.path.read_text())
            except FileNotFoundError:
                data = {}
            except (OSError, ValueError) as exc:
                raise OperatorError(f"cannot read the Docker client config {self.path}") from exc
            self._config = data if isinstance(data, dict) else {}
        return self._config

    def _ask_helper(self, helper: str, server: str) -> Credentials | None:
        if not _HELPER_NAME.match(helper):
            raise OperatorError(f"{self.path}: {helper!r} is not a credential helper name")
        program = f"docker-credential-{helper}"
        # procs.run gives the child no stdin: a shell hands it the server address instead
        # (arguments only, nothing interpolated into the script).
        script = 'printf "%s" "$1" | exec "$0" get'
        result = procs.run(
            ["sh", "-c", script, program, server],
            env=procs.child_env(),
            timeout=self.helper_timeout,
        )
        out = result.stdout.decode(errors="replace").strip()
        if result.returncode == 127:
            raise OperatorError(
                f"{program} (named in {self.path}) is not installed: install it, or log in "
                "again with `docker login` without a credential store"
            )
        if result.returncode != 0:
            if _NOT_FOUND.search(out) or _NOT_FOUND.search(result.stderr.decode(errors="replace")):
                return None  # not logged in there: anonymous, as the Docker CLI would be
            raise OperatorError(
                f"{program} could not give the credentials for {server} "
                f"(exit code {result.returncode}); check it with `{program} list`"
            )
        try:
            answer = json.loads(out)
            username, secret = str(answer.get("Username") or ""), str(answer["Secret"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InfrastructureError(f"{program} answered something that is not JSON") from exc
        if username == IDENTITY_TOKEN_USER:
            return Credentials(identity_token=secret)
        return Credentials(username, secret)


def _inline(entry: dict[str, Any], path: Path) -> Credentials | None:
    if token := entry.get("identitytoken"):
        return Credentials(username=str(entry.get("username") or ""), identity_token=str(token))
    if encoded := entry.get("auth"):
        try:
            pair = base64.b64decode(str(encoded), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise OperatorError(f"{path}: an `auth` entry is not base64 of user:password") from exc
        username, sep, password = pair.partition(":")
        if not sep:
            raise OperatorError(f"{path}: an `auth` entry is not base64 of user:password")
        return Credentials(username, password)
    if entry.get("username") and entry.get("password"):
        return Credentials(str(entry["username"]), str(entry["password"]))
    return None
