"""Manual mode (``sync.auto: false``): automatic deployments wait for a person's sync;
deploy windows: they wait for the window to open (workers/runner.py holds them).

:func:`tell_pending` tells that something waits, once per wait: the key is the oldest
automatic deployment still waiting, so a second webhook or poll while the first waits
adds nothing, and the next change after an approval (or the window's opening) is news
again.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Connection

from rollhook.broker import NOTIFY
from rollhook.buttons import button_value
from rollhook.records import deployments
from rollhook.records import sync as sync_records
from rollhook.records import targets as target_records
from rollhook.records.deployments import DeploymentRecord
from rollhook.records.schema import utcnow
from rollhook.targets import Target
from workers.context import WorkerContext
from workers.notify import schedule_target_notice
from workers.pending_change import change_lines

logger = logging.getLogger("rollhook.approval")


def waiting(conn: Connection, name: str) -> list[DeploymentRecord]:
    """The automatic deployments of a target that wait (oldest first)."""
    return [r for r in deployments.queued(conn, name) if not r.manual]


def describe(target: Target, record: DeploymentRecord) -> str:
    """What a waiting deployment would apply, as its event said it: main@3f2a9c1, or the
    image tag a registry or a poll found."""
    requested, trigger = record.requested, record.trigger or {}
    image = requested.get("image")
    if image:
        return f"{image['repository']}:{image.get('tag') or image.get('digest', '?')[:19]}"
    ref = requested.get("ref")
    return f"{target.branch}@{ref[:7]}" if ref else f"{target.branch} ({trigger.get('source')})"


def _current(conn: Connection, name: str) -> DeploymentRecord | None:
    state = target_records.get(conn, name)
    if state is None or state.current_deployment_id is None:
        return None
    return deployments.get(conn, state.current_deployment_id)


def tell_pending(ctx: WorkerContext, target: Target, *, window: str | None = None) -> list[str]:
    """Tell once that automatic deployments wait: in manual mode for approval, or (with
    ``window``: why the deploy window is closed) for the window to open; the notification
    ids. Both carry Approve and Reject in Slack: approving a change held by the window
    deploys it now, recorded as forced by whoever approved."""
    if target.sync.auto and window is None:
        return []
    with ctx.records.begin() as conn:
        queued = waiting(conn, target.name)
        if target.sync.auto:  # a heal passes a closed window: it does not wait
            queued = [r for r in queued if r.kind != "heal"]
        if not queued:
            return []
        what = ", ".join(describe(target, r) for r in queued[-3:])
        if target.sync.auto:
            headline = f"{target.name}: {what} waiting for its deploy window"
            details = [
                f"{len(queued)} automatic deployment(s) wait: {what}",
                f"pending: {window}",
                "approve to deploy it now, outside the window (recorded as forced), or wait",
            ]
        else:
            headline = f"{target.name}: {what} waiting for approval"
            details = [
                f"{len(queued)} automatic deployment(s) wait: {what}",
                f"approve with `rollhook sync {target.name}` (POST /targets/{target.name}/sync)",
            ]
        since = queued[0].id
        spec: dict[str, Any] = {"headline": headline}
        # The change, and Approve/Reject buttons in Slack (service/slack.py hears them).
        details[1:1] = change_lines(target.branch, _current(conn, target.name), queued[-1])
        if target.approve.slack:
            spec["approval"] = button_value(target.name, since)
        row = sync_records.lock(conn, target.name)
        key = f"pending:{since}"
        if key in row.notified:
            return []
        ids = schedule_target_notice(
            conn,
            target,
            ctx.notifiers,
            event="pending",
            since=since,
            spec=spec | {"details": details},
        )
        notified = {**row.notified, key: utcnow().isoformat(timespec="milliseconds")}
        sync_records.change(conn, target.name, notified=dict(list(notified.items())[-20:]))
    logger.info("%s: %s", target.name, headline)
    for notification_id in ids:
        try:
            ctx.send(NOTIFY, [notification_id])
        except Exception:  # noqa: BLE001 - beat re-publishes what is still owed
            logger.warning("broker unavailable; notification %s waits for beat", notification_id)
    return ids
