"""The reconcile loop's poll: Git and the registry asked what the targets should run.

Beat sends ``rollhook.reconcile`` every few seconds (a tick); a worker runs it. A tick
claims the targets whose next poll is due (their ``sync`` rows, so two ticks never poll
one target), asks each repository once for the heads of all its tracked branches (one
``git ls-remote``), each tag in use once for its digest (one ``HEAD``) and, where a
policy is followed, each repository once for its newest allowed tag. Per target it then
records what it saw and, when the target is idle, raises what changed
(:func:`workers.changes.what_changed`) as events with source ``poll``, stored in the same
transaction as the ``raised`` memory and published through the outbox like a webhook's.
A failure is recorded (``last_error``, counted for the metrics) and backs the target's
polling off; it never raises anything.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from rollhook import broker, events
from rollhook.events import NewEvent
from rollhook.records import deployments
from rollhook.records import events as event_records
from rollhook.records import sync as sync_records
from rollhook.records import targets as target_records
from rollhook.records.schema import utcnow
from rollhook.syncstatus import images_in_use
from rollhook.targets import Target
from workers.changes import Seen, what_changed
from workers.context import WorkerContext
from workers.engine import DockerEngine
from workers.errors import DeployError
from workers.gitsync import GitRepo
from workers.healing import look
from workers.layout import TargetDirs
from workers.outbox import publish
from workers.registry import RegistryClient, newest

logger = logging.getLogger("rollhook.reconcile")

TICK = 2.0  # seconds between beat's ticks: the delay a due poll waits at most
MAX_BACKOFF = 3600.0
JITTER = 0.1  # next poll: interval +- 10%, so targets spread out instead of polling at once
POOL = 8  # requests in flight at once
GIT_TIMEOUT = 30.0
REGISTRY_TIMEOUT = 15.0


@dataclass
class Poll:
    """What a poll saw for one target, or why it could not see it."""

    head: str | None = None
    digests: dict[str, str] = field(default_factory=dict)
    newest: dict[str, str] = field(default_factory=dict)
    error: tuple[str, str] | None = None  # (git | registry, message)

    def fail(self, kind: str, message: str) -> None:
        if self.error is None:
            self.error = (kind, message)


@dataclass
class TickReport:
    polled: list[str] = field(default_factory=list)
    raised: dict[str, list[str]] = field(default_factory=dict)  # target -> event ids
    errors: dict[str, str] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def next_poll(
    interval: float, errors: int, *, jitter: Callable[[], float] = random.random
) -> float:
    """Seconds until the next poll: the interval +- 10%; after ``errors`` failures in a row
    the interval doubled per failure, up to an hour (never less than the interval)."""
    if errors:
        return float(max(interval, min(interval * 2.0**errors, MAX_BACKOFF)))
    return interval * (1 - JITTER + 2 * JITTER * jitter())


def tick(ctx: WorkerContext, *, registry: RegistryClient | None = None) -> TickReport:
    """Poll every target that is due; raise what changed. Never raises for a poll failure."""
    polling = [t for t in ctx.targets.values() if t.sync.interval > 0]
    due = _claim(ctx, polling)
    report = TickReport(polled=[t.name for t in due])
    if due:
        poll(ctx, due, report, registry=registry)
    return report


def poll(
    ctx: WorkerContext,
    targets: list[Target],
    report: TickReport,
    *,
    registry: RegistryClient | None = None,
    raise_changes: bool = True,
    inspect: bool = True,
) -> dict[str, Poll]:
    """Poll these targets now and record what was seen; with ``raise_changes``, raise events
    for what changed (else a caller, the runner's sync, decides); with ``inspect``, compare
    what runs with the current deployment too (workers/healing.py: drift, heals)."""
    polls = {t.name: Poll() for t in targets}
    with ctx.records.begin() as conn:
        in_use = {t.name: _in_use(conn, t) for t in targets}
    with ThreadPoolExecutor(max_workers=POOL) as pool:
        _heads(ctx, targets, polls, pool, report)
        own = registry is None
        client = registry or RegistryClient(timeout=REGISTRY_TIMEOUT)
        try:
            _images(client, targets=targets, in_use=in_use, polls=polls, pool=pool, report=report)
        finally:
            if own:
                client.close()
    if inspect:
        # Comparing with what runs needs the target's engine: this worker compares its own
        # host's targets and asks each other host's worker to compare its own.
        _inspect(ctx, [t for t in targets if t.host == ctx.host], polls)
        for target in (t for t in targets if t.host != ctx.host):
            ctx.send(broker.INSPECT_TARGET, [target.name])
    for target in targets:
        try:
            raised = _conclude(ctx, target, polls[target.name], raise_changes=raise_changes)
        except Exception:
            logger.exception("%s: recording the poll failed", target.name)
            continue
        if raised:
            report.raised[target.name] = raised
        if polls[target.name].error is not None:
            report.errors[target.name] = polls[target.name].error[1]  # type: ignore[index]
    return polls


# -- what is due ---------------------------------------------------------------------


def _claim(ctx: WorkerContext, targets: list[Target]) -> list[Target]:
    """The targets due for a poll, claimed: their next poll is moved on at once, so a
    concurrent tick skips them (the poll's outcome sets it properly)."""
    by_name = {t.name: t for t in targets}
    now = utcnow()
    with ctx.records.begin() as conn:
        names = sync_records.due(conn, by_name, now)
        for name in names:
            provisional = now + timedelta(seconds=by_name[name].sync.interval)
            sync_records.change(conn, name, next_poll_at=provisional)
    return [by_name[name] for name in names]


def _in_use(conn: Connection, target: Target) -> dict[str, str]:
    state = target_records.get(conn, target.name)
    current_id = state.current_deployment_id if state else None
    current = deployments.get(conn, current_id) if current_id else None
    return images_in_use(target, current.images) if current is not None else {}


# -- asking Git and the registry ---------------------------------------------------------


def _heads(
    ctx: WorkerContext,
    targets: list[Target],
    polls: dict[str, Poll],
    pool: ThreadPoolExecutor,
    report: TickReport,
) -> None:
    """One ``git ls-remote`` per repository, for the branches of all its targets."""
    by_repo: dict[str, list[Target]] = defaultdict(list)
    for target in targets:
        by_repo[target.repo_key].append(target)

    def ask(group: list[Target]) -> dict[str, str]:
        first = group[0]
        repo = GitRepo(
            first.repo,
            TargetDirs(ctx.data_dir, first.name).mirror,
            token=ctx.git_token,
            ssh_key=ctx.git_ssh_key,
            known_hosts=ctx.git_known_hosts,
            timeout=GIT_TIMEOUT,
        )
        return repo.heads(t.branch for t in group)

    futures = {key: pool.submit(ask, group) for key, group in by_repo.items()}
    for key, future in futures.items():
        report.requests["ls-remote"] += 1
        try:
            heads = future.result()
        except DeployError as exc:
            for target in by_repo[key]:
                polls[target.name].fail("git", str(exc))
            continue
        for target in by_repo[key]:
            head = heads.get(target.branch)
            if head is None:
                polls[target.name].fail(
                    "git", f"the branch {target.branch} is not in {target.repo}"
                )
            polls[target.name].head = head


def _images(
    client: RegistryClient,
    *,
    targets: list[Target],
    in_use: dict[str, dict[str, str]],
    polls: dict[str, Poll],
    pool: ThreadPoolExecutor,
    report: TickReport,
) -> None:
    """One ``HEAD`` per tag in use, one tag list per repository whose newer tags are followed."""
    refs = sorted({ref for name in in_use for ref in in_use[name]})
    repositories = sorted(
        {ref.rpartition(":")[0] for t in targets if t.follows_newer_tags for ref in in_use[t.name]}
    )
    digests = {ref: pool.submit(client.digest, ref) for ref in refs}
    listings = {repo: pool.submit(client.tags, repo) for repo in repositories}
    seen: dict[str, str] = {}
    listed: dict[str, list[str]] = {}
    failures: dict[str, str] = {}
    for ref, future in digests.items():
        report.requests["head"] += 1
        try:
            seen[ref] = future.result()
        except DeployError as exc:
            failures[ref] = str(exc)
    for repo, tags_future in listings.items():
        report.requests["tags"] += 1
        try:
            listed[repo] = tags_future.result()
        except DeployError as exc:
            failures[repo] = str(exc)
    for target in targets:
        found = polls[target.name]
        for ref in in_use[target.name]:
            repo = ref.rpartition(":")[0]
            for key in (ref, repo):
                if key in failures:
                    found.fail("registry", failures[key])
            if ref in seen:
                found.digests[ref] = seen[ref]
            if target.follows_newer_tags and repo in listed:
                newest_tag = newest(listed[repo], target.tag_policy)
                if newest_tag is not None:
                    found.newest[repo] = newest_tag


def inspect_one(ctx: WorkerContext, target: Target) -> None:
    """A tick on another host asked this host's worker to compare ``target`` (its engine
    is here); what differs is acted on as in a tick, engine errors are logged."""
    found = Poll()
    _inspect(ctx, [target], {target.name: found})
    if found.error is not None:
        logger.warning("%s: comparing with what runs failed: %s", target.name, found.error[1])


def _inspect(ctx: WorkerContext, targets: list[Target], polls: dict[str, Poll]) -> None:
    """Every poll compares what runs with the current deployment, as the watcher does."""
    if not targets:
        return
    try:
        with DockerEngine(ctx.docker_host) as engine:
            for target in targets:
                try:
                    look(ctx, target, engine)
                except DeployError as exc:
                    polls[target.name].fail("engine", str(exc))
    except DeployError as exc:
        for target in targets:
            polls[target.name].fail("engine", str(exc))


# -- recording and raising ---------------------------------------------------------------


def _conclude(ctx: WorkerContext, target: Target, seen: Poll, *, raise_changes: bool) -> list[str]:
    """Record one target's poll and raise what changed; the ids of the events raised."""
    name = target.name
    now = utcnow()
    new: list[NewEvent] = []
    with ctx.records.begin() as conn:
        row = sync_records.lock(conn, name)
        error = seen.error or (None if seen.head else ("git", "the branch head was not seen"))
        if error is not None or seen.head is None:
            kind, message = error or ("git", "")
            counts = dict(row.poll_error_counts)
            counts[kind] = counts.get(kind, 0) + 1
            errors = row.poll_errors + 1
            wait = next_poll(target.sync.interval, errors)
            sync_records.change(
                conn,
                name,
                poll_errors=errors,
                last_error={"kind": kind, "message": message[:500], "at": _iso(now)},
                poll_error_counts=counts,
                next_poll_at=now + timedelta(seconds=wait),
            )
            logger.warning("%s: poll failed (%s), next in %.0fs: %s", name, kind, wait, message)
            return []
        values: dict[str, Any] = {
            "observed_commit": seen.head,
            "observed_at": now,
            "observed_images": seen.digests,
            "newest_tags": seen.newest,
            "last_poll_at": now,
            "next_poll_at": now + timedelta(seconds=next_poll(target.sync.interval, 0)),
            "poll_errors": 0,
            "last_error": None,
        }
        if raise_changes and _idle(conn, target):
            state = target_records.get(conn, name)
            current_id = state.current_deployment_id if state else None
            current = deployments.get(conn, current_id) if current_id else None
            found = what_changed(
                Seen(seen.head, seen.digests, seen.newest),
                deployed=current.commit if current else None,
                synced=row.synced_commit,
                in_use=images_in_use(target, current.images) if current else {},
                raised=row.raised,
                policy=target.tag_policy if target.follows_newer_tags else None,
            )
            if found is not None:
                summary = {"target": name, "commit": seen.head, "why": found.why}
                new = [
                    events.new_event(
                        "poll",
                        found.kind,
                        dedup_key=None,
                        delivery_id=None,
                        actor=None,
                        summary=summary,
                        jobs={name: fields},
                    )
                    for fields in found.jobs
                ]
                event_records.store_batch(conn, new)
                values["raised"] = found.raised
                logger.info("%s: poll found %s", name, "; ".join(found.why))
        sync_records.change(conn, name, **values)
    if new:
        publish(ctx, [job for event in new for job in event.jobs])
    return [event.id for event in new]


def _idle(conn: Connection, target: Target) -> bool:
    """Nothing runs or is about to, and no pause or hold stops automatic deployments.
    (In manual mode, queued automatic deployments wait for approval: more may join them.)"""
    state = target_records.get(conn, target.name)
    if state is None or state.paused or state.held:
        return False
    if deployments.running(conn, target.name):
        return False
    return not any(r.manual or target.sync.auto for r in deployments.queued(conn, target.name))


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")
