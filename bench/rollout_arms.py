"""The two ways of updating anything-llm that the benchmark compares, on the same engine.

- ``RollhookArm``: a push to the infra repo and its signed GitHub webhook, through a whole
  rollhook (web, worker, beat as real processes, Redis as broker).
- ``ScriptArm``: what users run today, ``docker compose pull && docker compose down &&
  docker compose up -d`` in the folder that holds the compose file and the data.

Both use the same compose file (tests/harness/infra.py), the same stand-in images and the
same amount of data; each arm has its own folder, port and compose project.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.rollout_data import DataState, differences
from bench.rollout_setup import Image
from bench.rollout_watch import EngineEvents, Event, Prober, longest_outage
from tests.harness.gitserver import InfraRepo
from tests.harness.infra import compose_file, infra_files
from tests.stack import Stack

ZERO_SHA = "0" * 40


@dataclass
class Upgrade:
    """One good release replacing another: v(n) -> v(n+1)."""

    push_to_healthy: float  # webhook sent / script started -> new version answers 200
    downtime: float  # longest run of non-200 seen by the prober
    stop: float  # engine: SIGTERM to the old container -> its exit
    between: float  # engine: the old container's exit -> the new one's start
    boot: float  # engine: the new container starts -> its first 200
    steps: dict[str, float] = field(default_factory=dict)  # where the time went
    # The handover (the old container's exit -> the new one's start) by who spent it.
    handover: dict[str, float] = field(default_factory=dict)


@dataclass
class Crash:
    """A release that migrates the data, then crashes on boot."""

    outcome: str  # rollhook's record status, or what the script's last command said
    waited: float  # how long the prober watched after the release started
    detected_after: float | None = None  # the crash -> the failure detected; None: never
    recovered_after: float | None = None  # detection -> the old version answers 200
    old_boot: float | None = None  # the old version's own boot on the way back
    downtime: float | None = None  # None: it never came back while watched
    problems: list[str] = field(default_factory=list)  # data differences; [] = intact


# -- reading the engine's events ---------------------------------------------------------------


def _starts(events: list[Event]) -> list[Event]:
    return [e for e in events if e.action == "start"]


@dataclass(frozen=True)
class Handover:
    """The old container stopping and the new one starting, by the engine's clock."""

    killed: float  # SIGTERM sent to the old container
    died: float  # the old container exited
    started: float  # the new container started


def handover(events: list[Event]) -> Handover:
    try:
        kill = next(e for e in events if e.action == "kill" and e.attributes.get("signal") == "15")
        die = next(e for e in events if e.action == "die" and e.container == kill.container)
        start = next(e for e in _starts(events) if e.container != kill.container)
    except StopIteration:
        actions = [(e.action, e.container[:12]) for e in events]
        raise RuntimeError(f"no stop and start among the engine's events: {actions}") from None
    return Handover(kill.at, die.at, start.at)


