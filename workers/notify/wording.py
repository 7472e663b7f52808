"""The words every channel shares: the one-line headline and the plain facts.

The headline is the email subject, the Slack header and notification text, and (cut to
GitHub's 140 characters) the commit status description, so a person sees the same
sentence everywhere: "anythingllm: 1.16.2 FAILED, rolled back to 1.16.1".
"""

from __future__ import annotations

from workers.notify.report import Report, View

RESULT_WORDS = {
    "succeeded": "deployed",
    "failed": "failed",
    "rolled_back": "failed, rolled back",
    "no_op": "no change",
    "superseded": "superseded",
    "running": "in progress",
    "queued": "queued",
}


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def headline(report: Report, view: View) -> str:
    target, version = report.target, report.version
    if view.phase == "running":
        verb = "rolling back to" if report.kind == "rollback" else "deploying"
        return f"{target}: {verb} {version}"
    if view.mode == "repeat" and report.failed:
        return f"{target}: {version} still failing ({plural(view.count, 'time')})"
    if report.kind == "heal":
        if report.status == "succeeded":
            return f"{target}: {version} healed"
        step = report.failed_step
        return f"{target}: heal of {version} FAILED" + (f" at {step.name}" if step else "")
    if report.kind == "rollback":
        done = report.status == "succeeded"
        return (
            f"{target}: rolled back to {version}"
            if done
            else f"{target}: rollback to {version} FAILED"
        )
    return f"{target}: {_outcome(report, view)}"


def _outcome(report: Report, view: View) -> str:
    version = report.version
    if report.status == "succeeded":
        text = f"{version} deployed"
        if view.mode == "recovery":
            text += f", recovered after {plural(view.count, 'failure')}"
        return text
    if report.status == "rolled_back":
        previous = report.previous_version
        return f"{version} FAILED, rolled back" + (f" to {previous}" if previous else "")
    if report.status == "failed":
        step = report.failed_step
        text = f"{version} FAILED" + (f" at {step.name}" if step else "")
        if any(s.outcome == "failed" for s in report.rollback_steps):
            text += ", rollback FAILED"
        return text
    if report.status == "no_op":
        return f"{version} unchanged"
    return f"{version} {RESULT_WORDS.get(report.status, report.status)}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{whole}s"
    minutes, rest = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def trigger(report: Report) -> str:
    source = str(report.trigger.get("source") or "unknown")
    actor = report.trigger.get("actor")
    return f"{source} by {actor}" if actor else source


def delivery(report: Report) -> str:
    delivery_id = report.trigger.get("delivery_id") or "-"
    event_id = report.trigger.get("event_id") or "-"
    return f"{delivery_id} (event {event_id})"


def commit_line(report: Report) -> str:
    if not report.commit:
        return "-"
    text = report.short_commit
    if report.commit_message:
        text += f" {report.commit_message}"
    if report.commit_author:
        text += f" ({report.commit_author})"
    return text


def rollback_summary(report: Report) -> str | None:
    """What the rollback did, in one sentence, or None when nothing failed."""
    failed = report.failed_step
    if failed is None or report.kind == "rollback":
        return None
    ran = report.rollback_steps
    done = ", ".join(f"{s.name} {s.outcome}" for s in ran) or "no rollback steps ran"
    if report.status == "rolled_back":
        back_on = report.previous_version
        return f"Rolled back{f' to {back_on}' if back_on else ''}: {done}."
    broken = [s for s in ran if s.outcome == "failed"]
    if broken:
        return f"Rollback FAILED at {broken[0].name}: {broken[0].detail or 'no detail'} ({done})."
    return f"Not rolled back: {done}."


def facts(report: Report, view: View) -> list[tuple[str, str]]:
    """Label and value pairs, in the order people scan them."""
    result = "in progress" if view.phase == "running" else RESULT_WORDS.get(report.status, "")
    rows = [
        ("Target", report.target),
        ("Result", result or report.status),
        ("Commit", commit_line(report)),
    ]
    rows += [(f"Image {c.service}", c.describe()) for c in report.images if c.old != c.new]
    rows += [
        ("Trigger", trigger(report)),
        ("Delivery", delivery(report)),
        ("Duration", duration(report.duration)),
        ("Deployment", report.deployment_id),
    ]
    rows += [("Note", note) for note in report.notes]
    return rows
