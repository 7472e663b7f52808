"""Slack Block Kit for a report: the deployment message and its thread reply.

Slack refuses a message whose blocks break its limits (``invalid_blocks``), which would
lose the notification over a long log line, so every text is cut to fit here: a header
holds 150 characters, a section 3000, a field 2000, a message 50 blocks. The plain
``text`` is always sent too: it is what notifications and screen readers show.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from rollhook.buttons import DECISIONS, button_value
from workers.notify import wording
from workers.notify.notices import Decided, TargetNotice
from workers.notify.report import Report, View, labelled

Block = dict[str, Any]

HEADER_CHARS = 150
SECTION_CHARS = 3000
FIELD_CHARS = 2000
MAX_BLOCKS = 50
LOG_LINES = 15
THREAD_LOG_LINES = 120
_OUTCOME_ICONS = {"ok": ":white_check_mark:", "failed": ":x:", "skipped": ":fast_forward:"}


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def escape(text: str) -> str:
    """Slack's mrkdwn treats &, < and > as control characters; user text must not."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: str, limit: int) -> str:
    # A fence inside the log would end the code block early.
    body = escape(text.replace("```", "'''")) or " "
    return "```" + body[-(limit - 6) :] + "```"


_TARGET_ICONS = {
    "drift": ":warning:",
    "in_sync": ":large_green_circle:",
    "degraded": ":sos:",
    "pending": ":hourglass_flowing_sand:",
    "write_back": ":x:",
}


def target_message(notice: TargetNotice) -> tuple[str, list[Block]]:
    """A target notice: its headline, then its details (what drifted, why degraded).

    A change that waited and was decided on shows who decided and when, then how the
    approved deployment goes, in place of its buttons."""
    decided = notice.decided
    icon = _TARGET_ICONS.get(notice.event, ":information_source:")
    if decided is not None:
        icon = _PROGRESS.get(decided.progress, (":information_source:", ""))[0]
    body: list[Block] = [_section(f"{icon} *{escape(notice.headline)}*")]
    if notice.details:
        body.append(_section("\n".join(f"• {escape(line)}" for line in notice.details)))
    text = notice.headline
    if decided is not None:
        said = decision_lines(decided)
        body.append(_section("\n".join(said)))
        text += "\n" + "\n".join(said)
    elif notice.approval is not None:
        body.append(approval_buttons(*notice.approval))
    return cut(text, SECTION_CHARS), body


_PROGRESS = {
    "approved": (":hourglass:", "queued: it deploys as soon as the worker gets to it"),
    "deploying": (":rocket:", "deploying"),
    "succeeded": (":white_check_mark:", "deployed"),
    "no_op": (":white_check_mark:", "nothing needed changing"),
    "rolled_back": (
        ":leftwards_arrow_with_hook:",
        "failed and rolled back: the old version serves",
    ),
    "failed": (":x:", "failed"),
    "superseded": (":fast_forward:", "superseded by a newer request"),
    "rejected": (":no_entry_sign:", "what waited ended unrun"),
}
# A person's rollback that replaced the change: its own outcome, in its own words.
_ROLLBACK_PROGRESS = {
    "deploying": (":leftwards_arrow_with_hook:", "rolling back"),
    "succeeded": (":leftwards_arrow_with_hook:", "rolled back: the previous version serves"),
    "failed": (":x:", "the rollback failed"),
}
_SLACK_USER = re.compile(r"^slack:([UW][A-Z0-9]{2,30})$")


def decision_lines(decided: Decided) -> list[str]:
    """mrkdwn: "Approved by @alice at 2026-12-02 19:40 UTC", then where the change is."""
    match = _SLACK_USER.match(decided.by)
    who = f"<@{match[1]}>" if match else escape(decided.by)
    try:
        when = datetime.fromisoformat(decided.at).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        when = escape(decided.at) or "an unknown time"
    icon, said = _PROGRESS.get(decided.progress, (":information_source:", decided.progress))
    if decided.decision == "rollback":
        icon, said = _ROLLBACK_PROGRESS.get(decided.progress, (icon, said))
    said = escape(said)
    if decided.deployment and decided.decision != "reject":
        said += f" (deployment `{escape(decided.deployment)}`)"
    if decided.decision == "started":
        return [f"*Went ahead without a press at {when}: {who}*", f"{icon} {said}"]
    if decided.decision == "rollback":
        return [f"*Replaced by a rollback at {when}: {who}*", f"{icon} {said}"]
    verb = "Approved" if decided.decision == "approve" else "Rejected"
    return [f"*{verb} by {who} at {when}*", f"{icon} {said}"]


def approval_buttons(target: str, deployment: str) -> Block:
    """Approve and Reject (service/slack.py hears the press; only approvers count)."""
    value = button_value(target, deployment)
    return {
        "type": "actions",
        "block_id": f"approval:{deployment}"[:255],
        "elements": [
            {
                "type": "button",
                "action_id": decision,
                "text": {"type": "plain_text", "text": decision.capitalize()},
                "style": "primary" if decision == "approve" else "danger",
                "value": value,
            }
            for decision in DECISIONS
        ],
    }


