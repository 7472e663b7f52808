"""``rollhook init``: adopt the compose projects already running on this Docker engine.

For each project (containers labelled ``com.docker.compose.project``) it reads where
Compose started it (``working_dir``, ``config_files``), asks Compose for its model, and
writes what ``cli.proposal`` proposes: ``<dir>/<project>/docker-compose.yml`` and its
compose ``.env`` (to commit to the infra repo), the secrets to a host env file
(``<secrets-dir>/<project>.env``, mode 0600, listed in ``env_files``), and a target in the
targets file. Nothing running is touched; the first deployment adopts the project without
a restart when it already runs what the files say (``workers.adoption``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
import yaml

from cli import output
from cli.proposal import Proposal, parse_dotenv, propose
from rollhook.settings import Settings
from rollhook.targets import parse_targets
from workers import procs
from workers.compose import find_compose

PLACEHOLDER_REPO = "https://git.example.com/you/infra.git"
PROJECT_LABEL = "com.docker.compose.project"


class AdoptError(Exception):
    pass


def running_projects(docker_host: str | None) -> dict[str, list[dict[str, Any]]]:
    """project -> its running containers' inspect data."""
    client = docker.DockerClient(base_url=docker_host or "unix:///var/run/docker.sock", timeout=30)
    try:
        found: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for container in client.containers.list(filters={"label": PROJECT_LABEL}):
            labels = container.attrs["Config"]["Labels"] or {}
            if labels.get("com.docker.compose.oneoff") == "True":
                continue  # `compose run`: not part of the project's services
            found[labels[PROJECT_LABEL]].append(container.attrs)
        return dict(found)
    finally:
        client.close()


@dataclass(frozen=True)
class Started:
    """Where and how Compose started a project (from its containers' labels)."""

    project: str
    workdir: Path
    files: list[str]
    env_file: Path | None
    docker_host: str | None

    def config(self, *args: str) -> dict[str, Any]:
        argv = [*find_compose(), "--ansi", "never", "-p", self.project]
        argv += ["--project-directory", str(self.workdir)]
        for name in self.files:
            argv += ["-f", name]
        argv += ["--env-file", str(self.env_file) if self.env_file else os.devnull]
        env = procs.child_env(DOCKER_HOST=self.docker_host)
        done = procs.run([*argv, "config", "--format", "json", *args], env=env, timeout=60)
        if done.returncode != 0:
            said = done.stderr.decode(errors="replace").strip().splitlines()
            raise AdoptError(f"compose config failed: {said[-1] if said else done.returncode}")
        model: dict[str, Any] = json.loads(done.stdout)
        return model


def read_project(
    project: str, containers: list[dict[str, Any]], docker_host: str | None
) -> Proposal:
    labels = containers[0]["Config"]["Labels"]
    workdir = Path(labels.get("com.docker.compose.project.working_dir") or "/")
    files = [f for f in (labels.get("com.docker.compose.project.config_files") or "").split(",")]
    files = [f for f in files if f]
    missing = [f for f in files if not Path(f).is_file()]
    if not files or missing:
        raise AdoptError(f"its compose files are gone from this host ({', '.join(missing) or '?'})")
    env_file = workdir / ".env" if (workdir / ".env").is_file() else None
    started = Started(project, workdir, files, env_file, docker_host)
    model = started.config("--no-interpolate")  # for Git: ${...} kept, env_file not read
    interpolated = started.config()  # read here only: it holds secrets
    variables = parse_dotenv(env_file.read_text()) if env_file else {}
    running = {
        c["Config"]["Labels"].get("com.docker.compose.service", ""): c["Config"]["Image"]
        for c in containers
    }
    try:
        return propose(project, model, interpolated, variables, running)
    except ValueError as exc:
        raise AdoptError(str(exc)) from exc


def _answers(url: str) -> str:
    try:
        code = httpx.get(url, timeout=3).status_code
    except httpx.HTTPError as exc:
        return f"no answer ({exc.__class__.__name__})"
    return "200" if code == 200 else f"answered {code}"


def target_entry(
    proposal: Proposal, args: argparse.Namespace, env_file: Path | None
) -> dict[str, Any]:
    target: dict[str, Any] = {
        "repo": args.repo or PLACEHOLDER_REPO,
        "branch": args.branch,
        "path": proposal.project,
        "project": proposal.project,
        "service": proposal.service,
    }
    if env_file is not None:
        target["env_files"] = [str(env_file)]
    if proposal.images:
        target["images"] = proposal.images
    if proposal.health_url:
        target["health"] = {"url": proposal.health_url, "timeout": "180s", "settle": "10s"}
    return target


