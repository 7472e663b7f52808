"""The gated service as its current deployment runs it: where its data is and how to drive it."""

from __future__ import annotations

from dataclasses import dataclass

from rollhook.records import deployments
from rollhook.records import targets as target_records
from rollhook.records.deployments import DeploymentRecord
from rollhook.targets import Target
from workers.backup import Source
from workers.compose import Compose, ComposeSpec
from workers.context import WorkerContext
from workers.engine import DockerEngine
from workers.errors import OperatorError
from workers.layout import TargetDirs, compose_spec
from workers.plan import data_sources, mount_points


@dataclass(frozen=True)
class CurrentService:
    deployment: DeploymentRecord
    spec: ComposeSpec  # the release and override of that deployment
    sources: list[Source]
    mounts: dict[str, str]  # source name -> where the service sees it


def current_deployment(ctx: WorkerContext, target: Target) -> DeploymentRecord | None:
    with ctx.records.begin() as conn:
        state = target_records.get(conn, target.name)
        current = state.current_deployment_id if state else None
        record = deployments.get(conn, current) if current else None
    return record if record is not None and record.commit else None


def current_service(
    ctx: WorkerContext, target: Target, engine: DockerEngine, compose: Compose
) -> CurrentService:
    """Raises OperatorError when rollhook has not deployed the target on this host."""
    record = current_deployment(ctx, target)
    if record is None or record.commit is None:
        raise OperatorError(
            f"{target.name} has not been deployed by rollhook on this host: no data to back up"
        )
    dirs = TargetDirs(ctx.data_dir, target.name)
    spec = compose_spec(target, dirs, record.commit, record.id)
    config = compose.config(spec)
    sources = data_sources(config, target.service, engine.volume_path)
    mounts = mount_points(config, target.service)
    del config  # holds interpolated secrets
    return CurrentService(record, spec, sources, mounts)
