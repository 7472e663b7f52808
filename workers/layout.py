"""Where one target's files live under the data directory, and the compose spec built from them.

```
targets/<name>/mirror.git         bare clone of the infra repo
targets/<name>/releases/<sha>/    the target's folder exported at that commit
targets/<name>/deployments/<id>/  override.yml: digests and labels of one deployment
targets/<name>/work/              the stable project directory (./storage, ./.env)
backups/<name>/<backup id>/       data backups
stage/<name>/                     the data staged for off-host snapshots (workers/backup/staging.py)
drills/<name>/                    a restore drill's scratch directory, while it runs
locks/<name>.lock                 the host lock held while a deployment runs
locks/restic-<hash>.lock          a restic repository's: uploads share it, a prune takes it alone
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rollhook.targets import Target
from workers.compose import ComposeSpec

if TYPE_CHECKING:
    from workers.colours import Colour


@dataclass(frozen=True)
class TargetDirs:
    data_dir: Path
    name: str

    @property
    def root(self) -> Path:
        return self.data_dir / "targets" / self.name

    @property
    def mirror(self) -> Path:
        return self.root / "mirror.git"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def backups(self) -> Path:
        return self.data_dir / "backups" / self.name

    @property
    def stage(self) -> Path:
        return self.data_dir / "stage" / self.name

    @property
    def drills(self) -> Path:
        return self.data_dir / "drills" / self.name

    @property
    def lock(self) -> Path:
        return self.data_dir / "locks" / f"{self.name}.lock"

    def release(self, commit: str) -> Path:
        return self.root / "releases" / commit

    def override(self, deployment_id: str) -> Path:
        return self.root / "deployments" / deployment_id / "override.yml"


def compose_spec(
    target: Target,
    dirs: TargetDirs,
    commit: str,
    deployment_id: str | None,
    colour: Colour | None = None,
) -> ComposeSpec:
    """The compose invocation for a release, with a deployment's override when given.

    Behind the proxy, ``${ROLLHOOK_PORT}`` is ``proxy.port``; a start-first ``colour``
    runs as its own project on its own port.
    """
    release = dirs.release(commit)
    files = [release / target.compose_file]
    if deployment_id is not None:
        files.append(dirs.override(deployment_id))
    compose_env = release / ".env"
    env_files = ([compose_env] if compose_env.is_file() else []) + list(target.env_files)
    port = target.proxy.port if target.proxy is not None else None
    return ComposeSpec(
        project=colour.project if colour is not None else target.project,
        project_dir=dirs.work,
        files=files,
        env_files=env_files,
        release_dir=release,
        port=colour.port if colour is not None else port,
    )
