"""A target's sync status, decided from plain facts: a pure function, shared by the API,
the metrics and the dashboard.

The order is what an operator should look at first: ``paused`` (someone froze it) >
``waiting_for_host`` (no worker of its host beat for 30 s: its work waits in the queue) >
``progressing`` (a deployment runs, or queued work is about to) > ``degraded`` (healing
gave up) > ``pending`` (manual mode: something waits for approval; or a closed deploy
window holds automatic changes) > ``drifted`` (what
runs differs from the last good deployment) > ``unknown`` (never polled, never deployed) >
``out_of_sync`` (Git or the registry moved on) > ``synced``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from rollhook.images import ReferenceError, parse_reference
from rollhook.targets import TagPolicy, Target

Status = Literal[
    "paused", "waiting_for_host", "progressing", "degraded", "pending", "drifted", "unknown",
    "out_of_sync", "synced",
]  # fmt: skip
STATUSES: tuple[Status, ...] = (
    "synced", "out_of_sync", "pending", "progressing", "drifted", "degraded", "paused", "unknown",
    "waiting_for_host",
)  # fmt: skip


@dataclass(frozen=True)
class Facts:
    """What the status is decided from."""

    paused: bool = False
    host_down: bool = False  # no worker of the target's host beats: nothing can run
    running: bool = False  # a deployment of the target runs
    runnable: bool = False  # queued deployments that will run (automatic ones in auto mode)
    waiting: bool = False  # queued automatic deployments held for approval (manual mode)
    held: bool = False  # queued automatic deployments held by a closed deploy window
    auto: bool = True
    degraded: bool = False
    drifted: bool = False
    known: bool = False  # polled, or deployed, at least once
    behind: bool = False  # Git or the registry has something newer than what runs


def sync_status(facts: Facts) -> Status:
    rules: tuple[tuple[bool, Status], ...] = (
        (facts.paused, "paused"),
        (facts.host_down, "waiting_for_host"),
        (facts.running or facts.runnable, "progressing"),
        (facts.degraded, "degraded"),
        ((not facts.auto and (facts.waiting or facts.drifted)) or facts.held, "pending"),
        (facts.drifted, "drifted"),
        (not facts.known, "unknown"),
        (facts.behind, "out_of_sync"),
    )
    return next((status for holds, status in rules if holds), "synced")


def images_in_use(target: Target, images: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """``repo:tag`` -> digest of each service of a deployment (its ``images`` field) whose
    repository is one of the target's ``images``: the tags polling follows. A reference
    without a tag (Git named a digest, or nothing: the record cannot tell) is not followed."""
    found: dict[str, str] = {}
    for change in images.values():
        try:
            ref = parse_reference(str(change.get("new") or ""))
        except ReferenceError:
            continue
        if ref.digest and ref.tag and target.watches_image(ref):
            found[f"{ref.name}:{ref.tag}"] = ref.digest
    return found


def behind(
    *,
    head: str | None,
    synced: str | None,
    running: Mapping[str, str],
    observed: Mapping[str, str],
    newest: Mapping[str, str],
    policy: TagPolicy | None,
) -> list[str]:
    """How Git and the registry differ from what runs, one line each (empty: in sync).

    ``head``: the tracked branch as last seen; ``synced``: the newest commit known to run
    (or to need nothing); ``running``/``observed``: ``repo:tag`` -> digest as deployed and
    as the registry answered; ``newest``: repo -> newest allowed tag (``policy`` is None
    when newer tags are not followed).
    """
    lines = []
    if head and synced and head != synced:
        lines.append(f"the branch is at {head[:12]}, {synced[:12]} runs")
    for ref, digest in sorted(running.items()):
        seen = observed.get(ref)
        if seen and seen != digest:
            lines.append(f"{ref} moved to {seen[:19]}")
    if policy is not None:
        for ref in sorted(running):
            repository, _, tag = ref.rpartition(":")
            candidate = newest.get(repository)
            if candidate and policy.newer(candidate, tag):
                lines.append(f"{repository}:{candidate} is newer than {tag}")
    return lines
