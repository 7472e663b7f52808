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
from contextlib import ExitStack
from typing import Any

from rollhook.broker import NOTIFY
from rollhook.records import deployments
from rollhook.records import targets as target_records
from rollhook.records.deployments import DeploymentRecord
from rollhook.records.targets import TargetState
from rollhook.targets import Target
from workers.backup import BackupStore
from workers.compose import Compose
from workers.context import WorkerContext
from workers.engine import DockerEngine
from workers.errors import DeployError, LeaseLost, OperatorError
from workers.gitsync import GitRepo
from workers.journal import Journal
from workers.layout import TargetDirs
from workers.lease import Heartbeat, host_lock
from workers.notify import schedule_announcement, schedule_report
from workers.procs import end_group
from workers.rollout import Previous, Rollout, RolloutResult, Tools
from workers.signatures import CommitSignatures

logger = logging.getLogger("rollhook.runner")

MAX_ATTEMPTS = 3


def run_target(ctx: WorkerContext, name: str) -> None:
    while True:
        with ctx.records.begin() as conn:
            window = closed_window(ctx, name)
            if not has_work(conn, name, window=window):
                if window is not None:
                    _hold(conn, name, window)
                return
            token = target_records.acquire_lease(conn, name, ctx.owner, ctx.lease_seconds)
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


def has_work(conn: Any, name: str, *, window: str | None = None) -> bool:
    """Work this worker may do now: an orphaned deployment, or queued requests that a
    pause does not hold back (a person's request passes a pause; automatic ones wait).
    ``window``: why the target's deploy window is closed now (None: open); automatic
    requests then wait, a person's request and a heal do not."""
    state = target_records.get(conn, name)
    if state is None:
        return False
    if deployments.running(conn, name):
        return True
    queued = deployments.queued(conn, name)
    if state.paused:
        return any(r.manual for r in queued)
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
    windows, now = target.deploy_windows, ctx.clock()
    return None if windows.open_at(now) else windows.why_closed(now)


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
                window = closed_window(ctx, name)
                record, resume = _coalesce(conn, name, token, window=window), False
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
    conn: Any, name: str, token: int, *, window: str | None = None
) -> DeploymentRecord | None:
    """Pick what runs next and record what it replaces.

    A person's request goes first and is never replaced by an automatic one; among the
    rest the newest wins. Older requests are superseded by it and their image pins carry
    over. While the target is held after a manual rollback, automatic requests that were
    queued before it are skipped (a new event clears the hold in the web process).
    While the deploy window is closed (``window``), automatic requests stay queued as
    pending unless a person's request supersedes them.
    """
    queued = deployments.queued(conn, name)
    state = target_records.get(conn, name) or TargetState(name)
    manual = [r for r in queued if r.manual]
    if window is not None and not manual:
        queued = _hold(conn, name, window)
    if not queued or (state.paused and not manual):
        return None  # kept queued: resume picks it up, nothing accepted is lost
    pick = manual[-1] if manual else queued[-1]
    if state.held and not manual:
        for record in queued:
            deployments.finish_unstarted(
                conn, record.id, "no_op",
                "held after a manual rollback: automatic deployments wait for a new event "
                "or a resume",
            )  # fmt: skip
        return None
    older = queued[: queued.index(pick)]
    hints: dict[str, dict[str, Any]] = {}
    if pick.kind == "deploy":
        for record in [*older, pick]:
            image = record.requested.get("image")
            if record.kind == "deploy" and image:
                # A person's digest is an instruction; a registry's is only a hint.
                hints[image["repository"]] = {**image, "manual": record.requested["manual"]}
    requested = {
        **pick.requested,
        "images": list(hints.values()),
        "coalesced": [r.id for r in older],
    }
    if window is not None:  # it passes a closed window: say so, and whether it was forced
        requested["window"] = {"closed": window, "forced": bool(pick.requested.get("force"))}
    deployments.supersede(conn, [r.id for r in older], pick.id, token)
    deployments.start(
        conn, pick.id, token, requested,
        previous_deployment_id=state.current_deployment_id,
    )  # fmt: skip
    return deployments.get(conn, pick.id)


def _previous(
    ctx: WorkerContext, state: TargetState, engine: DockerEngine, target: Target
) -> Previous:
    running = {c.service: c.image for c in engine.containers(target.project)}
    current_id = state.current_deployment_id
    if current_id:
        with ctx.records.begin() as conn:
            current = deployments.get(conn, current_id)
        if current is not None and current.commit:
            return Previous(current_id, current.commit, running)
    return Previous(None, None, running)


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
    with ExitStack() as stack:
        # Everything that can fail is inside the try, so a record never stays "running"
        # because the engine was briefly unreachable.
        try:
            engine = stack.enter_context(DockerEngine(ctx.docker_host))
            with ctx.records.begin() as conn:
                state = target_records.get(conn, target.name) or TargetState(target.name)
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
                signatures=_signatures(target, dirs, journal),
            )
            rollout = Rollout(
                target=target,
                record=record,
                state=state,
                previous=_previous(ctx, state, engine, target),
                journal=journal,
                tools=tools,
                dirs=dirs,
                announce=lambda _outcome: notify(ctx, "announce", record.id, target),
                cancelled=beat.cancelled,
            )
            outcome = rollout.outcome
            outcome = _run(ctx, rollout, target, record, state, resume=resume)
        except LeaseLost:
            logger.warning("%s: lease lost during %s; stopping", target.name, record.id)
            return
        except DeployError as exc:
            outcome = _failed(outcome, str(exc))
            operator_error = isinstance(exc, OperatorError)
        except Exception as exc:  # a bug: record it instead of leaving the record running
            logger.exception("%s: unexpected error in %s", target.name, record.id)
            outcome = _failed(outcome, f"internal error: {type(exc).__name__}: {exc}")
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
    # A refused commit (unsigned) touched nothing, yet people must hear of it.
    if outcome.changed or outcome.refused:
        notify(ctx, "report", record.id, target)


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
    return rollout.deploy()


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
        if outcome.status == "succeeded" and plan is not None:
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
        elif plan is not None and (
            outcome.status == "rolled_back" or outcome.rollback_failed or operator_error
        ):
            recorded = target_records.record_outcome(
                conn, target.name, token, failed_fingerprint=plan.fingerprint
            )
        if not recorded:  # fenced out: roll this transaction back, the new holder decides
            raise LeaseLost(record.id)


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


def notify(ctx: WorkerContext, phase: str, deployment_id: str, target: Target) -> None:
    """Schedule notifications; a failing notifier never fails or repeats a deployment."""
    try:
        with ctx.records.begin() as conn:
            record = deployments.get(conn, deployment_id)
            if record is None:
                return
            schedule = schedule_announcement if phase == "announce" else schedule_report
            ids = schedule(conn, record, target, ctx.notifiers)
        for notification_id in ids:
            ctx.send(NOTIFY, [notification_id])
    except Exception:
        logger.exception("%s: scheduling %s notifications failed", deployment_id, phase)
