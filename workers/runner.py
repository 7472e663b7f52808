"""Running a target's deployments: one at a time, newest desired state wins.

``run_target`` takes the target's lease, first finishes any deployment a dead worker
left (its lease expired), then coalesces what is queued into one deployment for the
newest request (older ones are recorded as superseded; their image pins carried over),
runs it, records the outcome, and looks again. It releases the lease *before* the last
look, so a request queued meanwhile is never stranded: either its own ``run_target``
gets the lease, or this loop sees it.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack, suppress
from typing import Any

from rollhook.broker import NOTIFY, OFFSITE_SHIP
from rollhook.records import deployments
from rollhook.records import targets as target_records
from rollhook.records.deployments import DeploymentRecord
from rollhook.records.targets import TargetState
from rollhook.targets import Target
from workers import colours, healing, logs, reconcile
from workers.approval import tell_pending
from workers.backup import BackupStore
from workers.compose import Compose
from workers.context import WorkerContext
from workers.engine import DockerEngine
from workers.errors import DeployError, InfrastructureError, LeaseLost, OperatorError
from workers.gitsync import GitRepo
from workers.heal import Heal
from workers.healing import settle
from workers.journal import Journal
from workers.layout import TargetDirs
from workers.lease import Heartbeat, host_lock
from workers.notify import (
    schedule_announcement,
    schedule_approval_progress,
    schedule_report,
    schedule_target_notice,
)
from workers.outcomes import note_outcome
from workers.procs import end_group
from workers.rollout import Previous, Rollout, RolloutResult, Tools
from workers.signatures import CommitSignatures
from workers.traffic import Traffic
from workers.writeback import IMAGE_SOURCES, write_back

logger = logging.getLogger("rollhook.runner")

MAX_ATTEMPTS = 3


def run_target(ctx: WorkerContext, name: str) -> None:
    target = ctx.targets.get(name)
    if target is not None and target.host != ctx.host:
        # A deployment is only ever run by a worker of its target's host: the work stays
        # queued for them (a message routed here by mistake, or an old one).
        logger.warning(
            "%s is on host %s, this worker serves %s: left for that host's workers",
            name,
            target.host,
            ctx.host,
        )
        return
    auto = target.sync.auto if target is not None else True
    while True:
        with ctx.records.begin() as conn:
            window = closed_window(ctx, name)
            held = not has_work(conn, name, auto=auto, window=window)
            if held and window is not None:
                _hold(conn, name, window)
            if not held:
                token = target_records.acquire_lease(conn, name, ctx.owner, ctx.lease_seconds)
        if held:
            if window is not None and target is not None:
                _tell_held(ctx, target, window)
            return
        if token is None:
            return  # another worker holds it and will see our queued record
        try:
            dirs = TargetDirs(ctx.data_dir, name)
            with host_lock(dirs.lock, timeout=ctx.lease_seconds) as locked:
                if not locked:
                    logger.warning("%s: host lock busy; leaving the work for later", name)
                    return
                with ctx.records.begin() as conn:  # the wait may have eaten the lease
                    if not target_records.renew_lease(conn, name, token, ctx.lease_seconds):
                        return
                with Heartbeat(ctx.records, name, token, ctx.lease_seconds) as beat:
                    _drain(ctx, name, token, beat)
        finally:
            with ctx.records.begin() as conn:
                target_records.release_lease(conn, name, token)


def has_work(conn: Any, name: str, *, auto: bool = True, window: str | None = None) -> bool:
    """Work this worker may do now: an orphaned deployment, or queued requests that a
    pause does not hold back (a person's request passes a pause; automatic ones wait).
    In manual mode (``auto`` False) automatic requests wait for approval (a sync).
    ``window``: why the target's deploy window is closed now (None: open); automatic
    requests then wait, a person's request and a heal do not."""
    state = target_records.get(conn, name)
    if state is None:
        return False
    if deployments.running(conn, name):
        return True
    queued = deployments.queued(conn, name)
    if any(r.manual for r in queued):
        return True
    if state.paused or not auto:
        return False
    return any(window is None or not _waits_for_window(r) for r in queued)


# -- deploy windows ------------------------------------------------------------------------
# Outside its windows a target's automatic requests stay queued (the record's reason says
# "pending: ..."), untouched by coalescing; beat's kick (dispatcher.py) asks has_work every
# 2 s, so the first tick after the window opens starts them, the newest superseding the rest.


def closed_window(ctx: WorkerContext, name: str) -> str | None:
    """Why automatic changes of a target must wait now, or None when they may start."""
    target = ctx.targets.get(name)
    if target is None or not target.windows:
        return None
    return target.deploy_windows.holds(ctx.clock())


def _tell_held(ctx: WorkerContext, target: Target, window: str) -> None:
    """Tell once per wait that automatic changes wait for the window (with Approve to
    deploy now, in Slack); a notification problem never stops the runner."""
    try:
        tell_pending(ctx, target, window=window)
    except Exception:
        logger.exception("%s: telling what waits for the deploy window failed", target.name)


def _waits_for_window(record: DeploymentRecord) -> bool:
    """Automatic changes wait; a person's request and a heal (the reconcile loop's kind
    "heal": the current deployment put back, never a new state) do not."""
    return not record.manual and record.kind != "heal"


def _hold(conn: Any, name: str, window: str) -> list[DeploymentRecord]:
    """Mark the automatic requests that wait for the window pending; the others."""
    queued = deployments.queued(conn, name)
    waiting = [r.id for r in queued if _waits_for_window(r)]
    deployments.note_pending(conn, waiting, f"pending: {window}")
    return [r for r in queued if not _waits_for_window(r)]


def _drain(ctx: WorkerContext, name: str, token: int, beat: Heartbeat) -> None:
    target = ctx.targets.get(name)
    while not beat.cancelled():
        with ctx.records.begin() as conn:
            orphans = deployments.running(conn, name)
        if orphans:
            # End what the dead worker left running before touching anything, outside
            # the write transaction (ending a group can take seconds).
            orphan = orphans[0]
            for child in orphan.children or []:
                end_group(child)
            with ctx.records.begin() as conn:
                deployments.start(conn, orphan.id, token, orphan.requested)
                record, resume = deployments.get(conn, orphan.id), True
        else:
            with ctx.records.begin() as conn:
                auto = target.sync.auto if target is not None else True
                window = closed_window(ctx, name)
                record = _coalesce(conn, name, token, auto=auto, window=window)
                resume = False
        if record is None:
            return
        if target is None:
            with ctx.records.begin() as conn:
                deployments.finish(
                    conn, record.id, token, "failed", f"target {name} is not in the config"
                )
            continue
        _execute(ctx, target, record, token, beat, resume=resume)


def _coalesce(
    conn: Any, name: str, token: int, *, auto: bool = True, window: str | None = None
) -> DeploymentRecord | None:
    """Pick what runs next and record what it replaces.

    A person's request goes first and is never replaced by an automatic one; among the
    rest the newest wins, a deployment before any heal (it applies the desired state,
    which puts drift back too; a heal never replaces a deployment). Older requests, and
    heals a deployment makes needless, are superseded by it; their image pins carry over.
    While the target is held after a manual rollback, automatic deployments that were
    queued before it are skipped (a new event clears the hold in the web process); heals
    of what the rollback left still run. In manual mode (``auto`` False) automatic
    requests wait for a person's sync, which supersedes them. While the deploy window is
    closed (``window``), automatic requests stay queued as pending (heals pass) unless a
    person's request supersedes them.
    """
    queued = deployments.queued(conn, name)
    state = target_records.get(conn, name) or TargetState(name)
    manual = [r for r in queued if r.manual]
    if window is not None and not manual:
        queued = _hold(conn, name, window)
    if not manual and (not queued or state.paused or not auto):
        return None  # kept queued: resume (or approval) picks it up, nothing is lost
    if not manual and state.held:
        for record in queued:
            if record.kind == "heal":
                continue
            deployments.finish_unstarted(
                conn, record.id, "no_op",
                "held after a manual rollback: automatic deployments wait for a new event "
                "or a resume",
            )  # fmt: skip
        queued = [r for r in queued if r.kind == "heal"]
        if not queued:
            return None
    applying = [r for r in queued if r.kind != "heal"]
    pick = manual[-1] if manual else (applying or queued)[-1]
    at = queued.index(pick)
    needless = [r for r in queued[at + 1 :] if r.kind == "heal" and pick.kind != "heal"]
    older = queued[:at]
    hints: dict[str, dict[str, Any]] = {}
    if pick.kind in {"deploy", "sync"}:
        for record in [*older, pick]:
            image = record.requested.get("image")
            if record.kind == "deploy" and image:
                # A person's digest is an instruction; a registry's is only a hint.
                hints[image["repository"]] = {**image, "manual": record.requested["manual"]}
    requested = {
        **pick.requested,
        "images": list(hints.values()),
        "coalesced": [r.id for r in older + needless],
    }
    if pick.kind == "sync":  # the approval of what it supersedes (manual mode)
        requested["approved_by"] = (pick.trigger or {}).get("actor")
    if window is not None:  # it passes a closed window: say so, and whether it was forced
        requested["window"] = {"closed": window, "forced": bool(pick.requested.get("force"))}
    deployments.supersede(conn, [r.id for r in older + needless], pick.id, token)
    deployments.start(
        conn, pick.id, token, requested,
        previous_deployment_id=state.current_deployment_id,
    )  # fmt: skip
    return deployments.get(conn, pick.id)


def _previous(
    ctx: WorkerContext, state: TargetState, engine: DockerEngine, target: Target
) -> Previous:
    current_id = state.current_deployment_id
    current = None
    if current_id:
        with ctx.records.begin() as conn:
            current = deployments.get(conn, current_id)
    # start-first: what runs is the colour the current deployment left serving.
    colour = colours.serving(target, current) if target.strategy == "start-first" else None
    project = colour.project if colour is not None else target.project
    running = {c.service: c.image for c in engine.containers(project)}
    if current is not None and current.commit:
        return Previous(current_id, current.commit, running, colour, current.fingerprint)
    return Previous(None, None, running, colour)


def _execute(
    ctx: WorkerContext,
    target: Target,
    record: DeploymentRecord,
    token: int,
    beat: Heartbeat,
    *,
    resume: bool,
) -> None:
    dirs = TargetDirs(ctx.data_dir, target.name)
    journal = Journal(ctx.records, record, token)
    outcome = RolloutResult(status="failed")
    operator_error = False
    engine: DockerEngine | None = None
    traffic: Traffic | None = None
    with ExitStack() as stack:
        stack.enter_context(logs.about(target.name, record.id, journal.delivery_id))
        # Everything that can fail is inside the try, so a record never stays "running"
        # because the engine was briefly unreachable.
        try:
            engine = stack.enter_context(DockerEngine(ctx.docker_host))
            with ctx.records.begin() as conn:
                state = target_records.get(conn, target.name) or TargetState(target.name)
            previous = _previous(ctx, state, engine, target)
            # The front proxy (when the target has one); settled below, however this ends.
            traffic = stack.enter_context(
                Traffic.open(
                    target,
                    ctx.proxy_dir or ctx.data_dir / "proxy",
                    journal.log,
                    beat.cancelled,
                    previous.colour.port if previous.colour else None,
                )
            )
            tools = Tools(
                git=GitRepo(
                    target.repo,
                    dirs.mirror,
                    token=ctx.git_token,
                    ssh_key=ctx.git_ssh_key,
                    known_hosts=ctx.git_known_hosts,
                    on_spawn=lambda group: journal.add_child(group, "git"),
                ),
                compose=Compose(
                    ctx.compose_argv,
                    ctx.docker_host,
                    on_spawn=lambda group: journal.add_child(group, "compose"),
                ),
                engine=engine,
                backups=BackupStore(dirs.backups),
                traffic=traffic,
                signatures=_signatures(target, dirs, journal),
            )
            rollout = Rollout(
                target=target,
                record=record,
                state=state,
                previous=previous,
                journal=journal,
                tools=tools,
                dirs=dirs,
                # A heal says nothing when it starts: the drift notice tells its story.
                announce=lambda _outcome: (
                    None if record.kind == "heal" else notify(ctx, "announce", record.id, target)
                ),
                cancelled=beat.cancelled,
            )
            outcome = rollout.outcome
            outcome = _run(ctx, rollout, target, record, state, resume=resume)
            if outcome.status == "succeeded" and record.kind == "deploy":
                _write_back(ctx, target, record, journal, tools=tools, outcome=outcome)
        except LeaseLost:
            logger.warning("%s: lease lost during %s; stopping", target.name, record.id)
            return
        except DeployError as exc:
            outcome = _failed(outcome, str(exc))
            operator_error = isinstance(exc, OperatorError)
        except Exception as exc:  # a bug: record it instead of leaving the record running
            logger.exception("%s: unexpected error in %s", target.name, record.id)
            outcome = _failed(outcome, f"internal error: {type(exc).__name__}: {exc}")
        if traffic is not None:
            with suppress(LeaseLost):  # lost meanwhile: the new holder settles it
                traffic.settle()  # the route points at what serves, never left holding
        try:
            _record(
                ctx,
                target=target,
                record=record,
                token=token,
                journal=journal,
                outcome=outcome,
                operator_error=operator_error,
            )
        except LeaseLost:
            return
        if engine is not None and (outcome.changed or record.kind == "heal"):
            settle(ctx, target, engine)  # still under the lease: what runs now is ours
    # A heal that worked is told by its drift notice ("back in sync"); one that failed is
    # reported like a failed deployment.
    # A refused commit (unsigned) touched nothing, yet people must hear of it.
    told = outcome.changed and (record.kind != "heal" or outcome.status == "failed")
    if told or outcome.refused:
        notify(ctx, "report", record.id, target)
    ship_backup(ctx, target, outcome.backup_id)


def _signatures(target: Target, dirs: TargetDirs, journal: Journal) -> CommitSignatures | None:
    rule = target.verify.commits
    if rule is None:
        return None
    return CommitSignatures(
        rule, dirs.mirror, on_spawn=lambda group: journal.add_child(group, "git")
    )


def _run(
    ctx: WorkerContext,
    rollout: Rollout,
    target: Target,
    record: DeploymentRecord,
    state: TargetState,
    *,
    resume: bool,
) -> RolloutResult:
    """Start, resume or give up a deployment, from what its journal says."""
    journal = rollout.journal
    window = record.requested.get("window")
    if window and not resume:
        who = "a heal" if record.kind == "heal" else "a person's request"
        forced = f", forced by {record.trigger.get('actor') or 'a person'}"
        journal.log(f"{window['closed']}: {who} is not held{forced if window['forced'] else ''}")
    if record.kind == "heal":  # idempotent: a resumed heal inspects, applies, gates again
        return _heal(ctx, rollout, target, record, state)
    if resume and record.attempt > MAX_ATTEMPTS:
        return rollout.abandon(f"gave up after {MAX_ATTEMPTS} worker deaths")
    if resume and journal.reached("start", "gate", "rollback"):
        return rollout.resume()
    stopped = resume and journal.reached("stop", "snapshot", "restore", "restart-previous")
    # The dead worker left the old version stopped: serve again first, then retry.
    if stopped and not rollout.bring_back():
        return rollout.outcome
    if record.kind == "rollback":
        to, restore_from = _rollback_source(ctx, target, record, state, rollout.tools)
        return rollout.rollback(to, restore_from)
    return _sync(ctx, rollout, target, record, state) if record.kind == "sync" else rollout.deploy()


def _sync(
    ctx: WorkerContext,
    rollout: Rollout,
    target: Target,
    record: DeploymentRecord,
    state: TargetState,
) -> RolloutResult:
    """A person's sync (the approval in manual mode): poll the target now (its status
    shows what was seen), then apply what Git and the registry want, as a deployment;
    when that is what runs already, put back what drifted from the current deployment (a
    heal, which leaves the current deployment as it is); else nothing: already in sync."""
    try:
        reconcile.poll(ctx, [target], reconcile.TickReport(), raise_changes=False, inspect=False)
    except Exception:  # the deployment's own fetch says what is wrong with Git
        logger.exception("%s: polling before the sync failed", target.name)
    outcome = rollout.deploy()
    if outcome.status != "no_op" or not outcome.in_sync or not state.current_deployment_id:
        return outcome
    with ctx.records.begin() as conn:
        good = deployments.get(conn, state.current_deployment_id)
    if good is None or not healing.inspect(target, good, rollout.tools.engine).drift:
        outcome.reason = f"already in sync: {outcome.reason}"
        return outcome
    rollout.journal.log(f"sync: {outcome.reason}, but it drifted: healing {good.id}")
    outcome.plan, outcome.in_sync = None, False  # a heal never moves the current deployment
    return _heal(ctx, rollout, target, record, state)


def _heal(
    ctx: WorkerContext,
    rollout: Rollout,
    target: Target,
    record: DeploymentRecord,
    state: TargetState,
) -> RolloutResult:
    """Apply the current deployment again (workers/heal.py)."""
    if record.attempt > MAX_ATTEMPTS:
        raise InfrastructureError(f"gave up after {MAX_ATTEMPTS} worker deaths")
    with ctx.records.begin() as conn:
        good = (
            deployments.get(conn, state.current_deployment_id)
            if state.current_deployment_id
            else None
        )
    if good is None:
        raise OperatorError(f"{target.name} has no current deployment to apply again")
    engine = rollout.tools.engine
    heal = Heal(
        target=target,
        record=record,
        good=good,
        journal=rollout.journal,
        tools=rollout.tools,
        dirs=rollout.dirs,
        running=rollout.previous.images,
        find_drift=lambda: healing.inspect(target, good, engine).drift,
        cancelled=rollout.cancelled,
        outcome=rollout.outcome,
    )
    return heal.run()


def _write_back(
    ctx: WorkerContext,
    target: Target,
    record: DeploymentRecord,
    journal: Journal,
    *,
    tools: Tools,
    outcome: RolloutResult,
) -> None:
    """Commit a tag that a registry push or a poll moved (``sync.write_back``); its
    failure is the step's and a notice of its own: the deployment stays succeeded."""
    if target.sync.write_back is None or (record.trigger or {}).get("source") not in IMAGE_SOURCES:
        return  # Git said it (a push, a person), or nothing is to be written
    try:
        with journal.step("write-back") as step:
            step["detail"] = write_back(target, tools.git, record.trigger, outcome.images)
            journal.log(f"write-back: {step['detail']}")
    except DeployError as exc:
        journal.log(f"write-back failed: {exc}")
        with ctx.records.begin() as conn:
            ids = schedule_target_notice(
                conn,
                target,
                ctx.notifiers,
                event="write_back",
                since=record.id,
                spec={
                    "headline": f"{target.name}: write-back to Git FAILED ({record.id} deployed)",
                    "details": [str(exc), "Git no longer says what runs: commit it by hand"],
                },
            )
        for notification_id in ids:
            ctx.send(NOTIFY, [notification_id])


def _failed(outcome: RolloutResult, reason: str) -> RolloutResult:
    if outcome.status not in {"rolled_back", "failed"} or outcome.reason is None:
        outcome.reason = outcome.reason or reason
    if outcome.status not in {"rolled_back"}:
        outcome.status = "failed"
    return outcome


def _record(
    ctx: WorkerContext,
    *,
    target: Target,
    record: DeploymentRecord,
    token: int,
    journal: Journal,
    outcome: RolloutResult,
    operator_error: bool,
) -> None:
    journal.log(
        f"{outcome.status}" + (f": {outcome.reason}" if outcome.reason else ""),
        level=logging.ERROR if outcome.status in {"failed", "rolled_back"} else logging.INFO,
    )
    journal.flush()
    plan = outcome.plan
    with ctx.records.begin() as conn:
        if not deployments.finish(
            conn, record.id, token, outcome.status, outcome.reason, children=[]
        ):
            raise LeaseLost(record.id)
        recorded = True
        if outcome.status == "succeeded" and plan is not None and record.kind != "heal":
            # A manual rollback holds automatic deployments until a new event or a resume.
            held = record.kind == "rollback" and not record.requested.get("restore_backup")
            recorded = target_records.record_outcome(
                conn,
                target.name,
                token,
                current=record.id,
                good=record.id,
                pins=plan.pins,
                clear_failed=True,
                held=held,
            )
        remembered = outcome.status == "no_op" and not outcome.in_sync
        if plan is not None and (
            outcome.status == "rolled_back" or outcome.rollback_failed or operator_error
        ):
            remembered = True
            recorded = target_records.record_outcome(
                conn, target.name, token, failed_fingerprint=plan.fingerprint
            )
        if not recorded:  # fenced out: roll this transaction back, the new holder decides
            raise LeaseLost(record.id)
        note_outcome(
            conn,
            target,
            record,
            status=outcome.status,
            commit=outcome.commit,
            images=outcome.images,
            in_sync=outcome.in_sync,
            remembered=remembered,
        )


def _rollback_source(
    ctx: WorkerContext,
    target: Target,
    record: DeploymentRecord,
    state: TargetState,
    tools: Tools,
) -> tuple[DeploymentRecord, str | None]:
    """The deployment to go back to, and the backup holding the data it left behind."""
    requested = record.requested
    with ctx.records.begin() as conn:
        if requested.get("rollback_to"):
            to = deployments.get(conn, requested["rollback_to"])
            if to is None or to.target != target.name or to.status != "succeeded":
                raise OperatorError(
                    f"{requested['rollback_to']} is not a succeeded deployment of {target.name}"
                )
        else:
            to = _previous_release(conn, target, state.current_deployment_id)
        backup = deployments.data_left_by(conn, to)
    requested["rollback_to"] = to.id  # recorded with the plan: a later default steps past it
    wanted = requested.get("restore_data")
    if requested.get("restore_backup"):
        wanted, backup = True, requested["restore_backup"]
    if wanted is False:
        return to, None
    if backup is None or backup not in {b.id for b in tools.backups.list()}:
        if wanted:
            raise OperatorError(f"no backup of the data as {to.id} left it")
        return to, None
    return to, backup


def _previous_release(conn: Any, target: Target, current_id: str | None) -> DeploymentRecord:
    """The default rollback: the good deployment before the one running now. When what
    runs is itself a rollback, step back from where that rollback went, so that two
    rollbacks in a row go further back instead of returning to what was rolled away."""
    anchor = deployments.get(conn, current_id) if current_id else None
    while anchor is not None and anchor.kind == "rollback":
        back_to = anchor.requested.get("rollback_to")
        anchor = deployments.get(conn, back_to) if back_to else None
    before = anchor.id if anchor is not None else current_id
    to = deployments.last_with_status(
        conn, target.name, ("succeeded",), before=before, kind="deploy"
    )
    if to is None:
        raise OperatorError(f"{target.name} has no earlier good deployment to go back to")
    return to


def ship_backup(ctx: WorkerContext, target: Target, backup_id: str | None) -> None:
    """Send the deployment's backup off-host (``backup.remote``), as a task of its own
    once the deployment is over: it never lengthens the downtime, and its failure is
    told by itself, never through the deployment."""
    remote = target.backup.remote
    if backup_id is None or remote is None or not remote.after_deploy:
        return
    try:
        ctx.send(OFFSITE_SHIP, [target.name, backup_id])
    except Exception:
        logger.exception("%s: could not queue backup %s for off-host", target.name, backup_id)


def notify(ctx: WorkerContext, phase: str, deployment_id: str, target: Target) -> None:
    """Schedule notifications; a failing notifier never fails or repeats a deployment."""
    try:
        with ctx.records.begin() as conn:
            record = deployments.get(conn, deployment_id)
            if record is None:
                return
            schedule = schedule_announcement if phase == "announce" else schedule_report
            ids = schedule(conn, record, target, ctx.notifiers)
            if "slack" in ctx.notifiers:  # an approved change: on the message with the buttons
                ids += schedule_approval_progress(conn, record)
        for notification_id in ids:
            ctx.send(NOTIFY, [notification_id])
    except Exception:
        logger.exception("%s: scheduling %s notifications failed", deployment_id, phase)
