"""A target's ``sync`` object, as ``GET /targets`` and ``GET /targets/{name}`` answer it
(and the metrics count it): desired and live state, drift, what waits, the status.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from rollhook.records import deployments
from rollhook.records import sync as sync_records
from rollhook.records.deployments import DeploymentRecord
from rollhook.records.schema import utcnow
from rollhook.records.sync import SyncState
from rollhook.records.targets import TargetState
from rollhook.syncstatus import Facts, Status, behind, images_in_use, sync_status
from rollhook.targets import Target


def _pending_item(record: DeploymentRecord) -> dict[str, Any]:
    trigger, requested = record.trigger or {}, record.requested or {}
    return {
        "deployment": record.id,
        "kind": record.kind,
        "source": trigger.get("source"),
        "event": trigger.get("event_id"),
        "ref": requested.get("ref"),
        "image": requested.get("image"),
        "queued_at": record.created_at,
    }


def heals_in_window(target: Target, state: SyncState, current: str | None) -> int:
    """Heals of the current deployment within the heal limit's window."""
    if not current or state.heals_for != current:
        return 0
    _, window = target.sync.heals_allowed
    since = utcnow() - timedelta(seconds=window)
    return sum(1 for at in state.heals if datetime.fromisoformat(at) >= since)


def sync_view(
    conn: Connection,
    target: Target,
    state: TargetState,
    observed: SyncState | None = None,
    now: datetime | None = None,
    *,
    host_down: bool = False,
) -> dict[str, Any]:
    """The target's ``sync`` object, read from the records now (``now``: the clock the
    deploy windows are read at; ``host_down``: its host's workers stopped beating,
    ``rollhook/records/hosts.py``)."""
    seen = observed or sync_records.get(conn, target.name)
    current_id = state.current_deployment_id
    current = deployments.get(conn, current_id) if current_id else None
    queued = deployments.queued(conn, target.name)
    running = bool(deployments.running(conn, target.name))
    auto = target.sync.auto
    waiting = [r for r in queued if not r.manual and not auto]
    # A closed deploy window holds automatic changes (heals pass), as the runner does.
    closed = target.deploy_windows.holds(now or utcnow()) if target.windows else None
    held = [r for r in queued if auto and closed and not r.manual and r.kind != "heal"]
    runnable = [r for r in queued if r.manual or (auto and r not in held)]
    in_use = images_in_use(target, current.images) if current is not None else {}
    differences = behind(
        head=seen.observed_commit,
        synced=seen.synced_commit or (current.commit if current else None),
        running=in_use,
        observed=seen.observed_images,
        newest=seen.newest_tags,
        policy=target.tag_policy if target.follows_newer_tags else None,
    )
    status: Status = sync_status(
        Facts(
            paused=state.paused,
            host_down=host_down,
            running=running,
            runnable=bool(runnable) and not state.paused,
            waiting=bool(waiting),
            held=bool(held),
            auto=auto,
            degraded=seen.degraded,
            drifted=bool(seen.drift),
            known=current is not None or seen.last_poll_at is not None,
            behind=bool(differences),
        )
    )
    pending: dict[str, Any] | None = None
    if not auto and (waiting or seen.drift):
        pending = {"deployments": [_pending_item(r) for r in waiting], "drift": seen.drift}
        pending["reason"] = "waiting for approval (manual mode)" if waiting else "drift"
    elif held:
        pending = {"deployments": [_pending_item(r) for r in held], "drift": seen.drift}
        pending["reason"] = closed
    limit, window = target.sync.heals_allowed
    return {
        "status": status,
        "auto": auto,
        "interval": target.sync.interval,
        "desired": {
            "commit": seen.observed_commit,
            "images": seen.observed_images,
            "newest_tags": seen.newest_tags,
            "observed_at": seen.observed_at,
        },
        "live": {
            "deployment": current.id if current else None,
            "commit": current.commit if current else None,
            "images": in_use,
            "containers": seen.live,
            "inspected_at": seen.inspected_at,
        },
        "synced_commit": seen.synced_commit,
        "behind": differences,
        "drift": seen.drift,
        "drift_since": seen.drift_since,
        "pending": pending,
        "degraded": (
            {"since": seen.degraded_at, "reason": seen.degraded_reason} if seen.degraded else None
        ),
        "heals": {
            "count": heals_in_window(target, seen, state.current_deployment_id),
            "limit": limit,
            "window": window,
        },
        "last_poll_at": seen.last_poll_at,
        "next_poll_at": seen.next_poll_at,
        "last_error": seen.last_error,
    }
