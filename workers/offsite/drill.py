"""The restore drill: is the latest off-host snapshot good enough to run the app on?

```
run_drill(ctx, target) -> DrillResult(ok, detail, ...)
```
1. The latest snapshot of the target is restored from the repository into a scratch
   directory (``<data>/drills/<target>/``): restic checks every blob it reads, so a
   damaged repository fails here.
2. Each SQLite database the snapshot says it copied consistently passes
   ``PRAGMA integrity_check``.
3. The gated service of the current deployment (its release's compose file, its image
   by digest) is started as a compose project of its own, ``<project>-drill``, with
   every data mount pointing into the scratch copy (a source the snapshot lacks gets an
   empty stand-in: the live data is never mounted), on a spare loopback port: a
   published port moves to ``127.0.0.1:<spare>``; a service on the host network gets
   the spare port through ``drill.port_env`` (anything-llm reads ``SERVER_PORT``).
4. The target's health gate runs against the spare port. Pass or fail, the drill's
   project and scratch copy are removed; the live app is never touched.

The outcome is recorded (``records/remote_backups.py``) and a failure is told.
"""

from __future__ import annotations

import logging
import secrets
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from rollhook.records import remote_backups
from rollhook.targets import Target
from workers.backup import files
from workers.backup.contents import SnapshotContents, place, target_tags
from workers.compose import Compose, ComposeSpec
from workers.context import WorkerContext
from workers.engine import DockerEngine
from workers.errors import DeployError, InfrastructureError, OperatorError
from workers.health import gate
from workers.layout import TargetDirs, compose_spec
from workers.lease import host_lock
from workers.offsite.repository import lock_path, repository_for, sharing
from workers.offsite.service import current_deployment
from workers.offsite.snapshots import Clock, utcnow
from workers.offsite.telling import tell
from workers.plan import data_sources, mount_points

logger = logging.getLogger("rollhook.offsite")


@dataclass(frozen=True)
class DrillResult:
    ok: bool
    detail: str
    snapshot_id: str | None = None
    seconds: float = 0.0
    restore_seconds: float = 0.0
    port: int | None = None


class _Override(list[Any]):
    """A YAML sequence tagged ``!override``: it replaces the compose file's, not merged."""


