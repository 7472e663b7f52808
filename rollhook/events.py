"""An event: what rollhook was told (a webhook, an API call, a CLI command, a poll) and
the jobs it makes, one per target.

Every way in builds its event here, so that an event and its jobs always agree: the same
id, one receiving time, one trigger. The records store it (``records.events``) before
anybody is answered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypedDict

from rollhook.ids import new_id
from rollhook.jobs import Action, ImageHint, Job, Source, Trigger

# The events table's delivery_id and actor columns are 200 characters wide.
_COLUMN = 200


class JobFields(TypedDict, total=False):
    """What one target's job asks for, beyond what the event says for all of them."""

    action: Action
    ref: str | None
    image: ImageHint | None
    rollback_to: str | None
    restore_data: bool | None
    restore_backup: str | None
    force: bool


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
    body_key: str | None = None  # signed sources: "body:sha256:<hex>" of the raw body

    def dedup_keys(self) -> tuple[str, ...]:
        """Every key that makes another delivery the same event as this one."""
        return (self.dedup_key, self.body_key) if self.body_key else (self.dedup_key,)


def new_event(
    source: Source,
    kind: str,
    *,
    dedup_key: str | None,
    delivery_id: str | None,
    actor: str | None,
    summary: dict[str, Any],
    jobs: Mapping[str, JobFields],
    manual: bool = False,
    body_key: str | None = None,
) -> NewEvent:
    """An event and its jobs (one per target, by target name).

    ``dedup_key``: what makes a second delivery of the same thing the same event; None
    for an event that is its own (a person's request without an idempotency key).
    ``manual``: a person asked, which lets the jobs pass a pause and retry a failed state.
    ``body_key``: a signed body's hash, a second key that makes a replay the same event.
    """
    event_id = new_id("e")
    now = datetime.now(UTC)
    delivery_id = delivery_id[:_COLUMN] if delivery_id else None
    actor = actor[:_COLUMN] if actor else None
    trigger = Trigger(source=source, event_id=event_id, delivery_id=delivery_id, actor=actor)
    return NewEvent(
        id=event_id,
        source=source,
        dedup_key=dedup_key or f"{source}:{event_id}",
        kind=kind,
        summary=summary,
        received_at=now,
        delivery_id=delivery_id,
        actor=actor,
        jobs=[
            Job(
                id=new_id("j"),
                target=target,
                trigger=trigger,
                received_at=now,
                manual=manual,
                **fields,
            )
            for target, fields in sorted(jobs.items())
        ],
        body_key=body_key,
    )
