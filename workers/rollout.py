"""One deployment, start to finish: sync, plan, preflight, backup, apply, gate, roll back.

The pipeline takes its adapters (:class:`Tools`) and a journal, and returns a
:class:`RolloutResult`; recording the final status and notifying happen around it
(runner.py).
The order is chosen for the data: nothing stops before the new images are pulled and
the first backup pass is done (and the rollback's copy of the data made from it); the
final backup pass runs in the short window while the app is stopped; the new version
never starts before its backup is complete; and from the moment it starts, any failure
rolls back to the previous images and config with the data as it was.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rollhook.images import parse_reference, short_digest
from rollhook.records.deployments import DeploymentRecord
from rollhook.records.targets import TargetState
from rollhook.targets import Target
from workers import adoption
from workers.backup import BackupStore, Source
from workers.backup.early import EarlyCopy
from workers.backup.prepared import PreparedRestore
from workers.backup.restore import StagingCancelled
from workers.backup.running import RunningBackup
from workers.colours import Colour, gate_url
from workers.compose import Compose, ComposeSpec, write_override
from workers.drift import snapshot
from workers.engine import DockerEngine
from workers.errors import DeployError, InfrastructureError, LeaseLost, OperatorError
from workers.gitsync import GitRepo
from workers.grace import Stopped, stop_service
from workers.health import GateResult, gate
from workers.journal import Journal
from workers.layout import TargetDirs, compose_spec
from workers.plan import Plan, make_plan
from workers.signatures import (
    MAX_RANGE_COMMITS,
    CommitSignatures,
    UnsignedCommit,
    range_to_check,
)
from workers.traffic import Traffic

if TYPE_CHECKING:
    from workers.start_first import StartFirst

MIN_FREE_IMAGE_BYTES = 1 << 30
BACKUP_MARGIN_BYTES = 256 << 20
ENGINE_BACK_SECONDS = 120.0  # how long going back waits for a restarting Docker engine


@dataclass
class Tools:
    git: GitRepo
    compose: Compose
    engine: DockerEngine
    backups: BackupStore
    # The front proxy (workers/traffic.py); None: the target has none.
    traffic: Traffic | None = None
    # The target's verify.commits check; None when it has none (runner.py builds it).
    signatures: CommitSignatures | None = None


@dataclass
class RolloutResult:
    status: str  # succeeded | failed | rolled_back | no_op
    reason: str | None = None
    plan: Plan | None = None
    commit: str | None = None
    commit_info: dict[str, Any] | None = None
    images: dict[str, dict[str, str | None]] = field(default_factory=dict)
    backup_id: str | None = None
    changed: bool = False  # the app was touched (for notifications)
    rollback_failed: bool = False
    adopted: bool = False  # a project started by hand, already as planned (workers.adoption)
    # A no_op because nothing is to be done (what runs matches, no watched path changed):
    # the reconcile loop counts the commit as in sync.
    in_sync: bool = False
    refused: bool = False  # refused before anything ran, yet told (an unsigned commit)


@dataclass
class Previous:
    """What ran before this deployment, to roll back to."""

    deployment_id: str | None
    commit: str | None
    images: dict[str, str]  # service -> image as the containers run it
    colour: Colour | None = None  # start-first: the colour that serves (workers/colours.py)
    fingerprint: str | None = None  # the desired state it applied (commit + config hash)


@dataclass
class Rollout:
    target: Target
    record: DeploymentRecord
    state: TargetState
    previous: Previous
    journal: Journal
    tools: Tools
    dirs: TargetDirs
    announce: Callable[[RolloutResult], None]
    cancelled: Callable[[], bool]
    outcome: RolloutResult = field(init=False, default_factory=lambda: RolloutResult("failed"))
    deadline: float = field(init=False)
    # The rollback's copy of the data made from this run's backup pass 1 (backup/early.py).
    early: EarlyCopy | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.target.deploy_timeout
        if self.tools.traffic is None:
            self.tools.traffic = Traffic(self.target, None, self.journal.log)
        self.traffic: Traffic = self.tools.traffic

    # -- the two kinds of deployment ---------------------------------------------------

    def deploy(self) -> RolloutResult:
        requested = self.record.requested
        # A webhook's commit is a hint: an automatic deployment always takes the branch
        # head as fetched now, so a late or replayed delivery can never go back in
        # history. Only a person (the API, the CLI) picks an older commit on purpose.
        commit = self._sync(requested.get("ref") if requested.get("manual") else None)
        if commit is None:
            return self.outcome
        plan = self._plan(commit, requested.get("images") or [], self.state.pins or {})
        if plan is None:
            return self.outcome
        if self.outcome.adopted:  # started by hand and already as planned: no restart
            return adoption.adopt(self, plan)
        return self._roll_out(plan, restore_from=None)

    def rollback(self, to: DeploymentRecord, restore_from: str | None) -> RolloutResult:
        """Go back to a recorded good deployment, with the data it left when asked."""
        commit = to.commit
        if commit is None:  # a succeeded deployment always has its commit
            raise OperatorError(f"{to.id} has no commit to roll back to")
        with self.journal.step("sync") as step:
            release = self.dirs.release(commit)
            if not release.exists():  # pruned, or never exported on this host
                self.tools.git.fetch(self.target.branch)
                self.tools.git.export(commit, self.target.path, release)
            self._verify_signatures(commit, since=None)
            step["detail"] = f"rolling back to {to.id} at {commit[:12]}"
        self.outcome.commit, self.outcome.commit_info = commit, to.commit_info
        self.journal.update(commit=commit, commit_info=to.commit_info)
        pins = {
            service: {"ref": image.split("@", 1)[0], "digest": image.split("@", 1)[1]}
            for service, image in ((s, v["new"]) for s, v in (to.images or {}).items())
            if image and "@" in image
        }
        plan = self._plan(commit, [], pins, forced=True, data_change=restore_from is not None)
        if plan is None:
            return self.outcome
        return self._roll_out(plan, restore_from=restore_from)

    # -- steps -------------------------------------------------------------------------

    def _sync(self, ref: str | None) -> str | None:
        target, git = self.target, self.tools.git
        with self.journal.step("sync") as step:
            head = git.fetch(target.branch)
            commit = git.resolve(ref, target.branch) if ref else head
            info = git.commit_info(commit)
            self.outcome.commit = commit
            self.outcome.commit_info = {
                "sha": info.sha,
                "message": info.message,
                "author": info.author,
                "date": info.date,
            }
            self.journal.update(commit=commit, commit_info=self.outcome.commit_info)
            step["detail"] = f"{target.branch} at {commit[:12]}: {info.message}"
            self.journal.log(f"sync: {step['detail']}")
            manual = self.record.manual
            wanted_images = self.record.requested.get("images")
            if self.previous.commit and not manual and not wanted_images:
                changed = git.changed_paths(self.previous.commit, commit)
                if changed is not None and not any(target.watches_path(p) for p in changed):
                    self.outcome.status, self.outcome.in_sync = "no_op", True
                    self.outcome.reason = (
                        f"no watched path changed under {target.path} since "
                        f"{self.previous.commit[:12]}"
                    )
                    step["detail"] = self.outcome.reason
                    return None
            self._verify_signatures(commit, since=self.previous.commit)
            git.export(commit, target.path, self.dirs.release(commit))
        return commit

    def _verify_signatures(self, commit: str, *, since: str | None) -> None:
        """Refuse a commit (with ``range``: any commit since ``since``) without an allowed
        signature, before its files are exported: the app is not touched."""
        rule = self.target.verify.commits
        if rule is None:
            return
        if self.tools.signatures is None:  # never skipped silently
            raise InfrastructureError("verify.commits is set but no signature check was given")
        commits = [commit]
        try:
            if rule.range:
                listed = self.tools.git.commits_since(since, commit, MAX_RANGE_COMMITS + 1)
                commits += range_to_check(since, commit, listed)
            self.tools.signatures.verify(commits)
        except UnsignedCommit:
            self.outcome.refused = True
            raise
        self.journal.log(f"sync: {len(commits)} commit(s) signed by an allowed key")

    def _plan(
        self,
        commit: str,
        hints: list[dict[str, Any]],
        pins: dict[str, dict[str, Any]],
        *,
        forced: bool = False,
        data_change: bool = False,
    ) -> Plan | None:
        tools, target = self.tools, self.target
        with self.journal.step("plan") as step:
            spec = compose_spec(target, self.dirs, commit, None)
            self.dirs.work.mkdir(parents=True, exist_ok=True)
            config = tools.compose.config(spec)
            if forced:  # a rollback pins every service as the recorded deployment ran it
                pins = {
                    s: {**p, "image_line": config["services"].get(s, {}).get("image")}
                    for s, p in pins.items()
                }
            plan = make_plan(
                target=target,
                commit=commit,
                config=config,
                persisted_pins=pins,
                hints=hints,
                deployment_id=self.record.id,
                registry=tools.engine,
                volume_path=tools.engine.volume_path,
            )
            del config  # holds interpolated secrets; nothing below needs it
            for note in plan.notes:
                self.journal.log(f"plan: {note}")
            self.outcome.plan = plan
            self.outcome.images = {
                service: {"old": self.previous.images.get(service), "new": image}
                for service, image in plan.images.items()
            }
            self.journal.update(
                images=self.outcome.images,
                config_hash=plan.config_hash,
                fingerprint=plan.fingerprint,
                requested={**self.record.requested, "pins": plan.pins},
            )
            if not data_change and self._runs_already(plan):
                self.outcome.status, self.outcome.in_sync = "no_op", True
                self.outcome.reason = "what runs already matches the desired state"
                step["detail"] = self.outcome.reason
                return None
            if self._drifted_from_current(plan, forced=forced or data_change):
                step["detail"] = self.outcome.reason
                return None
            if not (data_change or forced) and (same := adoption.unchanged(self, spec, plan)):
                self.outcome.reason = step["detail"] = same
                if self.state.current_deployment_id:  # adopted before: nothing to do
                    self.outcome.status = "no_op"
                    return None
                self.outcome.adopted = True
                return plan
            failed = self.state.failed_fingerprint
            if failed == plan.fingerprint and not self.record.manual:
                self.outcome.status = "no_op"
                self.outcome.reason = (
                    "this desired state failed before and is not retried automatically; "
                    "push a new commit or image, or deploy it by hand"
                )
                step["detail"] = self.outcome.reason
                return None
            step["detail"] = ", ".join(
                f"{s}: {short_digest(self.previous.images.get(s, '').partition('@')[2])}"
                f" -> {short_digest(i.partition('@')[2])}"
                for s, i in plan.images.items()
            )
            self.journal.log(f"plan: {step['detail']}")
        return plan

    def _drifted_from_current(self, plan: Plan, *, forced: bool) -> bool:
        """A person's sync whose desired state is the current deployment's (same commit,
        digests and config) while that does not run as deployed (stopped, removed): in
        sync with Git, so no deployment and no backup; the runner heals what drifted."""
        if forced or self.record.kind != "sync" or self.previous.fingerprint is None:
            return False
        if plan.fingerprint != self.previous.fingerprint:
            return False
        self.outcome.status, self.outcome.in_sync = "no_op", True
        self.outcome.reason = f"the desired state is {self.previous.deployment_id}'s"
        return True

    def _runs_already(self, plan: Plan) -> bool:
        """The gated service carries the plan's hash and every service is running."""
        project = self.previous.colour.project if self.previous.colour else self.target.project
        running = {c.service: c for c in self.tools.engine.containers(project) if c.running}
        gated = running.get(self.target.service)
        return (
            gated is not None
            and gated.labels.get("rollhook.config-hash") == plan.config_hash
            and all(service in running for service in plan.services)
        )

    def _prepare_bind_files(self, plan: Plan) -> None:
        """Create a missing bind-mounted ``.env`` as an empty file.

        Docker would create a *directory* at a missing bind source, and anything-llm
        then loses its settings on every update (anything-llm issue #1013). Never through
        a symlink (O_CREAT|O_EXCL|O_NOFOLLOW, relative to the open parent directory): as
        root, that would create a file wherever the app pointed the link.
        """
        for source in plan.sources:
            if not (source.name.startswith("bind:") and source.path.name.endswith(".env")):
                continue
            done = source.create_empty_file(plan.sources)
            if done == "created":
                self.journal.log(
                    f"created empty {source.path} (a bind-mounted runtime .env); "
                    "make it writable by the app's user if it runs unprivileged"
                )
            elif done == "symlink":
                self.journal.log(
                    f"not creating {source.path}: it is a symlink to nothing, or a symlink in "
                    "the app's data is on the way to it; rollhook never creates a file through one"
                )

    def write_override(self, plan: Plan) -> None:
        """This deployment's override: digests, labels, the gated service's grace."""
        target = self.target
        write_override(
            self.dirs.override(self.record.id),
            plan.images,
            {
                target.service: {
                    "rollhook.target": target.name,
                    "rollhook.deployment": self.record.id,
                    "rollhook.commit": plan.commit,
                    "rollhook.config-hash": plan.config_hash,
                }
            },
            grace={target.service: target.stop_timeout},
        )

    def check_health(self) -> GateResult:
        """The health gate on what runs now (nothing is restarted)."""
        return self._gate(forward=True)

    def _roll_out(self, plan: Plan, restore_from: str | None) -> RolloutResult:
        target, tools, journal = self.target, self.tools, self.journal
        self.outcome.changed = True
        self.announce(self.outcome)
        self.write_override(plan)
        self._prepare_bind_files(plan)
        spec = compose_spec(target, self.dirs, plan.commit, self.record.id)
        sources = plan.sources
        backing_up = target.backup.enabled and bool(sources)

        with journal.step("preflight") as step:
            self._check_disk(sources if backing_up else [])
            pulled = self._pull(plan)
            step["detail"] = f"pulled {pulled}, {len(plan.images) - pulled} already present"

        if target.strategy == "start-first":
            return self._start_first().roll_out(plan)
        if restore_from is not None:
            # The app still runs: copy the data to restore now, so the restore only swaps.
            self._stage_restore(restore_from)

        running_backup = None
        if backing_up:
            # One backup per attempt: a run resumed after a worker died takes a fresh one.
            backup_id = f"{self.record.id}-{self.record.attempt}"
            with journal.step("backup") as step:
                running_backup = tools.backups.start(backup_id, sources)
                step["detail"] = f"pass 1 of {len(sources)} source(s) while the app runs"
                self.early = self._copy_early(running_backup, step)
        else:
            journal.skip("backup", "backups disabled" if sources else "no data to back up")

        try:
            with journal.step("stop") as step:
                self._check_time()
                self.traffic.hold()  # before the app stops: no request may meet it gone
                stopped = self._stop(spec, step)
                step["detail"] = f"{target.service} stopped in {stopped.seconds:.1f} s" + (
                    f"; {stopped.note}" if stopped.note else ""
                )
            if running_backup is not None:
                with journal.step("snapshot") as step:
                    info = running_backup.finish()
                    running_backup = None
                    self.outcome.backup_id = info.id
                    journal.update(backup_id=info.id)
                    step["detail"] = f"backup {info.id} complete"
            if restore_from is not None:
                with journal.step("restore") as step:
                    tools.backups.restore(restore_from)
                    step["detail"] = f"data restored from backup {restore_from}"
        except LeaseLost:
            raise
        except BaseException:
            # The new version never started, so the data is as the old one left it.
            # Bring the old one back first: aborting deletes the partial backup, which
            # takes a while on a large tree and must not lengthen the downtime.
            self.bring_back()
            self._drop_backup(running_backup)
            raise

        return self._start_and_gate(spec)

    def resume(self) -> RolloutResult:
        """Finish a deployment whose worker died after the new version was started.

        The journal says how far it got: from "start" on, the planned state is applied
        again (compose is idempotent) and gated; if the dead worker was already rolling
        back, the rollback is done again.
        """
        if self.target.strategy == "start-first":
            return self._start_first().resume()
        plan = self._recorded_plan()
        self.journal.log(f"recovery: resuming {self.record.id} (attempt {self.record.attempt})")
        if self.journal.reached("rollback"):
            return self.abandon("the worker died while rolling back")
        spec = compose_spec(self.target, self.dirs, plan.commit, self.record.id)
        try:
            return self._start_and_gate(spec)
        except DeployError as exc:
            self.outcome.reason = self.outcome.reason or str(exc)
            return self.outcome

    def bring_back(self) -> bool:
        """The old version was stopped and the new one never started (this run failed
        there, or a dead worker left it so): start the old one again, with its own data.
        If a restore of older data had begun (a rollback), the complete snapshot of the
        current data goes back first. False when that failed (recorded, loudly)."""
        snapshot = self.outcome.backup_id or self.record.backup_id
        try:
            with self.journal.step("restart-previous") as step:
                self._await_engine()
                if self.journal.left_running("stop"):
                    self._finish_stop()
                if self.journal.reached("restore") and snapshot:
                    self.tools.backups.restore(snapshot)
                    self.journal.log(f"data put back from snapshot {snapshot}")
                self._restart_previous()
                step["detail"] = "previous version serving again"
        except LeaseLost:
            raise
        except DeployError as exc:
            self._rollback_failed(exc)
            return False
        return True

    def _finish_stop(self) -> None:
        """Let a dead worker's stop end before the old version is started again.

        The engine goes on stopping a container after its client is gone, and kills it
        once the grace period is over: started (``up`` finds it running) and gated in
        the meantime, the old version would answer, pass, and then be killed. Stopping
        the service again waits for the stop under way (at most the same grace), so what
        runs next is started afresh. The spec is the one the dead worker stopped with.
        """
        record, target = self.record, self.target
        if record.commit is not None:
            spec = compose_spec(target, self.dirs, record.commit, record.id)
        elif self.previous.commit is not None:
            spec = compose_spec(
                target, self.dirs, self.previous.commit, self.previous.deployment_id
            )
        else:
            return  # nothing to stop with: the dead worker cannot have reached its stop
        self.journal.log(f"recovery: waiting for the interrupted stop of {target.service} to end")
        self.tools.compose.stop(
            spec, [target.service], timeout=target.stop_timeout + 30, grace=target.stop_timeout
        )

    def abandon(self, why: str) -> RolloutResult:
        """Stop trying the new version and leave the old one serving.

        If the new version may have started, this is a rollback (data restored); if the
        old one was only stopped, it is started again on its untouched data.
        """
        if self.target.strategy == "start-first" and self.journal.reached("start"):
            return self._start_first().abandon(why)
        if self.journal.reached("start", "gate", "rollback"):
            self._recorded_plan()
            self._roll_back_after_start(InfrastructureError(why))
            if self.outcome.status == "rolled_back":
                self.outcome.reason = f"{why}; rolled back"
            return self.outcome
        if self.journal.reached("stop", "snapshot", "restore"):
            self.bring_back()
        self.outcome.status = "failed"
        self.outcome.reason = self.outcome.reason or why
        return self.outcome

    def _recorded_plan(self) -> Plan:
        """The plan a dead worker made, as its record and files on disk hold it."""
        record = self.record
        if record.commit is None or record.config_hash is None or record.fingerprint is None:
            raise InfrastructureError(f"{record.id} holds no plan to pick up")
        plan = Plan(
            commit=record.commit,
            images={s: v["new"] for s, v in (record.images or {}).items()},
            pins=record.requested.get("pins") or {},
            config_hash=record.config_hash,
            fingerprint=record.fingerprint,
            services=sorted(record.images or {}),
        )
        self.outcome.plan, self.outcome.commit = plan, plan.commit
        self.outcome.commit_info = record.commit_info
        self.outcome.images = record.images or {}
        self.outcome.backup_id = record.backup_id
        self.outcome.changed = True
        return plan

    def _pull(self, plan: Plan) -> int:
        """Pull what the engine does not have yet; how many images were pulled."""
        pulled = 0
        for service, image in plan.images.items():
            self._check_time()
            if self.tools.engine.image_id(parse_reference(image).pullable()) is not None:
                self.journal.log(f"preflight: {service} {image} already present")
                continue
            self.tools.engine.pull(image, timeout=self._remaining(1800))
            self.journal.log(f"preflight: pulled {service} {image}")
            pulled += 1
        return pulled

    def _start_and_gate(self, spec: ComposeSpec) -> RolloutResult:
        journal, tools = self.journal, self.tools
        # While the new version boots and is gated, the rollback's copy of the data is
        # made from the sealed snapshot: a rollback then only swaps it in by rename.
        backup_id = self.outcome.backup_id
        early = self.early if self.early and self.early.backup_id == backup_id else None
        ahead = PreparedRestore(tools.backups, backup_id, early).start() if backup_id else None
        try:
            with journal.step("start") as step:
                self._check_time()
                tools.compose.up(
                    spec, timeout=self._remaining(300), remove_orphans=self.target.sync.prune
                )
                applied = spec.files[0].name
                step["detail"] = f"{applied} applied with rollhook's override (digests, labels)"
            with journal.step("gate") as step:
                result = self._gate(forward=True)
                step["detail"] = result.reason
                if not result.ok:
                    raise DeployError(f"health gate failed: {result.reason}")
            # What drift is compared with later: each service's compose config hash.
            journal.update(containers=snapshot(tools.engine.containers(self.target.project)))
        except LeaseLost:
            if ahead is not None:
                ahead.cancel()  # what it staged is reused by whoever restores next
            raise
        except BaseException as exc:
            self._roll_back_after_start(exc, ahead)
            if self.outcome.reason is None:
                self.outcome.reason = str(exc)
            raise
        self.traffic.serve()
        if ahead is not None:
            ahead.discard()
        self.outcome.status = "succeeded"
        self.outcome.reason = None
        return self.outcome

    # -- health ------------------------------------------------------------------------

    def _gate(self, *, forward: bool, colour: Colour | None = None) -> GateResult:
        """The health gate. Going forward it fits in the deployment's deadline; going
        back (a rollback, a restart of the old version) it always gets the full timeout:
        the deadline stops progress, never a recovery. A start-first ``colour`` is gated
        on its own project and port."""
        target = self.target
        engine = self.tools.engine
        project = colour.project if colour is not None else target.project
        url = gate_url(target.health.url, colour.port) if colour else target.health.url

        def watch() -> Any:
            containers = [c for c in engine.containers(project) if c.service == target.service]
            return containers[0].state if containers else None

        timeout = target.health.timeout
        result = gate(
            url,
            timeout=self._remaining(timeout) if forward else timeout,
            settle=target.health.settle,
            interval=target.health.interval,
            watch=watch,
            cancelled=self.cancelled,
        )
        if self.cancelled():
            # Another worker holds the target now: stop touching the app and leave the
            # record to it. A gate cut short by that is no verdict on the release.
            raise LeaseLost(f"{self.record.id}: lease lost during the health gate")
        return result

    # -- going back --------------------------------------------------------------------

    def _restart_previous(self) -> None:
        """Start what ran before (its config, its images by digest), and gate it."""
        previous, journal = self.previous, self.journal
        if previous.deployment_id is None or previous.commit is None:
            journal.log("rollback: nothing was deployed by rollhook before; leaving it stopped")
            return
        spec = compose_spec(self.target, self.dirs, previous.commit, previous.deployment_id)
        self.tools.compose.up(spec, timeout=300, remove_orphans=self.target.sync.prune)
        result = self._gate(forward=False)
        if not result.ok and self._gated_service_down():
            # It served before this deployment and is not running now: stopped or killed
            # from outside since ``up`` (a stop still under way, the engine restarting).
            # Start it once more rather than declare the app down.
            journal.log(
                f"rollback: {previous.deployment_id} is not running ({result.reason}); "
                "starting it again"
            )
            self.tools.compose.up(spec, timeout=300)
            result = self._gate(forward=False)
        if not result.ok:
            raise InfrastructureError(f"the previous version is unhealthy too: {result.reason}")
        self.traffic.serve()
        journal.log(f"rollback: {previous.deployment_id} serving again")

    def _gated_service_down(self) -> bool:
        """No container of the gated service is running or restarting (exited, killed,
        removed, or only created)."""
        states = [
            c.state
            for c in self.tools.engine.containers(self.target.project)
            if c.service == self.target.service
        ]
        return not any(state.running or state.restarting for state in states)

    def _roll_back_after_start(
        self, cause: BaseException, ahead: PreparedRestore | None = None
    ) -> None:
        journal, tools, target = self.journal, self.tools, self.target
        journal.log(f"rolling back: {cause}")
        commit = self.outcome.plan.commit if self.outcome.plan else self.record.commit
        try:
            with journal.step("rollback") as step:
                if commit is None:  # the plan is known whenever the new version may have run
                    raise InfrastructureError(f"{self.record.id}: no release to stop")
                self._await_engine()
                spec = compose_spec(target, self.dirs, commit, self.record.id)
                # Held already, unless a proxy restart reset it; never fails the rollback.
                self.traffic.hold(required=False)
                self._stop(spec, step)
                if self.outcome.backup_id is not None:
                    if ahead is not None:
                        ahead.wait()
                    restored = tools.backups.restore(self.outcome.backup_id)
                    journal.log(
                        f"rollback: data restored from backup {self.outcome.backup_id} in "
                        f"{restored.seconds:.1f} s"
                        + (" (copied while the new version was gated)" if ahead else "")
                    )
                    # A .pass1 copy left unfinished (a dead worker's, or staging failed).
                    tools.backups.discard_staged(self.outcome.backup_id)
                self._restart_previous()
                step["detail"] = (
                    "previous version serving"
                    if self.previous.deployment_id
                    else "stopped: nothing ran before"
                )
            self.outcome.status = "rolled_back"
        except LeaseLost:
            raise
        except DeployError as exc:
            self._rollback_failed(exc)

    def _await_engine(self) -> None:
        """Going back needs the Docker engine: when it does not answer (restarting, say,
        which is also what may have failed the deployment), wait for it, up to
        ENGINE_BACK_SECONDS, rather than fail the rollback at once and leave the app to
        whatever the engine's restart policy brings back. Past that, the step below fails
        and says why."""
        deadline = time.monotonic() + ENGINE_BACK_SECONDS
        if self.tools.engine.answers():
            return
        self.journal.log("the Docker engine does not answer; waiting for it to go back")
        while not self.tools.engine.answers() and time.monotonic() < deadline:
            if self.cancelled():
                raise LeaseLost(f"{self.record.id}: lease lost waiting for the Docker engine")
            time.sleep(1.0)

    def _rollback_failed(self, exc: BaseException) -> None:
        self.outcome.status = "failed"
        self.outcome.rollback_failed = True
        self.outcome.reason = f"ROLLBACK FAILED: {exc}"
        self.journal.log(
            f"ROLLBACK FAILED: {exc}; the app may be down, act now", level=logging.CRITICAL
        )

    # -- stopping and restoring ----------------------------------------------------------

    def _start_first(self) -> StartFirst:
        from workers.start_first import StartFirst  # noqa: PLC0415 (it builds on Rollout)

        return StartFirst(self)

    def _stop(
        self, spec: ComposeSpec, step: dict[str, Any], services: list[str] | None = None
    ) -> Stopped:
        """Stop ``services`` (default: the gated one) of ``spec``'s project; a stop that
        waited out its grace period (SIGTERM ignored) is noted on the step and in the log."""
        target = self.target
        stopped = stop_service(
            self.tools.compose,
            self.tools.engine,
            spec,
            services or [target.service],
            target.stop_timeout,
        )
        if stopped.note:
            step["note"] = stopped.note
            self.journal.log(f"{step['name']}: {stopped.note}", level=logging.WARNING)
        return stopped

    def _drop_backup(self, running: RunningBackup | None) -> None:
        """The new version never started: its backup and the copy made from it go."""
        if running is not None:
            running.abort()
        if self.early is not None:
            self.early.discard()

    def _copy_early(self, running: RunningBackup, step: dict[str, Any]) -> EarlyCopy | None:
        """The rollback's copy of the data, made from backup pass 1 while the app still
        serves (the new version's gate then only brings the final pass's changes into
        it): a rollback's downtime no longer grows with the data. A failure only means
        the copy is made whole during the gate."""
        began = time.monotonic()
        try:
            early = self.tools.backups.stage_early(running, self.cancelled)
        except StagingCancelled:
            raise LeaseLost(f"{self.record.id}: the lease on {self.target.name} was lost") from None
        except Exception as exc:  # noqa: BLE001 (the gate's staging copies it whole)
            self.journal.log(f"backup: could not copy pass 1 for a rollback ahead: {exc}")
            return None
        early.seconds = time.monotonic() - began
        step["detail"] += f"; the rollback's copy made from it in {early.seconds:.1f} s"
        return early

    def _stage_restore(self, backup_id: str) -> None:
        """Copy a backup's data next to the live data before the app stops (a failure
        only means the restore copies it itself, app stopped)."""
        ahead = PreparedRestore(self.tools.backups, backup_id).start()
        ahead.wait()
        if ahead.error:
            self.journal.log(f"restore: could not stage {backup_id} ahead: {ahead.error}")
        else:
            self.journal.log(
                f"restore: {backup_id} staged while the app runs ({ahead.seconds:.1f} s)"
            )

    # -- guards ------------------------------------------------------------------------

    def _remaining(self, cap: float) -> float:
        return max(1.0, min(cap, self.deadline - time.monotonic()))

    def _check_time(self) -> None:
        if self.cancelled():
            raise LeaseLost(f"{self.record.id}: the lease on {self.target.name} was lost")
        if time.monotonic() > self.deadline:
            raise InfrastructureError(
                f"deployment ran past its deadline ({self.target.deploy_timeout:.0f}s)"
            )

    def _check_disk(self, sources: list[Source]) -> None:
        root = self.tools.engine.docker_root()
        try:
            free = shutil.disk_usage(root).free
        except FileNotFoundError:
            # rollhook in a container sees the engine's socket, not always its data root
            # (deploy/rollhook.compose.yml mounts only the volumes below it).
            self.journal.log(
                f"the engine's data root {root} is not visible here: free space for images "
                "not checked",
                level=logging.WARNING,
            )
            free = MIN_FREE_IMAGE_BYTES
        if free < MIN_FREE_IMAGE_BYTES:
            raise InfrastructureError(
                f"only {free >> 20} MiB free for images under {root}; need 1024 MiB"
            )
        if sources:
            self.dirs.backups.mkdir(parents=True, exist_ok=True)
            need = self.tools.backups.estimate(sources) + BACKUP_MARGIN_BYTES
            free = shutil.disk_usage(self.dirs.backups).free
            if free < need:
                raise OperatorError(
                    f"backup needs {need >> 20} MiB, {free >> 20} MiB free under "
                    f"{self.dirs.backups}"
                )