class _Reset(str):
    """``!reset``: the compose file's value is dropped (``container_name``)."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Override, lambda d, v: d.represent_sequence("!override", list(v)))
_Dumper.add_representer(_Reset, lambda d, v: d.represent_scalar("!reset", ""))


def spare_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_drill(ctx: WorkerContext, target: Target, *, clock: Clock = utcnow) -> DrillResult:
    """Restore the latest snapshot into scratch and start the app on it; record, and tell
    the first failure of a run and the pass that ends it. A drill of the same target
    already running: not ok, nothing recorded."""
    dirs = TargetDirs(ctx.data_dir, target.name)
    with host_lock(dirs.drills.parent / f"{target.name}.lock", timeout=0) as locked:
        if not locked:
            return DrillResult(False, f"a drill of {target.name} is running already")
        result = _Drill(ctx, target, dirs).run()
    at = clock()
    with ctx.records.begin() as conn:
        before = remote_backups.drill_done(
            conn,
            target.name,
            at=at,
            ok=result.ok,
            snapshot_id=result.snapshot_id,
            detail=result.detail,
        )
    # Told once per run of failures, and once when it passes again: the record of the
    # drill before this one says which (as a snapshot's failures are told by their count).
    if result.ok:
        logger.info("%s: drill passed: %s", target.name, result.detail)
        if before is False:
            tell(ctx, target, "drill_recovered", result.detail, at)
    else:
        logger.error("%s: drill FAILED: %s", target.name, result.detail)
        if before is not False:
            tell(ctx, target, "drill_failed", result.detail, at)
    return result


class _Drill:
    def __init__(self, ctx: WorkerContext, target: Target, dirs: TargetDirs) -> None:
        self.ctx, self.target, self.dirs = ctx, target, dirs
        self.compose = Compose(ctx.compose_argv, ctx.docker_host)
        self.scratch: Path | None = None
        self.spec: ComposeSpec | None = None
        self.snapshot_id: str | None = None
        self.restore_seconds = 0.0
        self.port: int | None = None

    def run(self) -> DrillResult:
        began = time.monotonic()
        try:
            detail = self._drill()
            ok = True
        except DeployError as exc:
            ok, detail = False, str(exc)
        except Exception as exc:  # a bug: a failed drill, never a stuck one
            logger.exception("%s: drill failed unexpectedly", self.target.name)
            ok, detail = False, f"internal error: {type(exc).__name__}"
        finally:
            self._clean_up()
        return DrillResult(
            ok,
            detail,
            self.snapshot_id,
            round(time.monotonic() - began, 3),
            round(self.restore_seconds, 3),
            self.port,
        )

    def _drill(self) -> str:
        target = self.target
        repo = repository_for(self.ctx, target)
        with sharing(lock_path(self.ctx, repo.config.repository)):
            found = repo.snapshots(target_tags(target.name))
            if not found:
                raise OperatorError(f"{target.name} has no off-host snapshot yet")
            snap = found[0]
            self.snapshot_id = snap.id
            contents = repo.contents(snap.id)
            self.scratch = self.dirs.drills / f"{snap.short_id}-{secrets.token_hex(3)}"
            restoring = time.monotonic()
            tree = repo.restore(snap.id, into=self.scratch / "tree")
            self.restore_seconds = time.monotonic() - restoring
        _check_databases(contents, tree)
        record = current_deployment(self.ctx, target)
        if record is None or record.commit is None:
            raise OperatorError(
                f"{target.name} is not deployed on this host: the drill runs the image that runs"
            )
        image = ((record.images or {}).get(target.service) or {}).get("new")
        release = compose_spec(target, self.dirs, record.commit, None)
        with DockerEngine(self.ctx.docker_host) as engine:
            config = self.compose.config(release)
            if target.service not in config.get("services", {}):
                raise OperatorError(f"the compose file has no service {target.service!r}")
            self.port = spare_port()
            body = self._override(config, contents, tree, image, engine)
            del config  # holds interpolated secrets
            override = self.scratch / "drill.yml"
            override.write_text(yaml.dump(body, Dumper=_Dumper, sort_keys=False))
            self.spec = ComposeSpec(
                project=f"{target.project}-drill",
                project_dir=self.dirs.work,
                files=[*release.files, override],
                env_files=release.env_files,
                release_dir=release.release_dir,
            )
            self.compose.up(self.spec, timeout=300, services=[target.service])
            verdict = self._gate(engine)
        if not verdict.ok:
            raise InfrastructureError(
                f"snapshot {snap.short_id}: the restored copy did not pass the health gate: "
                f"{verdict.reason}"
            )
        size = sum(s.bytes for s in contents.sources)
        return (
            f"snapshot {snap.short_id} of {snap.time.isoformat(timespec='minutes')} restored "
            f"({size >> 20} MiB in {self.restore_seconds:.1f}s); {target.service} served on "
            f"127.0.0.1:{self.port}: {verdict.reason}"
        )

    def _override(
        self,
        config: dict[str, Any],
        contents: SnapshotContents,
        tree: Path,
        image: str | None,
        engine: DockerEngine,
    ) -> dict[str, Any]:
        target, service = self.target, self.target.service
        spec = config["services"][service]
        sources = data_sources(config, service, engine.volume_path)
        mounts = mount_points(config, service)
        placed, _ = place(contents, sources, mounts)
        origin = {p.source.name: p.origin(tree) for p in placed}
        live_kind = {s.name: s.path.is_file() for s in sources}
        volumes: list[Any] = []
        for n, mount in enumerate(spec.get("volumes") or []):
            kind = mount.get("type")
            if kind not in ("bind", "volume"):
                volumes.append(mount)  # tmpfs and the like hold no data
                continue
            name = next((k for k, v in mounts.items() if v == mount.get("target")), None)
            where = origin.get(name) if name is not None else None
            if where is None:
                where = self._stand_in(n, is_file=bool(name and live_kind.get(name)))
            volumes.append(
                {
                    "type": "bind",
                    "source": str(where),
                    "target": mount["target"],
                    "read_only": bool(mount.get("read_only", False)),
                }
            )
        body: dict[str, Any] = {
            "container_name": _Reset(),
            "restart": "no",
            "labels": {"rollhook.drill": target.name},
            "volumes": _Override(volumes),
        }
        if image:
            body["image"] = image
        drill = target.backup.drill
        if spec.get("network_mode") == "host":
            if drill is None or drill.port_env is None:
                raise OperatorError(
                    f"targets.{target.name}.backup.drill.port_env: {service} is on the host "
                    "network; name the variable it reads its port from (anything-llm: "
                    "SERVER_PORT) so the drill can move it to a spare port"
                )
            body["environment"] = {drill.port_env: str(self.port)}
        else:
            inside = self._container_port(spec)
            body["ports"] = _Override([f"127.0.0.1:{self.port}:{inside}"] if inside else [])
        return {"services": {service: body}}

    def _container_port(self, spec: dict[str, Any]) -> int | None:
        ports = spec.get("ports") or []
        url = self.target.health.url
        wanted = str(urlsplit(url).port) if url else None
        for port in ports:
            if wanted is not None and str(port.get("published")) == wanted:
                return int(port["target"])
        return int(ports[0]["target"]) if ports else None

    def _stand_in(self, n: int, *, is_file: bool) -> Path:
        """An empty file or directory where the snapshot holds nothing for a mount."""
        path = (
            self.dirs.drills / "empty" / str(n)
            if self.scratch is None
            else (self.scratch / "empty" / str(n))
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        if is_file:
            path.touch(mode=0o600)
        else:
            path.mkdir(mode=0o755)
        return path

    def _gate(self, engine: DockerEngine) -> Any:
        project, service = f"{self.target.project}-drill", self.target.service

        def watch() -> Any:
            found = [c for c in engine.containers(project) if c.service == service]
            return found[0].state if found else None

        health = self.target.health
        return gate(
            _moved(health.url, self.port),
            timeout=health.timeout,
            settle=health.settle,
            interval=health.interval,
            watch=watch,
        )

    def _clean_up(self) -> None:
        if self.spec is not None:
            try:
                self.compose.down(self.spec, timeout=120)
            except DeployError as exc:
                logger.warning("%s: drill project not removed: %s", self.target.name, exc)
        if self.scratch is not None:
            try:
                files.remove(str(self.scratch))
            except OSError as exc:
                logger.warning("cannot remove %s: %s", self.scratch, exc.strerror)


def _moved(url: str | None, port: int | None) -> str | None:
    """The health URL on the drill's port."""
    if url is None or port is None:
        return url
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return urlunsplit((parts.scheme, f"{host}:{port}", parts.path, parts.query, ""))


def _check_databases(contents: SnapshotContents, tree: Path) -> None:
    """Each database copied with SQLite's online backup must be sound once restored."""
    for source in contents.sources:
        if source.kind == "missing" or source.included_in is not None:
            continue
        for rel in source.databases:
            path = tree / source.location.lstrip("/")
            if source.kind == "dir":
                path = path / rel
            problem = _integrity(path)
            if problem:
                raise InfrastructureError(f"restored database {source.location}/{rel}: {problem}")


def _integrity(path: Path) -> str | None:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as exc:
        return f"cannot open: {exc}"
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.Error as exc:
        return f"unreadable: {exc}"
    finally:
        conn.close()
    if rows != [("ok",)]:
        return "integrity check failed: " + "; ".join(str(r[0]) for r in rows[:3])
    return None
