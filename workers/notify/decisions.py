"""A change that waited for approval, decided on: its Slack message is told again.

The "pending" target notice (workers/approval.py) posts one Slack message with Approve and
Reject. When a person decides (a press, ``rollhook approve``/``reject``, a sync) the
worker re-arms that message's Slack row with who decided and when
(:func:`schedule_decision`), and again as the approved deployment starts and ends
(:func:`schedule_approval_progress`); the Slack notifier then updates the message in
place (``chat.update`` on the same channel and ts), through the same pacing and 429
handling as every other Slack call. Only the Slack row is re-armed: an email or a console
line about the wait is not sent again. Like the rest of scheduling these write rows only
(no network) and never raise.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Connection

from rollhook.records import notifications
from rollhook.records.deployments import DeploymentRecord
from rollhook.records.schema import TERMINAL_STATUSES, utcnow
from workers.notify.notices import read_decided
from workers.notify.scheduling import target_about

logger = logging.getLogger("rollhook.notify")

_ENDED = frozenset({"rejected", *TERMINAL_STATUSES})


def schedule_decision(
    conn: Connection,
    target: str,
    waited: list[str],
    *,
    decision: str,
    by: str,
    deployment: str | None = None,
) -> list[str]:
    """``waited``: the automatic deployments the decision ends or approves (oldest
    first); the Slack row of the wait's notice is re-armed. Its id, when there is one."""
    decided = {
        "decision": decision,
        "by": by,
        "at": utcnow().isoformat(timespec="seconds"),
        "progress": "approved" if decision == "approve" else "rejected",
        "deployment": deployment,
    }
    return _rearm(conn, target, waited, decided, replace=True)


def schedule_approval_progress(conn: Connection, record: DeploymentRecord) -> list[str]:
    """``record`` started or ended: tell it on the message of the wait it ends. An
    approval (a sync) tells its progress there; any other deployment that takes over a
    wait nobody decided on (the deploy window opened and the change started by itself, or
    a person deployed) says so there, so its buttons do not stay as if it still waited."""
    if record.kind == "heal":
        return []
    progress = "deploying" if record.status == "running" else record.status
    if progress not in _ENDED and progress != "deploying":
        return []
    waited = [str(i) for i in record.requested.get("coalesced") or []]
    if record.kind != "sync":
        waited.append(record.id)  # an automatic change that waited starts by itself
    manual = bool(record.requested.get("manual"))
    started = {
        # A person's rollback replaces the change that waited; anything else carries it out.
        "decision": "rollback" if record.kind == "rollback" else "started",
        "by": str((record.trigger or {}).get("actor") or "a person")
        if manual
        else "the deploy window opened",
        "at": utcnow().isoformat(timespec="seconds"),
    }
    return _rearm(
        conn,
        record.target,
        waited,
        {"progress": progress},
        deployment=record.id,
        started=started,
    )


def _rearm(
    conn: Connection,
    target: str,
    waited: list[str],
    decided: dict[str, Any],
    *,
    replace: bool = False,
    deployment: str | None = None,
    started: dict[str, Any] | None = None,
) -> list[str]:
    try:
        with conn.begin_nested():
            for since in waited:
                row = notifications.of_subject(conn, target_about(target, "pending", since)).get(
                    "slack"
                )
                if row is None or row.status == "skipped":
                    continue
                external = dict(row.external)
                spec = dict(external.get("spec") or {})
                told = _next(spec, decided, replace, deployment, started)
                if told is None:
                    continue
                spec["decided"] = told
                external.update(spec=spec, rev=int(external.get("rev", 0)) + 1)
                notifications.change(conn, row.id, status="pending", attempts=0, external=external)
                return [row.id]
            return []
    except Exception:
        logger.exception("notify: telling the decision on %s's wait failed", target)
        return []


def _next(
    spec: dict[str, Any],
    decided: dict[str, Any],
    replace: bool,
    deployment: str | None,
    started: dict[str, Any] | None,
) -> dict[str, Any] | None:
    """What the message of a wait says next; None when this news is not for it."""
    before = read_decided(spec.get("decided"))
    if replace:  # a decision: the first one counts, a second changes nothing
        return decided if before is None else None
    if before is None:  # nobody decided: the change went ahead without a press
        return None if started is None else {**started, **decided, "deployment": deployment}
    # Progress belongs to the deployment that was approved (or went ahead), and an end is
    # never followed by "deploying" (deliveries may run late).
    if before.decision not in ("approve", "started", "rollback") or before.progress in _ENDED:
        return None
    if before.deployment not in (None, deployment):
        return None
    return {**spec["decided"], **decided, "deployment": deployment}
