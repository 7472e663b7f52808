"""Off-host snapshots in a restic repository (a local path, SFTP, S3, rest-server...).

```
repo = Repository(RemoteConfig("sftp:backup@host:/rollhook", Path("/run/secrets/restic")))
repo.init_if_missing()
with Stage(root).build("anythingllm", sources) as staged:      # workers.backup.staging
    snap = repo.snapshot(staged.paths, cwd=staged.tree, tags=staged.contents.tags(), host=h)
repo.forget(Retention(daily=7, weekly=4, monthly=6), tags=target_tags("anythingllm"))
repo.restore("latest", into=scratch, tags=target_tags("anythingllm"))
```
Every call runs Debian's restic (0.14) through ``procs.run``: its own process group, a
deadline, ``on_spawn`` so a recovery can end what a dead worker left running. Output is
read as JSON wherever restic 0.14 offers it (backup, snapshots, forget, stats). restic
gets the password as a file, the repository as configured, and of the environment only
PATH, HOME, a C locale, TZ=UTC and the mapping the caller gives (restic's, S3's, B2's, Azure's and
Google's settings, nothing else from rollhook's own environment).

Listing snapshots and measuring them takes no lock (``--no-lock``): a listing is not
refused while another host's prune or check holds the repository exclusively (snapshot
files are written whole and only read here). A restic killed mid-run leaves its lock
behind; a call refused by a lock runs ``unlock`` (which removes stale locks only: their
process is gone from this host, or they were not refreshed for 30 minutes) and tries
once more. Failures are one line without the
password or any value of that environment: :class:`WrongPassword`,
:class:`RepositoryMissing` and a bad password file or host key are the operator's to fix
(``OperatorError``); :class:`RepositoryUnreachable`, :class:`RepositoryLocked` and the rest
are the system's (``InfrastructureError``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from rollhook.offsite import ENV_PREFIXES, OWN
from workers import procs
from workers.backup import restic_output as output
from workers.backup.contents import MANIFEST_PATH, SnapshotContents
from workers.backup.remote_model import (
    CheckResult,
    Forgotten,
    RemoteConfig,
    RepositoryLocked,
    RepositoryMissing,
    RepositoryUnreachable,
    Retention,
    Snapshot,
    WrongPassword,
)
from workers.errors import DeployError, InfrastructureError, OperatorError, StepTimeout

log = logging.getLogger(__name__)

LONG = 6 * 3600.0  # backup, restore, check, prune: bounded by the data, not by us
SHORT = 300.0  # listing, init, unlock
INCOMPLETE = 3  # backup: some files could not be read, the snapshot exists
_SNAPSHOT_ID = re.compile(r"[0-9a-f]{8,64}\Z")
_SUBSET = re.compile(r"(\d+/\d+|\d+(\.\d+)?%|\d+[kKmMgGtT]?)\Z")


class Repository:
    """One restic repository. ``on_spawn`` hears of each restic's process group."""

    def __init__(
        self,
        config: RemoteConfig,
        *,
        on_spawn: Callable[[procs.ProcessGroup], None] | None = None,
        timeout: float = LONG,
        short_timeout: float = SHORT,
    ) -> None:
        self.config = config
        self.on_spawn = on_spawn
        self.timeout = timeout
        self.short_timeout = short_timeout
        self.display = output.scrub(config.repository, ())
        self._env = _restic_env(config.env)

    # -- verbs -----------------------------------------------------------------------

    def init_if_missing(self) -> bool:
        """Create the repository unless it exists; True if it was created."""
        try:
            self._run("check for", ["cat", "config"], timeout=self.short_timeout)
        except RepositoryMissing:
            self._run("create", ["init"], timeout=self.short_timeout)
            log.info("created restic repository %s", self.display)
            return True
        return False

    def snapshot(
        self,
        paths: Sequence[str],
        *,
        tags: Sequence[str],
        host: str,
        cwd: Path | None = None,
        parent: str | None = None,
        time: datetime | None = None,
        timeout: float | None = None,
    ) -> Snapshot:
        """Take a snapshot of ``paths`` (relative ones are kept relative to ``cwd``).

        Unchanged files are found by inode, size and mtime (not ctime): meant for trees
        whose files are never rewritten in place, as ``staging`` makes them.
        """
        if not paths:
            raise OperatorError("a snapshot needs at least one path")
        args = ["backup", "--json", "--quiet", "--ignore-ctime", "--host", host]
        args += _tag_flags(tags)
        if parent is not None:
            args += ["--parent", _check_id(parent)]
        if time is not None:
            args += ["--time", time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")]  # TZ=UTC
        args += ["--", *paths]
        done = self._run(
            "snapshot to", args, timeout=timeout or self.timeout, cwd=cwd, ok=(0, INCOMPLETE)
        )
        summary = output.summary(done.stdout)
        if summary is None:
            raise InfrastructureError(f"restic snapshot to {self.display}: no summary in output")
        taken = self._snapshot(str(summary["snapshot_id"]))
        return dataclasses.replace(
            taken,
            size=int(summary.get("total_bytes_processed", 0)),
            files=int(summary.get("total_files_processed", 0)),
            data_added=int(summary.get("data_added", 0)),
            duration=float(summary.get("total_duration", 0.0)),
            incomplete=done.returncode == INCOMPLETE,
        )

    def snapshots(self, tags: Sequence[str] = (), *, sizes: bool = False) -> list[Snapshot]:
        """Snapshots carrying every one of ``tags``, newest first.

        Their size comes from the ``size=`` tag ``staging`` gives them; ``sizes``: measure
        those without one (a ``restic stats`` each).
        """
        args = ["snapshots", "--json", *_tag_flags(tags)]
        done = self._run("list snapshots of", args, timeout=self.short_timeout, lock=False)
        found = [Snapshot.from_json(s) for s in output.parse(done.stdout, self.display) or []]
        found.sort(key=lambda s: s.time, reverse=True)
        if sizes:
            found = [s if s.size is not None else self._measured(s) for s in found]
        return found

    def _measured(self, snap: Snapshot) -> Snapshot:
        return dataclasses.replace(snap, size=self.size(snap.id))

    def size(self, snapshot_id: str) -> int:
        """Bytes a restore of the snapshot writes."""
        args = ["stats", "--json", "--mode", "restore-size", _check_id(snapshot_id)]
        done = self._run("measure a snapshot in", args, timeout=self.timeout, lock=False)
        stats = output.parse(done.stdout, self.display)
        if not isinstance(stats, dict) or "total_size" not in stats:
            raise InfrastructureError(f"restic stats on {self.display}: no total_size")
        return int(stats["total_size"])

    def forget(self, retention: Retention, *, tags: Sequence[str]) -> Forgotten:
        """Remove the snapshots with ``tags`` that ``retention`` does not keep, then prune.

        The policy applies to all of them as one group (not per host or path): a target's
        history goes on when it moves to another host.
        """
        if not tags:
            raise OperatorError("forget needs tags: it never applies to a whole repository")
        args = ["forget", "--json", "--group-by", "", *_tag_flags(tags), *retention.flags()]
        done = self._run("forget snapshots in", args, timeout=self.timeout)
        kept: list[Snapshot] = []
        removed: list[Snapshot] = []
        for group in output.parse(done.stdout, self.display) or []:
            kept += [Snapshot.from_json(s) for s in group.get("keep") or []]
            removed += [Snapshot.from_json(s) for s in group.get("remove") or []]
        if removed:
            self._run("prune", ["prune"], timeout=self.timeout)
        log.info("forgot %d snapshots in %s, kept %d", len(removed), self.display, len(kept))
        return Forgotten(tuple(kept), tuple(removed), bool(removed))

    def restore(
        self,
        snapshot_id: str,
        into: Path,
        *,
        tags: Sequence[str] = (),
        paths: Sequence[str] = (),
        timeout: float | None = None,
    ) -> Path:
        """Restore a snapshot (or "latest" of those with ``tags``) into an empty directory.

        The snapshot's tree is recreated below ``into`` (``into/srv/app/storage/...``);
        ``paths``: only these (absolute paths in that tree). Returns ``into``.
        """
        if snapshot_id != "latest":
            _check_id(snapshot_id)
        into = Path(into)
        try:
            into.mkdir(mode=0o700, parents=True, exist_ok=True)
            if any(into.iterdir()):
                raise OperatorError(f"restore needs an empty directory; {into} is not")
        except OSError as exc:
            raise InfrastructureError(f"cannot prepare {into}: {exc.strerror}") from exc
        args = ["restore", snapshot_id, "--target", str(into), *_tag_flags(tags)]
        for path in paths:
            args += ["--include", path]
        self._run("restore from", args, timeout=timeout or self.timeout)
        return into

    def dump(self, snapshot_id: str, path: str) -> bytes:
        """One file of a snapshot (``path``: absolute in its tree)."""
        if snapshot_id != "latest":
            _check_id(snapshot_id)
        done = self._run("read from", ["dump", snapshot_id, path], timeout=self.timeout)
        return done.stdout

    def contents(self, snapshot_id: str) -> SnapshotContents:
        """What a snapshot taken from a ``staging`` tree holds (its manifest)."""
        try:
            raw = self.dump(snapshot_id, MANIFEST_PATH)
        except output.Failed as exc:  # restic could read the snapshot, not that file
            raise OperatorError(
                f"snapshot {snapshot_id} in {self.display} has no rollhook manifest: {exc}"
            ) from exc
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise OperatorError(f"snapshot {snapshot_id}: unreadable manifest") from exc
        return SnapshotContents.from_json(data)

    def check(self, read_data_subset: str | None = None) -> CheckResult:
        """Verify the repository's structure; ``read_data_subset`` ("10%", "1/5", "500M")
        also reads that part of the data back and verifies it."""
        args = ["check"]
        if read_data_subset is not None:
            if not _SUBSET.match(read_data_subset):
                raise OperatorError(f"invalid read_data_subset {read_data_subset!r}")
            args.append(f"--read-data-subset={read_data_subset}")
        try:
            self._run("check", args, timeout=self.timeout)
        except output.Failed as failed:
            return CheckResult(False, failed.problems, read_data_subset)
        return CheckResult(True, (), read_data_subset)

    def unlock(self) -> None:
        """Remove stale locks (a killed restic's); live ones stay."""
        self._run("unlock", ["unlock"], timeout=self.short_timeout, retry_lock=False)

    # -- running restic --------------------------------------------------------------

    def _snapshot(self, snapshot_id: str) -> Snapshot:
        args = ["snapshots", "--json", _check_id(snapshot_id)]
        found = output.parse(
            self._run("list", args, timeout=self.short_timeout, lock=False).stdout, self.display
        )
        if not found:
            raise InfrastructureError(f"snapshot {snapshot_id} is not in {self.display}")
        return Snapshot.from_json(found[0])

    def _argv(self, args: Sequence[str], *, lock: bool = True) -> list[str]:
        config = self.config
        argv = [config.restic, "--repo", config.repository]
        if not lock:
            argv.append("--no-lock")
        argv += ["--password-file", str(Path(config.password_file).absolute())]
        for key, value in config.options.items():
            argv += ["--option", f"{key}={value}"]
        if config.cache_dir is not None:
            argv += ["--cache-dir", str(config.cache_dir)]
        return [*argv, *args]

    def _run(
        self,
        what: str,
        args: Sequence[str],
        *,
        timeout: float,
        cwd: Path | None = None,
        ok: tuple[int, ...] = (0,),
        retry_lock: bool = True,
        lock: bool = True,
    ) -> procs.Completed:
        verb = args[0]
        try:
            done = procs.run(
                self._argv(args, lock=lock),
                env=self._env,
                timeout=timeout,
                cwd=cwd,
                on_spawn=self.on_spawn,
            )
        except StepTimeout as exc:
            raise StepTimeout(
                f"restic {verb} on {self.display} ran past its {timeout:g}s deadline"
            ) from exc
        except DeployError as exc:
            raise InfrastructureError(self._scrub(f"restic {verb}: {exc}")) from exc
        if done.returncode in ok:
            return done
        error = self._failure(what, done)
        if isinstance(error, RepositoryLocked) and retry_lock:
            log.info("restic %s: %s; removing stale locks and trying again", verb, error)
            self.unlock()
            return self._run(
                what, args, timeout=timeout, cwd=cwd, ok=ok, retry_lock=False, lock=lock
            )
        raise error

    def _failure(self, what: str, done: procs.Completed) -> DeployError:
        stderr = self._scrub(done.stderr.decode(errors="replace"))
        head = f"restic could not {what} {self.display}"
        return output.failure(head, stderr, str(self.config.password_file))

    def _scrub(self, text: str) -> str:
        try:
            password = Path(self.config.password_file).read_text().rstrip("\r\n")
        except (OSError, UnicodeDecodeError):
            password = ""
        return output.scrub(text, [password, *self.config.env.values()])


def _restic_env(env: Mapping[str, str]) -> dict[str, str]:
    for key in env:
        if key in OWN:
            raise OperatorError(
                f"{key} cannot be set in the restic environment: the repository and its "
                "password file are configured by their own settings"
            )
        if not key.startswith(ENV_PREFIXES):
            raise OperatorError(
                f"{key} is not a restic setting (allowed: {', '.join(ENV_PREFIXES)}...)"
            )
    # TZ: times given to restic (--time) and read back are UTC, whatever the host's zone.
    return procs.child_env(**dict(env), TZ="UTC")


def _tag_flags(tags: Sequence[str]) -> list[str]:
    """One --tag holding them all: restic selects snapshots that carry every one."""
    for tag in tags:
        if not tag or "," in tag or "\n" in tag:
            raise OperatorError(f"invalid snapshot tag {tag!r}: not empty, no commas")
    return ["--tag", ",".join(tags)] if tags else []


def _check_id(snapshot_id: str) -> str:
    if not _SNAPSHOT_ID.match(snapshot_id):
        raise OperatorError(f"invalid snapshot id {snapshot_id!r}")
    return snapshot_id


__all__ = [
    "CheckResult",
    "Forgotten",
    "RemoteConfig",
    "Repository",
    "RepositoryLocked",
    "RepositoryMissing",
    "RepositoryUnreachable",
    "Retention",
    "Snapshot",
    "WrongPassword",
]
