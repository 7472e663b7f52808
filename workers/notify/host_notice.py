"""The notice about a host going down (no worker of it beat for 30 s) or coming back.

Told once per change: beat's dispatch tick compares each host's state with the one last
told (``rollhook/records/hosts.py`` ``changes``). The subject is the host with the time
of the change (``b@2026-12-02T19:40:00``), so each change is its own notice; the spec
holds the state and a one-line detail. Worded like the backup notices (one message of
facts: ``backup_notice.slack_message``, ``letter``, ``log_line``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

HOST = "host"


@dataclass(frozen=True)
class HostNotice:
    host: str
    event: str  # down | up
    detail: str  # "no heartbeat since ...; its targets' work waits" / "workers: ..."

    @property
    def headline(self) -> str:
        if self.event == "up":
            return f"host {self.host} is back"
        return f"host {self.host} is DOWN"

    @property
    def bad_news(self) -> bool:
        return self.event == "down"

    def facts(self) -> list[tuple[str, str]]:
        return [("Host", self.host), ("State", self.event), ("Detail", self.detail)]


def subject_of(host: str, at: datetime) -> str:
    return f"{host}@{at.isoformat(timespec='seconds')}"


def read(_conn: Connection, subject: str) -> str:
    return subject  # the notice is told from its spec


def build(subject: str, spec: Mapping[str, Any]) -> HostNotice:
    return HostNotice(
        host=str(spec.get("host") or subject.partition("@")[0]),
        event="up" if spec.get("event") == "up" else "down",
        detail=str(spec.get("detail") or ""),
    )
