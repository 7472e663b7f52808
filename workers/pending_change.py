"""What a change that waits for approval would do, in lines a person decides on: the
commit range, each image old -> new, and who pushed it (workers/approval.py tells it)."""

from __future__ import annotations

from rollhook.images import ReferenceError, parse_reference
from rollhook.records.deployments import DeploymentRecord


def change_lines(
    branch: str, current: DeploymentRecord | None, waiting: DeploymentRecord
) -> list[str]:
    """From the current deployment (None before the first) to the newest waiting one."""
    lines: list[str] = []
    ref = waiting.requested.get("ref")
    deployed = current.commit if current is not None else None
    if ref:
        start = deployed[:7] if deployed else "nothing deployed"
        lines.append(f"commits: {start}..{ref[:7]} on {branch}")
    image = waiting.requested.get("image")
    if image:
        new = image.get("tag") or (image.get("digest") or "?")[:19]
        old = _running_tag(current, image["repository"])
        lines.append(f"image {image['repository']}: {old or '?'} -> {new}")
    actor = waiting.trigger.get("actor")
    if actor:
        lines.append(f"pushed by {actor} ({waiting.trigger.get('source')})")
    return lines


def _running_tag(current: DeploymentRecord | None, repository: str) -> str | None:
    """The tag (or digest) the current deployment runs of ``repository``."""
    for pair in (current.images if current is not None else {}).values():
        try:
            ref = parse_reference(str(pair.get("new") or ""))
        except ReferenceError:
            continue
        if ref.name == repository:
            return ref.tag or (ref.digest or "")[:19] or None
    return None
