"""The report: what people are told about one deployment, built from its record.

Every channel renders the same value, so Slack, email and the commit status never
disagree about what happened. Building it is pure (no database, no network). Text that
comes from outside rollhook (commit messages, log lines, step details) goes through
:func:`scrub`, because a log line can quote a URL with credentials in it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from rollhook.images import ImageRef, ReferenceError, parse_reference, short_digest
from rollhook.records.deployments import DeploymentRecord

# Tokens people paste by accident, and credentials inside URLs (``https://user:pw@host``).
_SECRETS = re.compile(
    r"xox[abposr]-[\w-]+|gh[pousr]_\w+|github_pat_\w+|glpat-[\w-]+|(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"
)
_FAILED = frozenset({"failed", "rolled_back"})


def scrub(text: str) -> str:
    return _SECRETS.sub("***", text)


@dataclass(frozen=True)
class ImageChange:
    service: str
    old: str | None
    new: str | None

    def describe(self) -> str:
        """``1.16.1 (05617e7b1c2d) -> 1.16.2 (1a2b3c4d5e6f)``."""
        return f"{labelled(self.old)} -> {labelled(self.new)}"


def version_of(reference: str | None) -> str:
    """The tag people know a version by; the short digest when there is no tag."""
    return _told(reference, "-", lambda ref: ref.tag or short_digest(ref.digest))


def labelled(reference: str | None) -> str:
    """``1.16.1 (05617e7b1c2d)``: the tag and the short digest, or whichever is known."""

    def label(ref: ImageRef) -> str:
        if ref.tag and ref.digest:
            return f"{ref.tag} ({short_digest(ref.digest)})"
        return ref.tag or short_digest(ref.digest)

    return _told(reference, "none", label)


def _told(reference: str | None, nothing: str, tell: Callable[[ImageRef], str]) -> str:
    if not reference:
        return nothing
    try:
        ref = parse_reference(reference)
    except ReferenceError:
        return reference[-24:]
    return tell(ref)


@dataclass(frozen=True)
class Step:
    name: str
    outcome: str
    seconds: float | None
    detail: str
    note: str = ""  # something people should fix, e.g. a stop that waited out its grace


@dataclass(frozen=True)
class View:
    """How a report is being told: while running or at the end, and in which story.

    ``repeat``: the same failure again (``count`` failures so far, the first one being
    ``first_deployment_id``); ``recovery``: the first success after ``count`` failures.
    """

    phase: Literal["running", "final"] = "final"
    mode: Literal["normal", "repeat", "recovery"] = "normal"
    count: int = 0
    first_deployment_id: str | None = None


@dataclass(frozen=True)
class Report:
    deployment_id: str
    target: str
    kind: str
    status: str
    reason: str
    service: str
    trigger: Mapping[str, Any]
    commit: str | None
    commit_message: str
    commit_author: str
    commit_url: str | None
    images: tuple[ImageChange, ...]
    steps: tuple[Step, ...]
    log: str
    duration: float | None

    @property
    def short_commit(self) -> str:
        return (self.commit or "")[:7]

    @property
    def failed(self) -> bool:
        return self.status in _FAILED

    @property
    def gated(self) -> ImageChange | None:
        """The health-gated service's image change, or the first one that changed."""
        for change in self.images:
            if change.service == self.service:
                return change
        return next((c for c in self.images if c.old != c.new), None)

    @property
    def version(self) -> str:
        change = self.gated
        if change is not None and change.new:
            return version_of(change.new)
        return self.short_commit or "deployment"

    @property
    def previous_version(self) -> str | None:
        change = self.gated
        return version_of(change.old) if change is not None and change.old else None

    @property
    def notes(self) -> tuple[str, ...]:
        """What the steps noted for people to act on, each once, in step order."""
        return tuple(dict.fromkeys(s.note for s in self.steps if s.note))

    @property
    def failed_step(self) -> Step | None:
        return next((s for s in self.steps if s.outcome == "failed"), None)

    @property
    def rollback_steps(self) -> tuple[Step, ...]:
        """What ran after the first failure: the rollback, whatever its steps are named."""
        failed = self.failed_step
        if failed is None:
            return ()
        return self.steps[self.steps.index(failed) + 1 :]

    def log_tail(self, lines: int, chars: int) -> str:
        kept = self.log.rstrip("\n").splitlines()[-lines:]
        text = "\n".join(kept)
        return text[-chars:] if len(text) > chars else text


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def _seconds(start: Any, end: Any) -> float | None:
    began, ended = _parse_time(start), _parse_time(end)
    if began is None or ended is None or (began.tzinfo is None) != (ended.tzinfo is None):
        return None
    return max(0.0, (ended - began).total_seconds())


def _author(info: Mapping[str, Any]) -> str:
    author = info.get("author")
    if isinstance(author, Mapping):
        author = author.get("name") or author.get("username") or author.get("email")
    return scrub(str(author)) if author else ""


def build_report(record: DeploymentRecord, service: str) -> Report:
    """The report for a deployment record."""
    info: Mapping[str, Any] = record.commit_info or {}
    images = tuple(
        ImageChange(name, (pair or {}).get("old"), (pair or {}).get("new"))
        for name, pair in sorted((record.images or {}).items())
    )
    steps = tuple(
        Step(
            name=str(raw.get("name", "?")),
            outcome=str(raw.get("outcome", "?")),
            seconds=_seconds(raw.get("started_at"), raw.get("finished_at")),
            detail=scrub(str(raw.get("detail") or "")),
            note=scrub(str(raw.get("note") or "")),
        )
        for raw in record.steps or []
        if isinstance(raw, Mapping)
    )
    message = str(info.get("message") or "").strip().splitlines()
    url = info.get("url")
    return Report(
        deployment_id=str(record.id),
        target=str(record.target),
        kind=str(record.kind or "deploy"),
        status=str(record.status),
        reason=scrub(str(record.reason or "")),
        service=service,
        trigger=dict(record.trigger or {}),
        commit=record.commit or info.get("sha"),
        commit_message=scrub(message[0]) if message else "",
        commit_author=_author(info),
        commit_url=str(url) if isinstance(url, str) and url.startswith("http") else None,
        images=images,
        steps=steps,
        log=scrub(str(record.log or "")),
        duration=_seconds(record.started_at, record.finished_at),
    )
