"""An event: what rollhook was told (a webhook, an API call, a CLI command) and the jobs
it makes, one per target. The records store it (``records.events``) before anybody is
answered."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rollhook.jobs import Job


@dataclass
class NewEvent:
    id: str
    source: str
    dedup_key: str
    kind: str
    summary: dict[str, Any]
    received_at: datetime
    delivery_id: str | None = None
    actor: str | None = None
    jobs: list[Job] = field(default_factory=list)
