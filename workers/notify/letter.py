"""The email about a finished deployment: a subject that says it all, text and HTML bodies.

The subject is the shared headline ("anythingllm: 1.16.2 FAILED, rolled back to 1.16.1"),
so a person who reads nothing else still knows the target, the version and the result.
The HTML part is plain markup with inline styles (mail clients drop stylesheets), and
every value in it is escaped: commit messages and log lines are not ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING

from workers.notify import wording
from workers.notify.report import Report, View

if TYPE_CHECKING:  # notices needs this module (through backup_notice) to be loaded
    from workers.notify.notices import TargetNotice

LOG_LINES = 40
LOG_CHARS = 8000


@dataclass(frozen=True)
class Letter:
    subject: str
    text: str
    html: str


def _step_lines(report: Report) -> list[str]:
    lines = []
    for step in report.steps:
        took = wording.duration(step.seconds) if step.seconds is not None else ""
        detail = f"  {step.detail[:300]}" if step.detail else ""
        lines.append(f"{step.outcome:<8} {step.name:<12} {took:>8}{detail}")
    return lines


def _failure(report: Report) -> list[tuple[str, str]]:
    rows = []
    step = report.failed_step
    if step is not None:
        rows.append(("Failed step", f"{step.name}: {step.detail or 'no detail'}"))
    elif report.reason:
        rows.append(("Reason", report.reason))
    rollback = wording.rollback_summary(report)
    if rollback:
        rows.append(("Rollback", rollback))
    return rows


def compose(report: Report, view: View) -> Letter:
    subject = wording.headline(report, view)
    facts = wording.facts(report, view)
    if report.commit_url:
        facts.insert(3, ("Commit link", report.commit_url))
    failure = _failure(report) if report.failed else []
    tail = report.log_tail(LOG_LINES, LOG_CHARS) if report.failed else ""
    steps = _step_lines(report)
    return Letter(
        subject=subject,
        text=_text(subject, facts + failure, steps, tail),
        html=_html(subject, facts + failure, steps, tail),
    )


def about_target(notice: TargetNotice) -> Letter:
    """The email about a target as a whole: the headline as subject, one line per detail."""
    subject = notice.headline
    text = "\n".join([subject, "", *notice.details, "", "-- ", "rollhook"]) + "\n"
    items = "".join(f"<li>{escape(line)}</li>" for line in notice.details)
    html = (
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        f"<title>{escape(subject)}</title></head>"
        f'<body style="font-family:sans-serif"><h2>{escape(subject)}</h2>'
        f"<ul>{items}</ul></body></html>\n"
    )
    return Letter(subject=subject, text=text, html=html)


def _text(subject: str, rows: list[tuple[str, str]], steps: list[str], tail: str) -> str:
    width = max(len(label) for label, _ in rows) + 2
    parts = [subject, "", *(f"{label + ':':<{width}}{value}" for label, value in rows)]
    if steps:
        parts += ["", "Steps:", *(f"  {line}" for line in steps)]
    if tail:
        parts += ["", "Last log lines:", *(f"  {line}" for line in tail.splitlines())]
    parts += ["", "-- ", "rollhook"]
    return "\n".join(parts) + "\n"


def _html(subject: str, rows: list[tuple[str, str]], steps: list[str], tail: str) -> str:
    cell = "padding:2px 12px 2px 0;vertical-align:top"
    table = "".join(
        f'<tr><th style="{cell};text-align:left">{escape(label)}</th>'
        f'<td style="{cell}">{_linked(value)}</td></tr>'
        for label, value in rows
    )
    pre = "background:#f4f4f4;padding:8px;font-size:12px"
    body = [f"<h2>{escape(subject)}</h2>", f"<table>{table}</table>"]
    if steps:
        body.append(f'<h3>Steps</h3><pre style="{pre}">{escape(chr(10).join(steps))}</pre>')
    if tail:
        body.append(f'<h3>Last log lines</h3><pre style="{pre}">{escape(tail)}</pre>')
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        f"<title>{escape(subject)}</title></head>"
        f'<body style="font-family:sans-serif">{"".join(body)}</body></html>\n'
    )


def _linked(value: str) -> str:
    if value.startswith(("https://", "http://")) and " " not in value:
        return f'<a href="{escape(value)}">{escape(value)}</a>'
    return escape(value)