def _section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": cut(text, SECTION_CHARS)}}


def _icon(report: Report, view: View) -> str:
    if view.phase == "running":
        return ":rocket:"
    if view.mode == "repeat" and report.failed:
        return ":repeat:"
    if view.mode == "recovery":
        return ":large_green_circle:"
    return {"succeeded": ":white_check_mark:", "rolled_back": ":leftwards_arrow_with_hook:"}.get(
        report.status, ":x:" if report.failed else ":information_source:"
    )


def _commit(report: Report) -> str:
    if not report.commit:
        return "-"
    sha = f"`{report.short_commit}`"
    if report.commit_url:
        sha = f"<{report.commit_url}|{report.short_commit}>"
    parts = [sha, escape(report.commit_message)]
    if report.commit_author:
        parts.append(f"({escape(report.commit_author)})")
    return " ".join(p for p in parts if p)


def _fields(report: Report, view: View) -> list[Block]:
    values = dict(wording.facts(report, view))
    pairs = [
        ("Target", escape(report.target)),
        ("Result", escape(values["Result"])),
        ("Commit", _commit(report)),
        ("Trigger", escape(wording.trigger(report))),
        ("Delivery", escape(wording.delivery(report))),
        ("Duration", values["Duration"] if view.phase == "final" else "running"),
    ]
    return [{"type": "mrkdwn", "text": cut(f"*{k}*\n{v}", FIELD_CHARS)} for k, v in pairs]


def message(report: Report, view: View) -> tuple[str, list[Block]]:
    """The deployment's own message: posted when it starts, updated in place at the end."""
    title = wording.headline(report, view)
    blocks: list[Block] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": cut(f"{_icon(report, view)} {title}", HEADER_CHARS),
            },
        },
        {"type": "section", "fields": _fields(report, view)},
    ]
    changes = [c for c in report.images if c.old != c.new]
    if changes:
        lines = [
            f"`{escape(c.service)}` {escape(labelled(c.old))} → {escape(labelled(c.new))}"
            for c in changes
        ]
        blocks.append(_section("*Images*\n" + "\n".join(lines)))
    if view.phase == "final":
        blocks += [_section(f"*Note:* {escape(note)}") for note in report.notes]
    if view.phase == "final" and report.failed:
        step = report.failed_step
        if step is not None:
            detail = escape(step.detail) or "no detail"
            blocks.append(_section(f"*Failed step:* `{escape(step.name)}`: {detail}"))
        elif report.reason:
            blocks.append(_section(f"*Reason:* {escape(report.reason)}"))
        rollback = wording.rollback_summary(report)
        if rollback:
            blocks.append(_section(f"*Rollback:* {escape(rollback)}"))
        tail = report.log_tail(LOG_LINES, SECTION_CHARS - 40)
        if tail:
            blocks.append(_section("*Last log lines*\n" + _code(tail, SECTION_CHARS - 20)))
    context = f"Deployment `{report.deployment_id}`"
    if view.mode == "repeat" and view.first_deployment_id:
        context += f", first failure `{view.first_deployment_id}`; each failure is in the thread"
    elif view.phase == "final":
        context += "; steps and log in the thread"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    # The fallback text is mrkdwn too: a commit message's "<" must not become a link.
    lines = [title, *(f"{k}: {v}" for k, v in wording.facts(report, view)[2:])]
    return cut(escape("\n".join(lines)), 3000), blocks[:MAX_BLOCKS]


def thread_reply(report: Report) -> tuple[str, list[Block]]:
    """The step-by-step log, posted as a reply in the deployment message's thread."""
    lines = []
    for step in report.steps:
        icon = _OUTCOME_ICONS.get(step.outcome, ":hourglass:")
        took = f" ({wording.duration(step.seconds)})" if step.seconds is not None else ""
        detail = f": {escape(cut(step.detail, 300))}" if step.detail else ""
        lines.append(f"{icon} `{escape(step.name)}` {step.outcome}{took}{detail}")
    title = f"{report.target}: steps of {report.deployment_id} ({wording.headline(report, View())})"
    blocks = [_section(f"*Steps of `{report.deployment_id}`*\n" + ("\n".join(lines) or "none"))]
    tail = report.log_tail(THREAD_LOG_LINES, 3 * (SECTION_CHARS - 20))
    # Three sections of log at most: enough to read an error, well inside 50 blocks.
    chunks: list[str] = []
    for line in tail.splitlines():
        if chunks and len(chunks[-1]) + len(line) + 1 < SECTION_CHARS - 40:
            chunks[-1] += "\n" + line
        else:
            chunks.append(line[: SECTION_CHARS - 40])
    blocks += [_section(_code(chunk, SECTION_CHARS)) for chunk in chunks[-3:]]
    text = title + "\n" + "\n".join(f"{s.name}: {s.outcome}" for s in report.steps)
    return cut(text, 3000), blocks
