"""What ``rollhook init`` proposes for one running compose project: pure functions over
Compose's own model of it (``docker compose config --no-interpolate``) and what runs.

The files written for Git must deploy exactly what runs, or the first deployment would
restart the app for nothing; and they must hold no secret. So the proposal:

- keeps Compose's normalised model, whose paths are already absolute: a relative
  ``./storage`` of the hand-started project becomes ``/opt/llm/storage``, the same data,
  while rollhook runs the project from its own directory;
- makes every ``image:`` pinnable: ``mintplexlabs/anythingllm:${ANYTHING_LLM_TAG}``, the tag
  that runs now in the compose ``.env``;
- moves what looks secret out of the folder: literal ``environment:`` values under a
  secret-like name become ``${NAME}`` references, and those values, with the project's
  interpolation variables of such names, go to a host env file (``env_files``, never in
  Git). Other interpolation variables go to the compose ``.env``. Container ``env_file:``
  entries stay host paths and are never read;
- picks the service to gate (a known image, else one with published ports) and guesses
  its health URL from the ports and the image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

SECRET_NAME = re.compile(
    r"SECRET|TOKEN|PASSW|PWD|_KEY$|^KEY$|KEY_|SALT|CREDENTIAL|PRIVATE|AUTH|COOKIE|DSN",
    re.IGNORECASE,
)

# Known images: (repository's last part, container port, health path).
KNOWN_IMAGES = {
    "anythingllm": (3001, "/api/ping"),
    "grafana": (3000, "/api/health"),
    "gitea": (3000, "/api/healthz"),
    "vaultwarden": (80, "/alive"),
    "n8n": (5678, "/healthz"),
    "open-webui": (8080, "/health"),
    "uptime-kuma": (3001, "/"),
    "nginx": (80, "/"),
}


@dataclass
class Proposal:
    project: str
    service: str
    compose: dict[str, Any]  # the model to write as docker-compose.yml
    compose_env: dict[str, str]  # the compose .env, in Git
    host_env: dict[str, str]  # secrets, to a host env file listed in env_files
    images: list[str]  # repositories of the gated service, for registry pushes
    health_url: str | None
    sources: list[str]  # what backups will copy (volumes and bind mounts of the service)
    notes: list[str] = field(default_factory=list)

    @property
    def moved(self) -> list[str]:
        return sorted(self.host_env)


def looks_secret(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


def parse_dotenv(text: str) -> dict[str, str]:
    """KEY=VALUE lines as Compose reads its ``.env`` (comments, ``export``, quotes)."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key.strip()] = value
    return values


def _variable(service: str, suffix: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", f"{service}_{suffix}".upper()).strip("_")


def _split_image(image: str) -> tuple[str, str | None, str | None]:
    """(repository as written, tag, digest); the tag None when the line has none."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :], digest or None
    return name, None, digest or None


def _known(image: str) -> tuple[int, str] | None:
    repository = _split_image(image)[0].rsplit("/", 1)[-1].lower()
    return KNOWN_IMAGES.get(repository)


def gated_service(services: dict[str, Any]) -> str:
    """A known image first, then a service with published ports, then the first one."""
    names = sorted(services)
    for name in names:
        if _known(str(services[name].get("image") or "")):
            return name
    for name in names:
        if services[name].get("ports"):
            return name
    return names[0]


def health_url(service: dict[str, Any]) -> str | None:
    """From the service's ports (as interpolated) and its image: where it answers."""
    known = _known(str(service.get("image") or ""))
    container_port, path = known or (None, "/")
    host_network = service.get("network_mode") == "host"
    for port in service.get("ports") or []:
        target = int(port.get("target", 0))
        if container_port is None or target == container_port:
            published = str(port.get("published") or "").split("-")[0]
            if not published:
                continue
            host = port.get("host_ip") or "127.0.0.1"
            host = "127.0.0.1" if host in {"0.0.0.0", "::"} else host  # noqa: S104 (a wildcard, read)
            return f"http://{host}:{published}{path}"
    if host_network and container_port is not None:
        env = service.get("environment") or {}
        port_value = env.get("SERVER_PORT") or env.get("PORT") or container_port
        return f"http://127.0.0.1:{port_value}{path}"
    return None


def _sources(service: dict[str, Any], volumes: dict[str, Any], project: str) -> list[str]:
    found = []
    for mount in service.get("volumes") or []:
        if mount.get("type") == "bind":
            found.append(f"bind {mount['source']} -> {mount['target']}")
        elif mount.get("type") == "volume" and mount.get("source"):
            declared = volumes.get(mount["source"]) or {}
            name = declared.get("name") or f"{project}_{mount['source']}"
            found.append(f"volume {name} -> {mount['target']}")
    return found


def propose(
    project: str,
    model: dict[str, Any],
    interpolated: dict[str, Any],
    variables: dict[str, str],
    running_images: dict[str, str],
) -> Proposal:
    """The proposal for one project.

    ``model``: ``compose config --no-interpolate`` (written to Git, transformed);
    ``interpolated``: ``compose config`` (read only: ports, images as they resolve);
    ``variables``: the project's interpolation variables (its ``.env``);
    ``running_images``: service -> the image reference its container was created from.
    """
    services: dict[str, Any] = {k: dict(v) for k, v in (model.get("services") or {}).items()}
    resolved: dict[str, Any] = interpolated.get("services") or {}
    compose_env: dict[str, str] = {}
    host_env: dict[str, str] = {}
    notes: list[str] = []
    for key, value in variables.items():
        (host_env if looks_secret(key) else compose_env)[key] = value

    for name, service in services.items():
        if "build" in service:
            if not service.get("image"):
                raise ValueError(
                    f"service {name} is built here and has no image: rollhook deploys "
                    "images, it never builds"
                )
            del service["build"]
            notes.append(f"{name}: dropped build: (rollhook deploys images and never builds)")
        image = str(service.get("image") or "")
        running = running_images.get(name) or str((resolved.get(name) or {}).get("image") or "")
        repository, tag, digest = _split_image(image)
        if image and "${" not in image and not digest:
            variable = _variable(name, "tag")
            running_tag = _split_image(running)[1] if running else None
            compose_env[variable] = running_tag or tag or "latest"
            service["image"] = f"{repository}:${{{variable}}}"
            if compose_env[variable] == "latest":
                notes.append(f"{name}: runs the floating tag latest; pin a version in {variable}")
        environment = service.get("environment") or {}
        for key, value in list(environment.items()):
            if value is None or "$" in str(value) or not looks_secret(key):
                continue
            variable = key if host_env.get(key, value) == value else _variable(name, key)
            host_env[variable] = str(value)
            environment[key] = f"${{{variable}}}"
        for entry in service.get("env_file") or []:
            path = entry.get("path") if isinstance(entry, dict) else entry
            notes.append(f"{name}: env_file {path} stays on this host (not copied)")

    gated = gated_service(services)
    model_out = {k: v for k, v in model.items() if k != "name"}
    model_out["services"] = services
    gated_resolved = resolved.get(gated) or {}
    repository = _split_image(str(gated_resolved.get("image") or ""))[0]
    return Proposal(
        project=project,
        service=gated,
        compose=model_out,
        compose_env=compose_env,
        host_env=host_env,
        images=[repository] if repository else [],
        health_url=health_url(gated_resolved),
        sources=_sources(services[gated], model.get("volumes") or {}, project),
        notes=notes,
    )
