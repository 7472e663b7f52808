"""A target's restic repository, from its ``backup.remote`` settings and restic's environment."""

from __future__ import annotations

from collections.abc import Callable

from rollhook.targets import Target
from workers import procs
from workers.backup.remote import RemoteConfig, Repository
from workers.context import WorkerContext
from workers.errors import OperatorError


def repository_for(
    ctx: WorkerContext,
    target: Target,
    *,
    on_spawn: Callable[[procs.ProcessGroup], None] | None = None,
) -> Repository:
    """Raises OperatorError when the target has no repository or no password file."""
    remote = target.backup.remote
    if remote is None:
        raise OperatorError(f"targets.{target.name}.backup.remote is not set: no repository")
    password = remote.password_file or ctx.restic_password_file
    if password is None:
        raise OperatorError(
            f"targets.{target.name}.backup.remote.password_file: not set, and "
            "RESTIC_PASSWORD_FILE is not in the environment"
        )
    config = RemoteConfig(
        repository=remote.repository,
        password_file=password,
        env=ctx.restic_env,
        options=remote.options,
        cache_dir=ctx.data_dir / "cache" / "restic",
    )
    return Repository(config, on_spawn=on_spawn)
