"""Helpers for the web process's tests: a real uvicorn on loopback, signed requests, payloads."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy import Engine, func, select, update

from rollhook.ids import new_id
from rollhook.jobs import Job, Trigger
from rollhook.records import db, deployments
from rollhook.records.schema import deployments as deployments_table
from rollhook.records.schema import events, jobs
from rollhook.settings import Settings
from service.app import create_app
from service.signatures import hub_signature
from tests.harness.ports import free_port, wait_for_port

PAYLOADS = Path(__file__).parent / "payloads"  # verbatim copies, see SOURCES.md there
GITHUB_SECRET = "gh-secret-Zq81-vN3w"
GITLAB_TOKEN = "gl-token-Xy72-kP8s"
REGISTRY_TOKEN = "reg-token-Wv63-jR5t"
DOCKERHUB_TOKEN = "hub-token-Ut54-hQ2m"
HARBOR_TOKEN = "harbor-token-Ts45"
API_TOKEN = "api-token-Sr36-gL9x"
METRICS_TOKEN = "metrics-token-Qp27"
SECRETS = (GITHUB_SECRET, GITLAB_TOKEN, REGISTRY_TOKEN, DOCKERHUB_TOKEN, HARBOR_TOKEN, API_TOKEN)

TARGETS_YAML = """
targets:
  hello:
    repo: https://github.com/Codertocat/Hello-World.git
    branch: master
    project: hello
    service: web
  infra:
    repo: git@github.com:acme/llm-infra.git
    branch: main
    path: environments/prod/anything-llm
    project: infra
    service: anything-llm
    images: [mintplexlabs/anythingllm, ghcr.io/acme/anythingllm]
    tags: "glob:1.*"
  infra-staging:
    repo: https://github.com/acme/llm-infra
    branch: main
    path: environments/staging
    project: infra-staging
    service: anything-llm
  diaspora:
    repo: http://example.com/mike/diaspora.git
    branch: master
    project: diaspora
    service: web
  gitea:
    repo: http://localhost:3000/gitea/webhooks.git
    branch: develop
    project: gitea
    service: web
  hub:
    repo: https://github.com/acme/hub.git
    project: hub
    service: web
    images: [svendowideit/testhook]
  harbor:
    repo: https://github.com/acme/harbor.git
    project: harbor
    service: web
    images: [hub.harbor.com/test-webhook/debian]
    tags: "exact:latest"
  registry:
    repo: https://github.com/acme/registry.git
    project: registry
    service: web
    images: [registrycluster.local/library/test]
    tags: "semver:>=1.0,<2"
  ghcr:
    repo: https://github.com/acme/ghcr.git
    project: ghcr
    service: web
    images: [ghcr.io/codertocat/hello-world]
  frozen:
    repo: https://github.com/acme/frozen.git
    branch: main
    project: frozen
    service: web
    images: [docker.io/acme/frozen]
"""


def make_settings(root: Path, **overrides: Any) -> Settings:
    config = root / "rollhook.yml"
    if not config.exists():
        config.write_text(TARGETS_YAML)
    values: dict[str, Any] = {
        "config": config,
        "data_dir": root / "data",
        "github_secret": GITHUB_SECRET,
        "gitlab_token": GITLAB_TOKEN,
        "registry_token": REGISTRY_TOKEN,
        "dockerhub_token": DOCKERHUB_TOKEN,
        "harbor_token": HARBOR_TOKEN,
        "api_token": API_TOKEN,
    }
    return Settings(**(values | overrides))


class Served:
    """create_app(settings) under a real uvicorn on 127.0.0.1, in a thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self.port = free_port()
        # proxy_headers off: ROLLHOOK_TRUSTED_PROXIES alone decides whose X-Forwarded-For
        # counts (uvicorn's own default trusts loopback peers, which every test client is).
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            proxy_headers=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.url, timeout=15)
        self.records: Engine = db.make_engine(settings.records_url())

    def start(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the web process did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(30)
        self.records.dispose()

    # -- requests ---------------------------------------------------------------------

    def github(
        self, body: bytes, event: str = "push", delivery: str | None = None, **headers: str
    ) -> httpx.Response:
        sent = {
            "content-type": "application/json",
            "x-github-event": event,
            "x-github-delivery": delivery or unique("gh"),
            "x-hub-signature-256": hub_signature(GITHUB_SECRET.encode(), body),
        } | {k.replace("_", "-"): v for k, v in headers.items()}
        return self.client.post("/hooks/github", content=body, headers=sent)

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {API_TOKEN}"} | kwargs.pop("headers", {})
        return self.client.request(method, path, headers=headers, **kwargs)

    # -- what the records say, read through a connection of our own ---------------------

    def event_count(self) -> int:
        with self.records.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(events)).scalar_one())

    def jobs_of(self, event_id: str) -> list[dict[str, Any]]:
        with self.records.connect() as conn:
            rows = conn.execute(select(jobs).where(jobs.c.event_id == event_id))
            return [dict(r._mapping) for r in rows]


@contextlib.contextmanager
def bare_uvicorn(root: Path, **env: str) -> Iterator[tuple[str, Path]]:
    """The web process as README's shortest command starts it, uvicorn's defaults and all
    (proxy headers on, trusting loopback): yields its URL and its log file."""
    config = root / "rollhook.yml"
    config.write_text(TARGETS_YAML)
    port = free_port()
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ROLLHOOK_") and k != "FORWARDED_ALLOW_IPS"
    } | {
        "ROLLHOOK_CONFIG": str(config),
        "ROLLHOOK_DATA_DIR": str(root / "data"),
        "ROLLHOOK_GITHUB_SECRET": GITHUB_SECRET,
        "ROLLHOOK_API_TOKEN": API_TOKEN,
        "ROLLHOOK_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # down: not needed here
        **env,
    }
    log_path = root / "web.log"
    argv = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app"]
    argv += ["--port", str(port), "--log-level", "debug"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, env=environ, stdout=log, stderr=subprocess.STDOUT, cwd=root)
        try:
            wait_for_port(port, timeout=30)
            yield f"http://127.0.0.1:{port}", log_path
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


def add_deployment(served: Served, target: str, status: str, **values: Any) -> str:
    """A finished deployment record, as a worker would have left it."""
    trigger = Trigger(source="api", event_id=new_id("e"))
    job = Job(id=new_id("j"), target=target, trigger=trigger, received_at=datetime.now(UTC))
    start = datetime.now(UTC) - timedelta(seconds=90)
    with served.records.begin() as conn:
        deployment_id = deployments.create_queued(conn, job)
        conn.execute(
            update(deployments_table)
            .where(deployments_table.c.id == deployment_id)
            .values(
                status=status,
                started_at=start,
                finished_at=start + timedelta(seconds=42),
                lease_token=7,
                steps=[{"name": "sync", "outcome": "ok"}],
                log="pulled\napplied\n",
                **values,
            )
        )
    return deployment_id


_counter = iter(range(1, 10**9))


def unique(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns()}-{next(_counter)}"


def payload(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((PAYLOADS / name).read_text())
    return document


def fresh_push() -> bytes:
    """GitHub's sample push with a head commit of its own: every real push differs, and
    the same signed body twice is one event whatever its delivery id."""
    return encode(payload("github-push.json") | {"head_commit": {"id": unique("c")}})


def raw(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


def encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


def wait_for(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
