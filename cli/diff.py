"""``rollhook diff NAME``: what a sync would change, seen on this host.

The commits between what is deployed and the tracked branch's head (with their
messages), the services added or removed, each service's image old -> new, and the
NAMES of the compose ``.env`` variables that changed: never their values (they may be
secrets). The comparison (:func:`describe`) is pure; :func:`diff` fetches the branch into
the target's mirror, exports both releases to a scratch folder and reads the records.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollhook.targets import Target

_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$")


@dataclass(frozen=True)
class Side:
    """One side of the comparison: a commit, its services' images, its compose .env."""

    commit: str | None
    images: Mapping[str, str] = field(default_factory=dict)  # service -> image reference
    env: Mapping[str, str] = field(default_factory=dict)  # variable -> value (never printed)


def env_values(text: str | None) -> dict[str, str]:
    """``KEY=value`` lines of a compose .env file (comments and blanks skipped)."""
    found: dict[str, str] = {}
    for line in (text or "").splitlines():
        if (match := _ASSIGNMENT.match(line)) and not line.lstrip().startswith("#"):
            found[match.group(1)] = match.group(2).strip()
    return found


def describe(name: str, deployed: Side, desired: Side, commits: list[tuple[str, str]]) -> list[str]:
    """The lines of the diff; ``commits`` are (sha, message), newest first."""
    head = (desired.commit or "?")[:12]
    if deployed.commit is None:
        lines = [f"{name}: nothing deployed yet; the branch is at {head}"]
    elif deployed.commit == desired.commit:
        lines = [f"{name}: the deployed commit {head} is the branch's head"]
    else:
        lines = [f"{name}: {deployed.commit[:12]} deployed, the branch is at {head}"]
        lines += [f"  {sha[:12]} {message}" for sha, message in commits]
    old, new = set(deployed.images), set(desired.images)
    lines += [f"service added: {s}" for s in sorted(new - old)]
    lines += [f"service removed: {s}" for s in sorted(old - new)]
    for service in sorted(old & new):
        was, will = deployed.images[service], desired.images[service]
        if was.split("@", 1)[0] != will.split("@", 1)[0]:
            lines.append(f"image {service}: {was} -> {will}")
    for variable in sorted(set(deployed.env) | set(desired.env)):
        if variable not in deployed.env:
            lines.append(f"variable added: {variable}")
        elif variable not in desired.env:
            lines.append(f"variable removed: {variable}")
        elif deployed.env[variable] != desired.env[variable]:
            lines.append(f"variable changed: {variable}")
    if len(lines) == 1 and deployed.commit == desired.commit:
        lines.append("nothing to change")
    return lines


def diff(args: argparse.Namespace) -> int:
    from rollhook.records import db, deployments
    from rollhook.records import targets as target_records
    from rollhook.settings import load_settings
    from rollhook.targets import load_targets
    from workers.errors import DeployError

    settings = load_settings()
    target = load_targets(settings.config).get(args.target)
    if target is None:
        print(f"rollhook: unknown target {args.target!r}")
        return 1
    engine = db.make_engine(settings.records_url())
    try:
        with engine.connect() as conn:
            state = target_records.get(conn, target.name)
            current_id = state.current_deployment_id if state else None
            current = deployments.get(conn, current_id) if current_id else None
    finally:
        engine.dispose()
    token = settings.git_token.get_secret_value() if settings.git_token else None
    key = settings.git_ssh_key.get_secret_value() if settings.git_ssh_key else None
    try:
        lines = compare(target, settings.data_dir, current, token=token, ssh_key=key)
    except DeployError as exc:
        print(f"rollhook: {exc}")
        return 1
    print("\n".join(lines))
    return 0


def compare(
    target: Target,
    data_dir: Path,
    current: Any,
    *,
    token: str | None = None,
    ssh_key: str | None = None,
    compose_argv: list[str] | None = None,
) -> list[str]:
    """Fetch the branch, export both sides and describe how they differ."""
    from workers.compose import Compose, ComposeSpec, find_compose
    from workers.gitsync import GitRepo
    from workers.layout import TargetDirs

    dirs = TargetDirs(data_dir, target.name)
    git = GitRepo(target.repo, dirs.mirror, token=token, ssh_key=ssh_key)
    head = git.fetch(target.branch)
    old_commit = current.commit if current is not None else None
    with tempfile.TemporaryDirectory(prefix="rollhook-diff-") as tmp:
        new_dir = git.export(head, target.path, Path(tmp) / "new")
        compose_env = new_dir / ".env"
        spec = ComposeSpec(
            project=target.project,
            project_dir=Path(tmp),
            files=[new_dir / target.compose_file],
            env_files=([compose_env] if compose_env.is_file() else []) + list(target.env_files),
            release_dir=new_dir,
        )
        config = Compose(compose_argv or find_compose(), None).config(spec)
        images = {
            str(name): str(service.get("image") or "")
            for name, service in (config.get("services") or {}).items()
        }
        del config  # holds interpolated secrets: only the image lines are kept
        desired = Side(head, images, env_values(_read(compose_env)))
        deployed = Side(None)
        commits: list[tuple[str, str]] = []
        if old_commit:
            old_dir = git.export(old_commit, target.path, Path(tmp) / "old")
            was = {s: str(v.get("new") or "") for s, v in (current.images or {}).items()}
            deployed = Side(old_commit, was, env_values(_read(old_dir / ".env")))
            if old_commit != head:
                commits = [(c.sha, c.message) for c in git.commits(old_commit, head)]
    return describe(target.name, deployed, desired, commits)


def _read(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None
