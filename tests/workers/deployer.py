"""A target wired to the real harness, driven through the worker's own entry points.

Tests queue requests the way the intake does (a stored event, a claimed job, a queued
deployment) and run the target with ``run_target`` in-process, so they exercise the
lease, the coalescing, the pipeline and the records exactly as a worker would.
"""

from __future__ import annotations

import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine

from rollhook.events import NewEvent
from rollhook.ids import new_id
from rollhook.images import parse_reference
from rollhook.jobs import ImageHint, Job, Trigger
from rollhook.records import deployments, events, jobs
from rollhook.records import sync as sync_records
from rollhook.records import targets as target_records
from rollhook.records.deployments import DeploymentRecord
from rollhook.records.targets import TargetState
from rollhook.targets import Target
from tests.harness import INFRA_PATH, SERVICE, free_port, infra_files
from tests.harness.caddy import CaddyProxy
from tests.harness.ports import free_port_pair
from workers.compose import find_compose
from workers.context import WorkerContext
from workers.layout import TargetDirs
from workers.proxy.config import loopback
from workers.runner import run_target


class Deployer:
    def __init__(
        self,
        root: Path,
        records: Engine,
        *,
        repo: Any,
        docker_host: str,
        standin: Any,
        registry_host: str,
        health: dict[str, Any] | None = None,
        backup: dict[str, Any] | None = None,
        lease_seconds: float = 30.0,
        images: list[str] | None = None,
        proxy: CaddyProxy | None = None,
        hold: float = 60.0,
        compose: dict[str, Any] | None = None,
        **target: Any,
    ) -> None:
        self.root, self.repo, self.standin = root, repo, standin
        start_first = target.get("strategy") == "start-first"
        self.port = free_port_pair() if start_first else free_port()
        # Behind the proxy, each deployer routes a target of its own on the session's proxy.
        self.name = f"llm{uuid.uuid4().hex[:6]}" if proxy is not None else "llm"
        self.caddy, self.listen = proxy, None
        if proxy is not None:
            self.listen = f"127.0.0.1:{free_port()}"
            target["proxy"] = {"listen": self.listen, "port": self.port, "hold": hold}
        # Options of the committed compose file (tests.harness.infra.compose_file).
        self.compose = compose or {}
        self.target = Target(
            name=self.name,
            repo=repo.url,
            branch="main",
            path=INFRA_PATH,
            project=f"rh{uuid.uuid4().hex[:10]}",
            service=SERVICE,
            images=images or [f"{registry_host}/acme/anythingllm"],
            health={
                "url": f"http://127.0.0.1:{self.port}/api/ping",
                "timeout": 20,
                "settle": 1,
                "interval": 0.2,
                **(health or {}),
            },
            **({} if start_first else {"backup": backup or {"keep": 3}}),
            **target,
        )
        self.records = records
        with self.records.begin() as conn:
            target_records.ensure(conn, [self.name])
            sync_records.ensure(conn, [self.name])
        self.sent: list[tuple[str, list[Any]]] = []
        self.ctx = WorkerContext(
            records=self.records,
            data_dir=root / "data",
            targets={self.name: self.target},
            docker_host=docker_host,
            lease_seconds=lease_seconds,
            send=lambda task, args: self.sent.append((task, args)),
            compose_argv=find_compose(),
            proxy_dir=proxy.layout.root if proxy is not None else None,
        )
        if proxy is not None and self.listen is not None:
            # What `rollhook proxy` does for every target with proxy when it starts.
            with proxy.driver() as driver:
                driver.route(self.name, self.listen, [], loopback(self.port), hold)
        self.dirs = TargetDirs(self.ctx.data_dir, self.name)
        self.docker_host = docker_host

    # -- driving --------------------------------------------------------------------

    def commit(
        self,
        tag: str,
        message: str = "deploy",
        signing: tuple[str, ...] = (),
        *,
        image: str | None = None,
        **files: str | None,
    ) -> str:
        """Commit the stand-in at ``tag`` (or any ``image`` reference) and ``files``."""
        content = infra_files(image or self.standin.ref(tag), self.port, **self.compose)
        content.update(files)
        sha: str = self.repo.commit(content, message=message, signing=signing)
        return sha

    def queue(
        self,
        *,
        source: str = "github",
        ref: str | None = None,
        image: str | None = None,
        action: str = "deploy",
        rollback_to: str | None = None,
        restore_data: bool | None = None,
        manual: bool = False,
        actor: str | None = None,
        force: bool = False,
    ) -> str:
        hint = None
        if image is not None:
            parsed = parse_reference(image)
            hint = ImageHint(repository=parsed.name, tag=parsed.tag)
        event_id = new_id("e")
        now = datetime.now(UTC)
        job = Job(
            id=new_id("j"),
            target=self.name,
            action=action,  # type: ignore[arg-type]
            trigger=Trigger(
                source=source,  # type: ignore[arg-type]
                event_id=event_id,
                delivery_id=f"dl-{event_id}",
                actor=actor,
            ),
            received_at=now,
            ref=ref,
            image=hint,
            rollback_to=rollback_to,
            restore_data=restore_data,
            manual=manual,
            force=force,
        )
        with self.records.begin() as conn:
            events.store_batch(
                conn, [NewEvent(event_id, source, f"test:{event_id}", "push", {}, now, jobs=[job])]
            )
            assert jobs.claim(conn, job.id)
            deployment_id = deployments.create_queued(conn, job)
        return deployment_id

    def run(self) -> None:
        run_target(self.ctx, self.name)

    def deploy(self, **queue: Any) -> DeploymentRecord:
        deployment_id = self.queue(**queue)
        self.run()
        return self.record(deployment_id)

    # -- looking ----------------------------------------------------------------------

    def record(self, deployment_id: str) -> DeploymentRecord:
        with self.records.begin() as conn:
            record = deployments.get(conn, deployment_id)
        assert record is not None
        return record

    def state(self) -> TargetState:
        with self.records.begin() as conn:
            state = target_records.get(conn, self.name)
        assert state is not None
        return state

    def app_version(self) -> str | None:
        """What the app on the port says it is, or None when nothing serves."""
        try:
            ping = httpx.get(f"http://127.0.0.1:{self.port}/api/ping", timeout=2)
            if ping.status_code != 200:
                return None
            metrics = httpx.get(f"http://127.0.0.1:{self.port}/api/utils/metrics", timeout=2)
        except httpx.HTTPError:
            return None
        version: str = metrics.json()["appVersion"]
        return version

    @property
    def storage(self) -> Path:
        return self.dirs.work / "storage"

    def schema(self) -> int:
        return int((self.storage / "schema_version").read_text())

    @property
    def url(self) -> str:
        """Where users reach the app: through the proxy when it has one."""
        return f"http://{self.listen or f'127.0.0.1:{self.port}'}"

    def down(self) -> None:
        projects = [self.target.project]
        if self.target.strategy == "start-first":
            projects.append(f"{self.target.project}-green")
        for project in projects:
            subprocess.run(
                [*find_compose(), "-p", project, "down", "--timeout", "2"],
                env={"DOCKER_HOST": self.docker_host, "PATH": "/usr/bin:/bin"},
                capture_output=True,
                check=False,
                timeout=120,
            )
        if self.caddy is not None:
            with self.caddy.driver() as driver:
                driver.remove(self.name)
