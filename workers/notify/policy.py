"""Who hears about what: results per target and channel, and the failure-streak memory.

Results are the deployment's final status (``succeeded``, ``failed``, ``rolled_back``,
``no_op``) plus ``recovered``, the first success after failures. A target's
``notify.on`` lists the results that notify (default: failures, rollbacks, successful
version changes and recoveries; no-ops stay quiet); ``notify.channels`` gives a channel
its own list (``{email: [failed, rolled_back]}``); ``notify.slack`` / ``notify.email``
switch a channel off for the target. The commit status follows every deployment it
marked pending, whatever the lists say: a pending status must not stay pending.

The streak (``notify_state`` row ``streak:<target>``) is how a failure that keeps
happening becomes one Slack message saying "still failing, n times" (updated in place)
and one email, and how the success after it becomes a recovery message. "The same
failure" is the same failed step for the same version: a new version that fails, or a
failure elsewhere, is news and gets its own message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection

from rollhook.records import notify_state
from rollhook.records.deployments import DeploymentRecord
from rollhook.targets import Target
from workers.notify.channels import Channel
from workers.notify.github import github_repo
from workers.notify.report import Report, View

_RESULTS = {
    "succeeded": "succeeded",
    "failed": "failed",
    "rolled_back": "rolled_back",
    "no_op": "no_op",
}


def result_of(report: Report, view: View) -> str | None:
    """The result a policy speaks about, or None for deployments nobody hears of."""
    result = _RESULTS.get(report.status)
    if result == "succeeded" and view.mode == "recovery":
        return "recovered"
    return result


def channel_results(target: Target, channel: Channel) -> set[str]:
    notify = target.notify
    if channel in ("slack", "slack_webhook") and not notify.slack:
        return set()
    if channel == "email" and not notify.email:
        return set()
    # ``notify.channels`` may give one channel its own list instead of ``on``.
    if channel in ("slack", "slack_webhook") and "slack" in notify.channels:
        return set(notify.channels["slack"])
    if channel == "email" and "email" in notify.channels:
        return set(notify.channels["email"])
    return set(notify.on)


def tells_backups(target: Target, channel: Channel) -> bool:
    """Off-host backup trouble goes to every channel the target has not switched off;
    commit statuses are about commits, never about backups."""
    if channel == "github":
        return False
    if channel in ("slack", "slack_webhook"):
        return target.notify.slack
    if channel == "email":
        return target.notify.email
    return True


def wants(target: Target, channel: Channel, result: str | None) -> bool:
    if result is None:
        return False
    results = channel_results(target, channel)
    # "recovered" is a success: a channel that hears about successes hears about it too.
    return result in results or (result == "recovered" and "succeeded" in results)


def announces(target: Target, streak: Mapping[str, Any] | None, channel: Channel) -> bool:
    """Tell a channel that tells progress when the deployment starts, or only at its end?

    At the start only when a success would be told anyway; during a failure streak the
    message waits for the result, since a repeat only updates the first failure's message.
    """
    return wants(target, channel, "succeeded") and not (streak or {}).get("count")


def commit_status_applies(target: Target, record: DeploymentRecord) -> bool:
    trigger = record.trigger or {}
    return (
        target.notify.commit_status
        and bool(record.commit)
        and trigger.get("source") == "github"
        and github_repo(target.repo) is not None
    )


def signature(report: Report) -> str:
    step = report.failed_step
    return f"{step.name if step else report.status}|{report.version}"


def _key(target: str) -> str:
    return f"streak:{target}"


def load_streak(conn: Connection, target: str) -> dict[str, Any] | None:
    return notify_state.read(conn, _key(target))


def save_streak(conn: Connection, target: str, state: Mapping[str, Any]) -> None:
    existing = load_streak(conn, target)
    notify_state.write(conn, _key(target), dict(state), create=existing is None)


def advance(conn: Connection, report: Report) -> tuple[View, dict[str, Any]]:
    """Fold a final deployment into its target's streak; return how to tell it.

    Safe to call twice for one deployment: the second call returns the first answer.
    Manual rollbacks, heals, no-ops and superseded deployments leave the streak as it is.
    """
    state = load_streak(conn, report.target) or {}
    if state.get("last_deployment_id") == report.deployment_id:
        return View(**state.get("last_view", {})), state
    if report.kind in {"rollback", "heal"} or report.status not in {
        "succeeded",
        "failed",
        "rolled_back",
    }:
        return View(), state
    failures = int(state.get("failures", 0))
    if report.failed:
        if failures and state.get("signature") == signature(report):
            count = int(state.get("count", 1)) + 1
            view = View(mode="repeat", count=count, first_deployment_id=state.get("first"))
            state.update(count=count, failures=failures + 1)
        else:
            view = View()
            state = {
                "signature": signature(report),
                "count": 1,
                "failures": failures + 1,
                "first": report.deployment_id,
                "anchors": {},
            }
    else:
        view = View(mode="recovery", count=failures) if failures else View()
        state = {"failures": 0, "count": 0}
    state["last_deployment_id"] = report.deployment_id
    state["last_view"] = {
        "mode": view.mode,
        "count": view.count,
        "first_deployment_id": view.first_deployment_id,
    }
    save_streak(conn, report.target, state)
    return view, state


def remember_anchor(conn: Connection, target: str, channel: Channel, notification_id: str) -> None:
    """The first failure's message is the one later repeats update."""
    state = load_streak(conn, target)
    if state is not None and state.get("count") == 1:
        state.setdefault("anchors", {})[channel] = notification_id
        save_streak(conn, target, state)