def _when(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def _step(record: dict[str, Any], name: str) -> dict[str, Any]:
    return next(step for step in record["steps"] if step["name"] == name)


def step_durations(record: dict[str, Any], sent: float) -> dict[str, float]:
    """Seconds per journal step; "intake" is webhook sent -> the first step started."""
    steps = record["steps"]
    durations = {"intake": _when(steps[0]["started_at"]) - sent}
    for step in steps:
        if step["finished_at"]:
            spent = _when(step["finished_at"]) - _when(step["started_at"])
            durations[step["name"]] = durations.get(step["name"], 0.0) + spent
    return durations


def _downtime(probe: Prober) -> float:
    """The longest outage of an upgrade (which did end: the new version answered)."""
    outage = longest_outage(probe.samples)
    if outage is None:
        return 0.0
    return outage.seconds or 0.0


def _baseline(probe: Prober, image: Image) -> None:
    """Wait until the current version answers, and keep probing it for half a second."""
    if probe.wait_for(image.app_version, timeout=60) is None:
        raise RuntimeError(f"{image.app_version} does not answer before the measurement")
    time.sleep(0.5)


# -- rollhook ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str  # rollhook target, also its folder in the infra repo
    project: str
    port: int

    @property
    def path(self) -> str:
        return f"environments/{self.name}/anything-llm"


def rollhook_config(repo: InfraRepo, targets: list[Target], registry_host: str) -> str:
    """The targets file: the default probe interval (0.5 s), a settle of 2 s instead of 10
    (it only delays the end of the record, and keeps the benchmark short), backups on."""
    lines = ["targets:"]
    for t in targets:
        lines += [
            f"  {t.name}:",
            f"    repo: {repo.url}",
            "    branch: main",
            f"    path: {t.path}",
            f"    project: {t.project}",
            "    service: anything-llm",
            f"    images: [{registry_host}/acme/{t.name}]",
            f'    health: {{url: "http://127.0.0.1:{t.port}/api/ping", timeout: 60s, '
            "settle: 2s, interval: 0.5s}",
            "    backup: {keep: 3}",
        ]
    return "\n".join(lines) + "\n"


class RollhookArm:
    def __init__(
        self, stack: Stack, repo: InfraRepo, events: EngineEvents, targets: dict[str, Target]
    ) -> None:
        self.stack, self.repo, self.events, self.targets = stack, repo, events, targets

    def work(self, size: str) -> Path:
        return self.stack.data_dir / "targets" / self.targets[size].name / "work"

    def storage(self, size: str) -> Path:
        return self.work(size) / "storage"

    def _push(self, files: dict[str, str | None], message: str, first: bool) -> tuple[str, float]:
        """Commit and push to the infra repo, then send GitHub's push webhook for it."""
        before = ZERO_SHA if first else self.repo.head()
        after = self.repo.commit(files, message=message)
        commit = {
            "id": after,
            "message": message,
            "added": sorted(files) if first else [],
            "removed": [],
            "modified": [] if first else sorted(files),
        }
        payload = {
            "ref": "refs/heads/main",
            "before": before,
            "after": after,
            "created": first,
            "deleted": False,
            "forced": False,
            "repository": {"full_name": "acme/llm-infra", "clone_url": self.repo.url},
            "pusher": {"name": "bench"},
            "commits": [commit],
            "head_commit": commit,
        }
        sent = time.time()
        answer = self.stack.github_push(payload, delivery=str(uuid.uuid4()))
        if answer.status_code != 202:
            raise RuntimeError(f"the webhook was answered {answer.status_code}: {answer.text}")
        return str(answer.json()["id"]), sent

    def _final(self, event_id: str) -> dict[str, dict[str, Any]]:
        records = self.stack.wait_final(event_id, timeout=300)
        return {r["target"]: r for r in records}

    def _files(self, size: str, image: Image) -> dict[str, str | None]:
        target = self.targets[size]
        return infra_files(image.ref, target.port, path=target.path)

    def setup(self, first: dict[str, Image]) -> None:
        """Deploy the first version of every target (one commit, one webhook)."""
        files: dict[str, str | None] = {}
        for size, image in first.items():
            files.update(self._files(size, image))
        event_id, _ = self._push(files, "anything-llm: first deployment", first=True)
        for name, record in self._final(event_id).items():
            if record["status"] != "succeeded":
                raise RuntimeError(f"setup of {name}: {record['status']}\n{record['log']}")

    def first_backup(self, size: str) -> float:
        """How long pass 1 of the first backup took (a full copy: nothing to link to yet)."""
        [record] = self.stack.deployments(self.targets[size].name, limit=1)
        return step_durations(record, 0.0).get("backup", 0.0)

    def upgrade(self, size: str, old: Image, new: Image) -> Upgrade:
        target = self.targets[size]
        with Prober(target.port) as probe:
            _baseline(probe, old)
            files = self._files(size, new)
            event_id, sent = self._push(files, f"anything-llm {new.app_version}", first=False)
            record = self._final(event_id)[target.name]
            healthy = probe.wait_for(new.app_version, timeout=30, since=sent)
            time.sleep(0.5)
        if record["status"] != "succeeded" or healthy is None:
            raise RuntimeError(f"{target.name}: {record['status']}\n{record['log']}")
        engine = handover(self.events.of(target.project, sent))
        stopped = _when(_step(record, "stop")["finished_at"])
        starting = _when(_step(record, "start")["started_at"])
        return Upgrade(
            push_to_healthy=healthy - sent,
            downtime=_downtime(probe),
            stop=engine.died - engine.killed,
            between=engine.started - engine.died,
            boot=healthy - engine.started,
            steps=step_durations(record, sent),
            handover={
                "compose stop returns": stopped - engine.died,
                "snapshot + journal": starting - stopped,
                "compose up starts it": engine.started - starting,
            },
        )

    def crash(self, size: str, old: Image, broken: Image) -> Crash:
        target = self.targets[size]
        with Prober(target.port) as probe:
            _baseline(probe, old)
            before = DataState.read(self.storage(size), self.work(size) / ".env")
            files = self._files(size, broken)
            event_id, sent = self._push(files, f"anything-llm {broken.app_version}", first=False)
            record = self._final(event_id)[target.name]
            failed = next((s for s in record["steps"] if s["outcome"] == "failed"), None)
            detected = _when(failed["finished_at"]) if failed else None
            back = probe.wait_for(old.app_version, timeout=30, since=detected or sent)
            time.sleep(0.5)
            waited = time.time() - sent
        after = DataState.read(self.storage(size), self.work(size) / ".env")
        events = self.events.of(target.project, sent)
        crashed = _starts(events)[0].container
        died = next(e.at for e in events if e.action == "die" and e.container == crashed)
        outage = longest_outage(probe.samples)
        result = Crash(
            outcome=record["status"],
            waited=waited,
            detected_after=None if detected is None else detected - died,
            downtime=outage.seconds if outage else 0.0,
            problems=differences(before, after, broken.app_version),
        )
        if back is not None and detected is not None:
            restarted = [e.at for e in _starts(events) if e.at <= back][-1]
            result.recovered_after = back - detected
            result.old_boot = back - restarted
        return result


# -- the script users run today ---------------------------------------------------------------


@dataclass(frozen=True)
class Folder:
    """What a user keeps: the compose file, its .env (also the app's runtime .env), the data."""

    path: Path
    port: int

    @property
    def project(self) -> str:
        return self.path.name  # compose names the project after the folder

    @property
    def storage(self) -> Path:
        return self.path / "storage"


class ScriptArm:
    def __init__(self, compose: list[str], env: dict[str, str], events: EngineEvents) -> None:
        self.compose, self.env, self.events = compose, env, events
        self.folders: dict[str, Folder] = {}

    def add(self, size: str, folder: Folder) -> None:
        folder.storage.mkdir(parents=True, exist_ok=True)
        (folder.path / ".env").write_text(f"SERVER_PORT={folder.port}\n")
        self.folders[size] = folder

    def _run(self, folder: Folder, *args: str) -> tuple[float, int]:
        """One `docker compose ...` in the folder, as a user types it; (seconds, exit code)."""
        began = time.monotonic()
        done = subprocess.run(
            [*self.compose, *args],
            cwd=folder.path,
            env=self.env,
            capture_output=True,
            timeout=300,
            check=False,
        )
        return time.monotonic() - began, done.returncode

    def _script(self, folder: Folder) -> tuple[dict[str, float], dict[str, float]]:
        """pull && down && up -d (stops at the first failure, as && does).

        Returns the seconds each command took, and when each one ended (wall clock).
        """
        spent, ended = {}, {}
        for name, args in (("pull", ["pull"]), ("down", ["down"]), ("up", ["up", "-d"])):
            spent[name], code = self._run(folder, *args)
            ended[name] = time.time()
            if code != 0:
                raise RuntimeError(f"docker compose {' '.join(args)} failed with {code}")
        return spent, ended

    def _write(self, size: str, image: Image) -> None:
        (self.folders[size].path / "docker-compose.yml").write_text(compose_file(image.ref))

    def setup(self, first: dict[str, Image]) -> None:
        for size, image in first.items():
            self._write(size, image)
            self._script(self.folders[size])
        for size, image in first.items():
            with Prober(self.folders[size].port) as probe:
                _baseline(probe, image)

    def upgrade(self, size: str, old: Image, new: Image) -> Upgrade:
        folder = self.folders[size]
        self._write(size, new)  # the edit that stands for `git pull` of the new release
        with Prober(folder.port) as probe:
            _baseline(probe, old)
            began = time.time()
            spent, ended = self._script(folder)
            healthy = probe.wait_for(new.app_version, timeout=60, since=began)
            time.sleep(0.5)
        if healthy is None:
            raise RuntimeError(f"{folder.project}: {new.app_version} never answered")
        engine = handover(self.events.of(folder.project, began))
        up_began = ended["up"] - spent["up"]
        return Upgrade(
            push_to_healthy=healthy - began,
            downtime=_downtime(probe),
            stop=engine.died - engine.killed,
            between=engine.started - engine.died,
            boot=healthy - engine.started,
            steps=spent,
            handover={
                "compose down returns": ended["down"] - engine.died,
                "next command": up_began - ended["down"],
                "compose up starts it": engine.started - up_began,
            },
        )

    def crash(self, size: str, old: Image, broken: Image, wait: float) -> Crash:
        folder = self.folders[size]
        self._write(size, broken)
        with Prober(folder.port) as probe:
            _baseline(probe, old)
            before = DataState.read(folder.storage, folder.path / ".env")
            began = time.time()
            self._script(folder)  # `up -d` succeeds: the container did start
            time.sleep(max(0.0, began + wait - time.time()))
        after = DataState.read(folder.storage, folder.path / ".env")
        outage = longest_outage(probe.samples)
        restarts = len(_starts(self.events.of(folder.project, began))) - 1
        return Crash(
            outcome=f"up -d exited 0; the container restarted {restarts} times",
            waited=wait,
            # Nothing notices the failure; all one can say is whether the app came back.
            recovered_after=None if outage is None or outage.end is None else outage.end - began,
            downtime=outage.seconds if outage else 0.0,
            problems=differences(before, after, broken.app_version),
        )

    def down(self) -> None:
        for folder in self.folders.values():
            self._run(folder, "down", "--timeout", "2")
