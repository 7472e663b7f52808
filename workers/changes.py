"""What a poll found that the target should deploy: a pure decision, table-tested.

Polling sees the tracked branch's head, the digest of every tag in use, and the newest tag
a policy allows. Each of these becomes at most one event (source ``poll``), and only once:
``raised`` remembers what was turned into an event (or what the runner saw fail and will
not retry), so a poll never raises the same desired state twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rollhook.events import JobFields
from rollhook.jobs import ImageHint
from rollhook.targets import TagPolicy


@dataclass(frozen=True)
class Seen:
    """What one poll saw for one target."""

    head: str  # the tracked branch's head
    digests: Mapping[str, str] = field(default_factory=dict)  # "repo:tag" in use -> digest
    newest: Mapping[str, str] = field(default_factory=dict)  # repo -> newest allowed tag


@dataclass(frozen=True)
class Found:
    """The jobs to raise (one event each: they coalesce into one deployment), why, and
    what ``raised`` becomes once they are stored."""

    jobs: list[JobFields]
    why: list[str]
    raised: dict[str, Any]
    kind: str  # the event kind: push (Git moved) or image (the registry did)


def _split(ref: str) -> tuple[str, str]:
    repository, _, tag = ref.rpartition(":")
    return repository, tag


def what_changed(
    seen: Seen,
    *,
    deployed: str | None,
    synced: str | None,
    in_use: Mapping[str, str],
    raised: Mapping[str, Any],
    policy: TagPolicy | None,
) -> Found | None:
    """The new desired state a poll found, or None.

    ``deployed``: the commit of the current deployment (None: nothing deployed yet, so the
    head is deployed); ``synced``: the newest commit known to run or to need nothing;
    ``in_use``: ``repo:tag`` -> digest as deployed; ``policy``: the tag policy when newer
    tags are followed, else None.
    """
    commits_raised = raised.get("commit")
    images_raised: dict[str, str] = dict(raised.get("images") or {})
    tags_raised: dict[str, str] = dict(raised.get("tags") or {})
    jobs: list[JobFields] = []
    why: list[str] = []
    kind = "image"
    running = synced or deployed
    if seen.head != commits_raised and (deployed is None or seen.head != running):
        jobs.append({"action": "deploy", "ref": seen.head})
        why.append(
            f"nothing deployed yet: the branch head {seen.head[:12]}"
            if deployed is None
            else f"the branch moved to {seen.head[:12]} ({(running or '')[:12]} runs)"
        )
        commits_raised, kind = seen.head, "push"
    if deployed is not None:
        for ref, digest in sorted(in_use.items()):
            now = seen.digests.get(ref)
            if now and now != digest and now != images_raised.get(ref):
                repository, tag = _split(ref)
                hint = ImageHint(repository=repository, tag=tag, digest=now)
                jobs.append({"action": "deploy", "image": hint})
                why.append(f"{ref} moved to {now[:19]}")
                images_raised[ref] = now
        for ref in sorted(in_use) if policy is not None else ():
            repository, tag = _split(ref)
            candidate = seen.newest.get(repository)
            if (
                candidate
                and policy is not None
                and policy.newer(candidate, tag)
                and tags_raised.get(repository) != candidate
            ):
                hint = ImageHint(repository=repository, tag=candidate)
                jobs.append({"action": "deploy", "image": hint})
                why.append(f"{repository}:{candidate} is newer than {tag}")
                tags_raised[repository] = candidate
    if not jobs:
        return None
    new_raised = {"commit": commits_raised, "images": images_raised, "tags": tags_raised}
    return Found(jobs=jobs, why=why, raised=new_raised, kind=kind)