def _write_secret_file(path: Path, values: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("# Written by `rollhook init`: compose interpolation secrets, never in Git.\n")
        handle.writelines(f"{key}={_quoted(value)}\n" for key, value in sorted(values.items()))
    os.chmod(path, 0o600)


def _quoted(value: str) -> str:
    plain = value and all(c.isalnum() or c in "._-/:@+,=" for c in value)
    return value if plain else "'" + value.replace("'", "'\"'\"'") + "'"


def write_folder(proposal: Proposal, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Adopted by `rollhook init` from the running project {proposal.project}.\n"
        "# Compose's own model of it: paths are absolute (the data stays where it is);\n"
        "# images are pinned through the variables in .env; secrets are ${NAME} references\n"
        "# to the host env file listed in rollhook.yml (env_files), never in Git.\n"
    )
    body = yaml.safe_dump(proposal.compose, sort_keys=False, default_flow_style=False)
    (folder / "docker-compose.yml").write_text(header + body)
    lines = [f"{key}={_quoted(value)}" for key, value in sorted(proposal.compose_env.items())]
    (folder / ".env").write_text(
        "\n".join(["# Interpolation variables (no secrets)", *lines]) + "\n"
    )


def init(args: argparse.Namespace, settings: Settings) -> int:  # noqa: PLR0911 (one per outcome)
    config = Path(args.config)
    if config.exists() and not (args.force or args.dry_run):
        print(f"rollhook init: {config} exists; --force replaces it", file=sys.stderr)
        return output.USAGE
    try:
        projects = running_projects(settings.docker_host)
    except docker.errors.DockerException as exc:
        print(f"rollhook init: no Docker engine answers ({exc})", file=sys.stderr)
        return output.FAILED
    unknown = set(args.project or ()) - set(projects)
    if unknown:
        print(f"rollhook init: no running project {', '.join(sorted(unknown))}", file=sys.stderr)
        return output.USAGE
    if not projects:
        print("rollhook init: no compose project runs on this engine; nothing to adopt")
        return output.OK
    targets = adopt_all(args, projects, settings.docker_host)
    if not targets:
        return output.FAILED
    text = (
        "# Written by `rollhook init`. Commit the infra folder to a repository and set\n"
        "# each target's repo to it; `rollhook check-config` checks this file.\n"
        + yaml.safe_dump({"targets": targets}, sort_keys=False)
    )
    for problem in parse_targets(text)[1]:
        print(f"warning: {problem}")
    if args.dry_run:
        print(text)
        return output.OK
    config.write_text(text)
    print(next_steps(config, Path(args.dir), args.repo))
    return output.OK


def adopt_all(
    args: argparse.Namespace, projects: dict[str, list[dict[str, Any]]], docker_host: str | None
) -> dict[str, Any]:
    """Propose (and unless --dry-run, write) each wanted project; the targets to write."""
    infra, secrets_dir = Path(args.dir), Path(args.secrets_dir)
    targets: dict[str, Any] = {}
    for name in sorted(args.project or projects):
        managed = {c["Config"]["Labels"].get("rollhook.target") for c in projects[name]} - {None}
        if managed:
            print(f"{name}: skipped: rollhook deploys it already (target {', '.join(managed)})")
            continue
        try:
            proposal = read_project(name, projects[name], docker_host)
        except AdoptError as exc:
            print(f"{name}: not adopted: {exc}")
            continue
        env_file = secrets_dir / f"{name}.env" if proposal.host_env else None
        targets[name] = target_entry(proposal, args, env_file)
        describe(proposal, infra / name, env_file)
        if not args.dry_run:
            write_folder(proposal, infra / name)
            if env_file is not None:
                _write_secret_file(env_file, proposal.host_env)
    return targets


def describe(proposal: Proposal, folder: Path, env_file: Path | None) -> None:
    print(f"{proposal.project}: gate service {proposal.service}")
    if proposal.health_url:
        print(f"  health   {proposal.health_url} ({_answers(proposal.health_url)} now)")
    else:
        print("  health   no URL guessed: the gate watches the container (set health.url)")
    for source in proposal.sources:
        print(f"  backup   {source}")
    print(f"  files    {folder}/docker-compose.yml, {folder}/.env")
    pins = [k for k in proposal.compose_env if k.endswith("_TAG")]
    if pins:
        print(f"  pins     {', '.join(f'{k}={proposal.compose_env[k]}' for k in sorted(pins))}")
    if env_file is not None:
        print(f"  secrets  {', '.join(proposal.moved)} moved to {env_file} (mode 0600, not in Git)")
    for note in proposal.notes:
        print(f"  note     {note}")


def next_steps(config: Path, infra: Path, repo: str | None) -> str:
    where = repo or "<your infra repo>"
    set_repo = "" if repo else f"  then set each target's repo in {config} to {where}\n"
    return (
        f"\nWrote {config} and {infra}/. Next:\n"
        f"  cd {infra} && git init -b main && git add -A && git commit -m 'rollhook init'\n"
        f"  git remote add origin {where} && git push -u origin main\n"
        f"{set_repo}"
        "  rollhook check-config, then make run (or restart rollhook up)\n"
        "  rollhook deploy <target> --wait   # adopts what runs: no restart when nothing differs\n"
    )
