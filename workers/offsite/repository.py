"""A target's restic repository, from its ``backup.remote`` settings and restic's environment,
and the host's lock on it.

restic locks a repository itself: uploads and restores share it, ``forget --prune``
needs it alone, and a restic that finds it taken fails at once (0.14 has no waiting).
Targets of one host often share a repository, so this host's restic runs are ordered
by a flock per repository first (``locks/restic-<hash>.lock``): an upload or a restore
holds it shared and waits while a prune of this host holds it; a prune takes it alone
or not at all (the retention then waits for the next snapshot). Runs from other hosts
are restic's own lock's business.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from rollhook.targets import Target
from workers import procs
from workers.backup.remote import RemoteConfig, Repository
from workers.context import WorkerContext
from workers.errors import InfrastructureError, OperatorError

PRUNE_WAIT = 3600.0  # an upload waits this long at most for this host's prune


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


def lock_path(ctx: WorkerContext, repository: str) -> Path:
    """This host's lock file for a repository (named by a hash: the string may be a URL)."""
    digest = hashlib.sha256(repository.encode()).hexdigest()[:16]
    return ctx.data_dir / "locks" / f"restic-{digest}.lock"


@contextlib.contextmanager
def sharing(path: Path, *, timeout: float = PRUNE_WAIT) -> Iterator[None]:
    """Hold the repository shared (an upload, a restore), waiting out a prune of this host.

    Raises InfrastructureError when the prune outlasts ``timeout``.
    """
    with _locked(path, fcntl.LOCK_SH, timeout) as taken:
        if not taken:
            raise InfrastructureError(
                f"the repository was being pruned by this host for over {timeout:.0f}s"
            )
        yield


@contextlib.contextmanager
def alone(path: Path) -> Iterator[bool]:
    """Hold the repository alone (a prune) if nobody on this host uses it; yields whether."""
    with _locked(path, fcntl.LOCK_EX, 0.0) as taken:
        yield taken


@contextlib.contextmanager
def _locked(path: Path, mode: int, timeout: float) -> Iterator[bool]:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(path, "a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.5)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
