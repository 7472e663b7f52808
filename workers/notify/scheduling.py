"""Scheduling notifications: the rows written for ``deliver`` when a deployment starts and ends.

Both run inside the rollout's own transaction (the caller commits, then publishes a
``rollhook.notify`` task per returned id), touch only the records database (no network,
so they never slow a deployment) and never raise: a notification problem is logged and
the deployment goes on. Their writes sit in a savepoint, so a failure here leaves the
caller's transaction as it was. Calling either twice for one deployment changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from rollhook.records import deployments, notifications
from rollhook.records.deployments import DeploymentRecord
from rollhook.records.notifications import About, Notification
from rollhook.records.schema import TERMINAL_STATUSES
from rollhook.targets import Target
from workers.notify import backup_notice, host_notice, policy
from workers.notify.channels import Channel, Notifiers
from workers.notify.github import github_repo
from workers.notify.notices import DEPLOYMENT, KINDS, TARGET
from workers.notify.report import build_report

logger = logging.getLogger("rollhook.notify")


def _record(conn: Connection, deployment: DeploymentRecord | str) -> DeploymentRecord | None:
    if isinstance(deployment, str):
        return deployments.get(conn, deployment)
    return deployment


def _about(record: DeploymentRecord) -> About:
    kind = KINDS[DEPLOYMENT]
    return About(DEPLOYMENT, kind.subject_kind, record.id, record.id, record.target)


def _existing(conn: Connection, record: DeploymentRecord) -> dict[str, Notification]:
    return notifications.of_subject(conn, _about(record))


def _arm(conn: Connection, record: DeploymentRecord, channel: str, spec: dict[str, Any]) -> str:
    """Create the row, or move it on to a later phase; the same spec twice is a no-op."""
    row = _existing(conn, record).get(channel)
    if row is None:
        armed = {"spec": spec, "rev": 1}
        return notifications.create(
            conn, _about(record), channel, status="pending", external=armed, history=[]
        )
    external = row.external
    if external.get("spec") == spec or external.get("spec", {}).get("phase") == "final":
        return row.id  # never back from the final phase to "running"
    external.update(spec=spec, rev=int(external.get("rev", 0)) + 1)
    # A new phase is new news: it gets its own attempts, even if the first phase failed.
    notifications.change(conn, row.id, status="pending", attempts=0, external=external)
    return row.id


def _skip(conn: Connection, record: DeploymentRecord, channel: str, reason: str) -> None:
    if channel not in _existing(conn, record):
        entry = notifications.history_entry(0, "skipped", reason)
        notifications.create(
            conn, _about(record), channel, status="skipped", external={}, history=[entry]
        )


def _github_spec(target: Target, state: str) -> dict[str, Any]:
    return {
        "phase": "running" if state == "pending" else "final",
        "state": state,
        "repo": list(github_repo(target.repo) or ("", "")),
        "service": target.service,
    }


def schedule_announcement(
    conn: Connection, deployment: DeploymentRecord | str, target: Target, notifiers: Notifiers
) -> list[str]:
    """The plan shows a real change: tell the channels that tell progress (post the Slack
    message, set the commit pending)."""
    try:
        with conn.begin_nested():
            record = _record(conn, deployment)
            if record is None:
                return []
            streak = policy.load_streak(conn, target.name)
            ids = []
            for notifier in notifiers:
                channel = notifier.channel
                if not notifier.tells_progress:
                    continue
                if channel == "github":
                    if policy.commit_status_applies(target, record):
                        ids.append(_arm(conn, record, channel, _github_spec(target, "pending")))
                elif policy.announces(target, streak, channel):
                    spec = {"phase": "running", "service": target.service}
                    ids.append(_arm(conn, record, channel, spec))
            return ids
    except Exception:
        logger.exception("notify: announce failed for %s; the deployment goes on", deployment)
        return []


def schedule_report(
    conn: Connection, deployment: DeploymentRecord | str, target: Target, notifiers: Notifiers
) -> list[str]:
    """The record is final: schedule what each channel should say, per policy."""
    try:
        with conn.begin_nested():
            record = _record(conn, deployment)
            if record is None or record.status not in TERMINAL_STATUSES:
                return []
            return _schedule(conn, record, target, notifiers)
    except Exception:
        logger.exception("notify: report failed for %s; the deployment goes on", deployment)
        return []


def _schedule(
    conn: Connection, record: DeploymentRecord, target: Target, notifiers: Notifiers
) -> list[str]:
    built = build_report(record, target.service)
    view, streak = policy.advance(conn, built)
    result = policy.result_of(built, view)
    existing = _existing(conn, record)
    spec: dict[str, Any] = {
        "phase": "final",
        "mode": view.mode,
        "count": view.count,
        "first": view.first_deployment_id,
        "service": target.service,
    }
    repeat = view.mode == "repeat"
    ids: list[str] = []
    for notifier in notifiers:
        channel = notifier.channel
        if channel == "github":
            if "github" in existing or (
                policy.commit_status_applies(target, record) and result not in (None, "no_op")
            ):
                state = "success" if record.status in ("succeeded", "no_op") else "failure"
                ids.append(_arm(conn, record, "github", _github_spec(target, state)))
            continue
        if channel == "slack_webhook" and "slack" in notifiers:
            continue  # the bot is configured: it tells the story, the webhook would repeat it
        # A message posted at the start is always finished, whatever the policy says:
        # it must not go on saying "deploying" for ever.
        announced = notifier.tells_progress and channel in existing
        if not announced and not policy.wants(target, channel, result):
            continue
        if channel == "slack":
            anchor = (streak.get("anchors") or {}).get("slack") if repeat else None
            notification_id = _arm(conn, record, "slack", {**spec, "anchor": anchor})
            if built.failed and view.mode == "normal":
                policy.remember_anchor(conn, target.name, "slack", notification_id)
            ids.append(notification_id)
        elif repeat and not notifier.tells_progress:
            _skip(
                conn,
                record,
                channel,
                f"the same failure again ({view.count} times): "
                "only the first one is sent on this channel",
            )
        else:
            ids.append(_arm(conn, record, channel, spec))
    return ids


def target_about(target: str, event: str, since: str) -> About:
    return About(TARGET, KINDS[TARGET].subject_kind, f"{target}:{event}:{since}", None, target)


def _hears(target: Target, channel: Channel, event: str, drift_told: set[str]) -> bool:
    """Drift, degraded and a failed write-back are bad news, told where failures are; back
    in sync is told
    where its drift was; a change waiting for approval wherever the target is heard of."""
    if event in ("drift", "degraded", "write_back"):
        return policy.wants(target, channel, "failed")
    if event == "in_sync":
        return channel in drift_told
    return bool(policy.channel_results(target, channel))


def schedule_target_notice(
    conn: Connection,
    target: Target,
    notifiers: Notifiers,
    *,
    event: str,
    since: str,
    spec: dict[str, Any],
    episode: str | None = None,
) -> list[str]:
    """A notice about the target as a whole (``notices.TARGET_EVENTS``), ``since`` the
    moment it began, told once: a second call for the same event and moment changes
    nothing. ``episode``: the moment the drift it belongs to was found; back in sync and
    degraded go in the thread of that drift's Slack message, and back in sync only to the
    channels that told the drift. Returns the new rows' ids."""
    try:
        with conn.begin_nested():
            about = target_about(target.name, event, since)
            if notifications.of_subject(conn, about):
                return []
            drift = (
                notifications.of_subject(conn, target_about(target.name, "drift", episode))
                if episode
                else {}
            )
            told = {channel for channel, row in drift.items() if row.status != "skipped"}
            ids = []
            for notifier in notifiers:
                channel = notifier.channel
                if channel == "github" or (channel == "slack_webhook" and "slack" in notifiers):
                    continue  # a commit status tells a commit; the bot tells Slack
                if not _hears(target, channel, event, told):
                    continue
                full = {**spec, "target": target.name, "event": event, "phase": "final"}
                if channel == "slack" and "slack" in drift:
                    full["anchor"] = drift["slack"].id
                armed = {"spec": full, "rev": 1}
                ids.append(
                    notifications.create(
                        conn, about, channel, status="pending", external=armed, history=[]
                    )
                )
            return ids
    except Exception:
        logger.exception("notify: the %s notice of %s failed; nothing else is", event, target.name)
        return []


