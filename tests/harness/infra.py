"""A typical infra repository for anything-llm, using the stand-in image.

``environments/prod/anything-llm/`` holds ``docker-compose.yml`` and its compose ``.env``
(interpolation only: the port). The relative bind mounts ``./storage`` and ``./.env``
resolve against the compose project directory, which is rollhook's stable per-target
directory, so every deployment sees the same data.
"""

from __future__ import annotations

import yaml

INFRA_PATH = "environments/prod/anything-llm"
SERVICE = "anything-llm"


def compose_file(
    image: str,
    *,
    service: str = SERVICE,
    restart: str = "unless-stopped",
    healthcheck: bool = False,
    environment: dict[str, str] | None = None,
    volumes: bool = True,
    init: bool = False,
) -> str:
    """docker-compose.yml text for the stand-in: host network, loopback port from .env.

    ``healthcheck`` adds a fast compose healthcheck (wget of /api/ping), which makes
    ``compose up --wait`` wait for the app rather than for the container start.
    ``volumes=False`` keeps the storage inside the container (a service whose data lives
    elsewhere, as start-first needs); ``init`` puts Docker's init in front as PID 1.
    """
    spec: dict[str, object] = {
        "image": image,
        "network_mode": "host",
        "restart": restart,
        "environment": {
            "SERVER_PORT": "${SERVER_PORT}",
            "STORAGE_DIR": "/app/server/storage",
            **(environment or {}),
        },
        "volumes": ["./storage:/app/server/storage", "./.env:/app/server/.env"],
        "stop_grace_period": "10s",
    }
    if not volumes:
        del spec["volumes"]
    if init:
        spec["init"] = True
    if healthcheck:
        spec["healthcheck"] = {
            "test": [
                "CMD",
                "wget",
                "-q",
                "-O",
                "/dev/null",
                "http://127.0.0.1:${SERVER_PORT}/api/ping",
            ],
            "interval": "1s",
            "timeout": "2s",
            "retries": 60,
        }
    return yaml.safe_dump({"services": {service: spec}}, sort_keys=False)


def infra_files(
    image: str,
    port: int,
    *,
    path: str = INFRA_PATH,
    service: str = SERVICE,
    restart: str = "unless-stopped",
    healthcheck: bool = False,
    environment: dict[str, str] | None = None,
    volumes: bool = True,
    init: bool = False,
) -> dict[str, str | None]:
    """Files for ``InfraRepo.commit``: the compose file and its compose .env under ``path``."""
    compose = compose_file(
        image,
        service=service,
        restart=restart,
        healthcheck=healthcheck,
        environment=environment,
        volumes=volumes,
        init=init,
    )
    return {f"{path}/docker-compose.yml": compose, f"{path}/.env": f"SERVER_PORT={port}\n"}
