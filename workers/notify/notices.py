"""What a notification tells: a notice of some kind, about a subject, rebuilt at delivery.

Two kinds: ``deployment``, a deployment's start (``running``) and its end (``final``),
told from its record; and ``target``, something about a target as a whole that the
reconcile loop saw (drift found, back in sync, degraded, a change waiting for approval),
told from what was recorded when it happened (the spec), since a moment in a target's
life has no record of its own to read back. The row keeps what to tell (``external.spec``) and
the subject's id; :data:`KINDS` says how delivery reads the subject back and builds the
notice from it, so that a notice always tells what the records say now.

Adding a kind (a target's drift, a host going down): a notice dataclass here, added to
:data:`Notice`; a :class:`Kind` in :data:`KINDS`; a scheduling function that writes its
rows (``scheduling.py``); and each notifier taught to tell it (once :data:`Notice` is a
union, mypy flags every notifier that reads ``notice.report`` without asking which kind it
has). docs/ARCHITECTURE.md walks through it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from sqlalchemy import Connection

from rollhook.buttons import read_button_value
from rollhook.records import deployments
from workers.notify import backup_notice, host_notice
from workers.notify.backup_notice import BackupNotice
from workers.notify.host_notice import HostNotice
from workers.notify.report import Report, View, build_report


@dataclass(frozen=True)
class DeploymentNotice:
    """A deployment starting (``view.phase == "running"``) or ended, from its record."""

    report: Report
    view: View


@dataclass(frozen=True)
class Decided:
    """A person's decision on a change that waited, and where the change is now."""

    decision: str  # approve | reject | started (went ahead without a press) | rollback
    by: str  # the event's actor: "slack:U024BE7LH", "rollhook approve (cli)", ...
    at: str  # ISO 8601, UTC
    progress: str  # approved | deploying | rejected | a deployment's final status
    deployment: str | None = None  # the approved deployment (the sync), once queued

    @property
    def state(self) -> str:
        """What the message shows, as one word pair: a change of it is an update."""
        return f"{self.decision}:{self.progress}"


DECISIONS = ("approve", "reject", "started", "rollback")


def read_decided(value: Any) -> Decided | None:
    if not isinstance(value, Mapping) or value.get("decision") not in DECISIONS:
        return None
    return Decided(
        decision=str(value["decision"]),
        by=str(value.get("by") or "somebody"),
        at=str(value.get("at") or ""),
        progress=str(value.get("progress") or "approved"),
        deployment=str(value["deployment"]) if value.get("deployment") else None,
    )


@dataclass(frozen=True)
class TargetNotice:
    """Something about a target as a whole: ``event`` is one of :data:`TARGET_EVENTS`."""

    target: str
    event: str
    headline: str  # "llm: drift found (anything-llm stopped)"
    details: tuple[str, ...]  # one line each: what drifted, why it is degraded, ...
    approval: tuple[str, str] | None = None  # (target, waiting deployment): Approve/Reject
    # After a press (or ``rollhook approve``/``reject``): who decided, and how the approved
    # deployment goes; the message with the buttons is updated in place to say so.
    decided: Decided | None = None

    @property
    def bad_news(self) -> bool:
        return self.event in ("drift", "degraded", "write_back")


# drift: found (a new episode); in_sync: the episode ended; degraded: heal_limit reached;
# pending: a change waits for approval (manual mode); write_back: committing a moved tag
# to Git failed (the deployment itself succeeded).
TARGET_EVENTS = ("drift", "in_sync", "degraded", "pending", "write_back")

Notice: TypeAlias = DeploymentNotice | TargetNotice | BackupNotice | HostNotice


@dataclass(frozen=True)
class Kind:
    """One kind of notice: what it is about, how delivery reads that and builds the notice."""

    subject_kind: str  # deployment | target | host
    read: Callable[[Connection, str], Any | None]  # the subject by its id; None when gone
    build: Callable[[Any, Mapping[str, Any]], Notice]  # the notice from subject and spec
    gone: str  # the history line when the subject is gone


def view_of(spec: Mapping[str, Any]) -> View:
    mode = spec.get("mode")
    return View(
        phase="running" if spec.get("phase") == "running" else "final",
        mode="repeat" if mode == "repeat" else "recovery" if mode == "recovery" else "normal",
        count=int(spec.get("count") or 0),
        first_deployment_id=spec.get("first"),
    )


def _deployment_notice(record: deployments.DeploymentRecord, spec: Mapping[str, Any]) -> Notice:
    return DeploymentNotice(build_report(record, str(spec.get("service") or "")), view_of(spec))


def _target_subject(_conn: Connection, subject: str) -> str:
    return subject  # "<target>:<event>:<since>": the notice is told from its spec


def _target_notice(_subject: str, spec: Mapping[str, Any]) -> Notice:
    return TargetNotice(
        target=str(spec.get("target") or ""),
        event=str(spec.get("event") or ""),
        headline=str(spec.get("headline") or ""),
        details=tuple(str(line) for line in spec.get("details") or ()),
        approval=read_button_value(spec.get("approval")),
        decided=read_decided(spec.get("decided")),
    )


DEPLOYMENT = "deployment"
TARGET = "target"
KINDS: dict[str, Kind] = {
    DEPLOYMENT: Kind(
        "deployment", deployments.get, _deployment_notice, "the deployment record is gone"
    ),
    TARGET: Kind("target", _target_subject, _target_notice, "the target is gone"),
    backup_notice.BACKUP: Kind(
        "target", backup_notice.read, backup_notice.build, "the target's backup state is gone"
    ),
    host_notice.HOST: Kind("host", host_notice.read, host_notice.build, "the host is gone"),
}