def pending(conn: Connection, older_than: float = 60.0) -> list[str]:
    """Rows still owed and not touched for ``older_than`` seconds, for beat to re-publish.

    A row waiting out its retry delay, or being sent right now, is left alone.
    """
    return notifications.owed(conn, older_than)


def schedule_backup_notice(
    conn: Connection,
    target: Target,
    *,
    event: str,
    detail: str,
    at: datetime,
    notifiers: Notifiers,
) -> list[str]:
    """Something about the target's off-host backups to tell (``backup_notice``): one row
    per channel that hears about the target, never a commit status. Never raises."""
    try:
        with conn.begin_nested():
            subject = backup_notice.subject_of(target.name, at)
            about = About(backup_notice.BACKUP, "target", subject, None, target.name)
            return _owed_once(
                conn,
                about,
                {"event": event, "detail": detail},
                notifiers,
                lambda channel: policy.tells_backups(target, channel),
            )
    except Exception:
        logger.exception("notify: backup notice failed for %s", target.name)
        return []


def schedule_host_notice(
    conn: Connection, host: str, *, event: str, detail: str, at: datetime, notifiers: Notifiers
) -> list[str]:
    """A host went down or came back (``host_notice``): one row per channel that tells
    people (never a commit status: no commit here). Never raises."""
    try:
        with conn.begin_nested():
            subject = host_notice.subject_of(host, at)
            about = About(host_notice.HOST, "host", subject, None, None)
            return _owed_once(
                conn,
                about,
                {"host": host, "event": event, "detail": detail},
                notifiers,
                lambda channel: channel != "github",
            )
    except Exception:
        logger.exception("notify: host notice failed for %s", host)
        return []


def _owed_once(
    conn: Connection,
    about: About,
    spec: dict[str, Any],
    notifiers: Notifiers,
    tells: Callable[[Channel], bool],
) -> list[str]:
    """A pending row for each channel that ``tells`` this notice and has none for it yet
    (never the Slack webhook when the bot is configured: it would repeat the bot)."""
    existing = notifications.of_subject(conn, about)
    ids = []
    for notifier in notifiers:
        channel = notifier.channel
        if channel in existing or not tells(channel):
            continue
        if channel == "slack_webhook" and "slack" in notifiers:
            continue
        armed = {"spec": spec, "rev": 1}
        ids.append(
            notifications.create(conn, about, channel, status="pending", external=armed, history=[])
        )
    return ids
