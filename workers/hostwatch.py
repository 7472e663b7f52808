"""Beat's look at the hosts: a host whose workers stopped beating is told once as down,
and once as back (``rollhook/records/hosts.py`` keeps the state as last told).

Run in the dispatch tick (every 2 s). A down host's targets need nothing done here: their
work waits in the host's own queue, and the API shows them ``waiting_for_host``.
"""

from __future__ import annotations

import logging

from rollhook.broker import NOTIFY
from rollhook.records import hosts
from rollhook.records.schema import db_now
from workers.context import WorkerContext
from workers.notify import schedule_host_notice

logger = logging.getLogger("rollhook.hosts")


def watch_hosts(ctx: WorkerContext) -> list[tuple[str, str]]:
    """Record and tell each host's change of state; the changes, (host, up|down)."""
    names = {target.host for target in ctx.targets.values()}
    ids: list[str] = []
    with ctx.records.begin() as conn:
        changed = hosts.changes(conn, names)
        if not changed:
            return []
        now = db_now(conn)
        views = {view.name: view for view in hosts.views(conn, names)}
        for host, state in changed:
            view = views[host]
            waiting = sorted(t.name for t in ctx.targets.values() if t.host == host)
            if state == "down":
                seen = (
                    f"no worker heartbeat since {view.last_seen.isoformat(timespec='seconds')}"
                    if view.last_seen
                    else f"no worker of {host} has ever beaten "
                    f"(is `rollhook worker --host {host}` running?)"
                )
                detail = f"{seen}; waiting: {', '.join(waiting) or '-'}"
                logger.error("host %s is down (%s)", host, detail)
            else:
                detail = f"{len(view.workers)} worker(s) beating; queued work runs now"
                logger.info("host %s is back (%s)", host, detail)
            ids += schedule_host_notice(
                conn, host, event=state, detail=detail, at=now, notifiers=ctx.notifiers
            )
    for notification_id in ids:
        try:
            ctx.send(NOTIFY, [notification_id])
        except Exception:  # noqa: BLE001 - beat re-publishes what is still owed
            logger.warning("broker unavailable; notification %s waits for beat", notification_id)
    return [(host, str(state)) for host, state in changed]
