"""The notice about a target's off-host backups, and how each channel words it.

Three events a person should act on, and one that says it is over: a snapshot failed
(``failed``: the first of a run of failures; the ones after it are recorded, not told
again), the last good snapshot is older than twice the schedule (``stale``: once, until a
snapshot succeeds), a restore drill failed (``drill_failed``: the first of a run of failed
drills), and the drill that passes again after them (``drill_recovered``). The row's
subject is the target with the time of the occurrence
(``anythingllm@2026-05-04T03:00:12``), so each is its own notice; the spec holds the
event and its one-line detail (already scrubbed of secrets: restic's errors are, by
``workers/backup/restic_output``), and delivery reads the target's
``remote_backups`` row back for the last success.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from html import escape as html_escape
from typing import Any, Protocol

from sqlalchemy import Connection

from rollhook.records import remote_backups
from rollhook.records.remote_backups import RemoteBackupState
from workers.notify.letter import Letter

BACKUP = "backup"
EVENTS = {
    "failed": "off-host backup FAILED",
    "stale": "off-host backup is overdue",
    "drill_failed": "restore drill FAILED",
    "drill_recovered": "restore drill passes again",
}


@dataclass(frozen=True)
class BackupNotice:
    target: str
    event: str  # failed | stale | drill_failed | drill_recovered
    detail: str  # one line: the error, or how old the last snapshot is
    last_success_at: datetime | None
    last_snapshot_id: str | None

    @property
    def headline(self) -> str:
        return f"{self.target}: {EVENTS.get(self.event, self.event)}"

    def facts(self) -> list[tuple[str, str]]:
        last = "never"
        if self.last_success_at is not None:
            last = self.last_success_at.isoformat(timespec="seconds")
            if self.last_snapshot_id:
                last += f" (snapshot {self.last_snapshot_id[:8]})"
        return [
            ("Target", self.target),
            ("What", EVENTS.get(self.event, self.event)),
            ("Detail", self.detail),
            ("Last good snapshot", last),
        ]


def subject_of(target: str, at: datetime) -> str:
    return f"{target}@{at.isoformat(timespec='seconds')}"


def read(conn: Connection, subject: str) -> RemoteBackupState | None:
    """The target's row, by a subject ``<target>@<when>``."""
    return remote_backups.get(conn, subject.partition("@")[0])


def build(state: RemoteBackupState, spec: Mapping[str, Any]) -> BackupNotice:
    return BackupNotice(
        target=state.target,
        event=str(spec.get("event") or "failed"),
        detail=str(spec.get("detail") or ""),
        last_success_at=state.last_success_at,
        last_snapshot_id=state.last_snapshot_id,
    )


# -- words per channel -------------------------------------------------------------
# Shared with the notice about a host (``host_notice.py``): one message of facts.


class FactSheet(Protocol):
    @property
    def event(self) -> str: ...
    @property
    def detail(self) -> str: ...
    @property
    def headline(self) -> str: ...
    def facts(self) -> list[tuple[str, str]]: ...


def log_line(notice: FactSheet) -> str:
    return f"{notice.headline}: {notice.detail}"


def slack_message(notice: FactSheet) -> tuple[str, list[dict[str, Any]]]:
    def esc(text: str) -> str:
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    icons = {
        "stale": ":floppy_disk:",
        "drill_recovered": ":white_check_mark:",
        "up": ":white_check_mark:",
    }
    icon = icons.get(notice.event, ":x:")
    fields = [
        {"type": "mrkdwn", "text": f"*{label}*\n{esc(value)[:1900]}"}
        for label, value in notice.facts()
    ]
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": f"{icon} {notice.headline}"[:150]},
        },
        {"type": "section", "fields": fields},
    ]
    text = "\n".join([notice.headline, *(f"{k}: {v}" for k, v in notice.facts()[2:])])
    return esc(text)[:3000], blocks


def letter(notice: FactSheet) -> Letter:
    rows = notice.facts()
    width = max(len(label) for label, _ in rows) + 2
    text = "\n".join(
        [notice.headline, "", *(f"{label + ':':<{width}}{value}" for label, value in rows)]
    )
    table = "".join(
        f'<tr><th style="text-align:left;padding-right:12px">{html_escape(label)}</th>'
        f"<td>{html_escape(value)}</td></tr>"
        for label, value in rows
    )
    html = (
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        f"<title>{html_escape(notice.headline)}</title></head>"
        f'<body style="font-family:sans-serif"><h2>{html_escape(notice.headline)}</h2>'
        f"<table>{table}</table></body></html>\n"
    )
    return Letter(subject=notice.headline, text=text + "\n\n-- \nrollhook\n", html=html)
