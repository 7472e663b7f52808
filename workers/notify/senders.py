"""What each channel sends for a claimed row, one network call at a time.

Every call is followed by ``save`` (a commit of what just left), and every step first
looks at what the row says already left, so a run that died half-way, or a second copy
of the task, picks up after the last thing sent and never sends it twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from rollhook.records import notifications
from workers.notify import blocks, letter, rows, wording
from workers.notify.channels import Notifiers
from workers.notify.errors import MessageGone, PermanentError, TransientError
from workers.notify.ratelimit import SlotLimiter
from workers.notify.report import Report, View, build_report
from workers.notify.slack import SlackBot

Save = Callable[[dict[str, Any]], None]


def view_of(spec: dict[str, Any]) -> View:
    mode = spec.get("mode")
    return View(
        phase="running" if spec.get("phase") == "running" else "final",
        mode="repeat" if mode == "repeat" else "recovery" if mode == "recovery" else "normal",
        count=int(spec.get("count") or 0),
        first_deployment_id=spec.get("first"),
    )


def send(engine: Engine, notifiers: Notifiers, job: rows.Claimed, save: Save) -> str:
    """Send what the row still owes; return a line for its history."""
    report = build_report(job.record, str(job.spec.get("service") or ""))
    view = view_of(job.spec)
    limiter = SlotLimiter(engine, notifiers.slack_interval, notifiers.slack_max_wait)
    if job.channel == "slack" and notifiers.slack is not None:
        return _slack(
            engine, notifiers.slack, limiter=limiter, job=job, report=report, view=view, save=save
        )
    if job.channel == "slack_webhook" and notifiers.slack_webhook is not None:
        hook = notifiers.slack_webhook
        if job.progress.get("sent"):
            return "already sent"
        _paced(limiter, hook.key, lambda: hook.send(*blocks.message(report, view)))
        save({"sent": True})
        return "sent to the incoming webhook"
    if job.channel == "email" and notifiers.email is not None:
        if job.progress.get("sent"):
            return "already sent"
        refused = notifiers.email.send(letter.compose(report, view), f"<{job.id}@rollhook>")
        save({"sent": True, "refused": refused})
        to = wording.plural(len(notifiers.email.recipients) - len(refused), "recipient")
        return f"sent to {to}" + (f"; refused: {', '.join(refused)}" if refused else "")
    if job.channel == "github" and notifiers.github is not None:
        return _github(notifiers, job, report, view, save)
    raise PermanentError(f"{job.channel}: not configured in this process")


def _paced(limiter: SlotLimiter, key: str, call: Callable[[], Any]) -> Any:
    """Wait for the channel's turn; on 429, make every process wait as Slack asked."""
    limiter.wait_turn(key)
    try:
        return call()
    except TransientError as exc:
        if exc.retry_after:
            limiter.back_off(key, exc.retry_after)
        raise


def _where(engine: Engine, job: rows.Claimed, view: View) -> dict[str, Any] | None:
    """The message to update: this row's own, or for a repeat the first failure's."""
    own = job.progress.get("slack")
    if own or view.mode != "repeat" or not job.spec.get("anchor"):
        return dict(own) if own else None
    with engine.connect() as conn:
        anchor = notifications.status_of(conn, str(job.spec["anchor"]))
    if anchor is not None and anchor[1].get("slack"):
        return dict(anchor[1]["slack"])
    if anchor is not None and anchor[0] == "pending":
        raise TransientError("slack: the first failure's message is not posted yet", 5.0)
    return None  # that message never made it: this one is posted on its own


def _slack(
    engine: Engine,
    bot: SlackBot,
    *,
    limiter: SlotLimiter,
    job: rows.Claimed,
    report: Report,
    view: View,
    save: Save,
) -> str:
    key = f"slack-{bot.channel}"
    done: list[str] = []
    where = _where(engine, job, view)
    if view.phase == "running":
        if where is None:
            posted = _paced(limiter, key, lambda: bot.post(*blocks.message(report, view)))
            save({"slack": {"channel": posted.channel, "ts": posted.ts}, "shown": "running"})
            done.append(f"posted {posted.channel}/{posted.ts}")
        return ", ".join(done) or "already posted"
    if job.progress.get("shown") != "final":
        text, body = blocks.message(report, view)
        if where is not None:
            channel, ts = str(where["channel"]), str(where["ts"])
            try:
                _paced(limiter, key, lambda: bot.update(channel, ts, text, body))
                done.append(f"updated {channel}/{ts}")
            except MessageGone:
                where = None  # deleted or too old to edit: say it in a new message
        if where is None:
            posted = _paced(limiter, key, lambda: bot.post(text, body))
            where = {"channel": posted.channel, "ts": posted.ts}
            done.append(f"posted {posted.channel}/{posted.ts}")
        save({"slack": where, "shown": "final"})
    if where is not None and not job.progress.get("thread"):
        reply = blocks.thread_reply(report)
        parent = str(where["ts"])
        _paced(limiter, key, lambda: bot.post(*reply, thread_ts=parent))
        save({"thread": 1})
        done.append("steps in thread")
    return ", ".join(done) or "already delivered"


def _github(notifiers: Notifiers, job: rows.Claimed, report: Report, view: View, save: Save) -> str:
    assert notifiers.github is not None  # noqa: S101 - checked by the caller
    state = job.spec.get("state")
    if state not in ("pending", "success", "failure", "error"):
        raise PermanentError(f"github status: unknown state {state!r}")
    sent = list(job.progress.get("states") or [])
    if state in sent:
        return f"{state} already set"
    owner, repo = job.spec["repo"]
    notifiers.github.set(
        owner,
        repo,
        str(report.commit),
        state=state,
        description=wording.headline(report, view),
        context=f"rollhook/{report.target}",
    )
    save({"states": [*sent, state]})
    return f"commit status {state} on {report.short_commit}"
