"""CNCF Distribution (``registry:2`` and ``registry:3``) notification envelopes.

A push sends one event per blob and one per manifest; only a manifest pushed by tag
says that a new image is there. Events in one envelope are unrelated and unordered.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from service.sources import (
    Hints,
    Ignored,
    ImagePush,
    Malformed,
    Parsed,
    dedup_key,
    image_ref,
    load_json,
    text,
)

V1 = "application/vnd.docker.distribution.events.v1+json"
V2 = "application/vnd.docker.distribution.events.v2+json"
CONTENT_TYPES = frozenset({V1, V2, "application/json"})
MANIFEST_TYPES = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    }
)
_TIMESTAMP = re.compile(r"^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(.*)$")


def parse(headers: Mapping[str, str], body: bytes) -> Parsed:
    doc = load_json(body)
    events = doc.get("events")
    if not isinstance(events, list):
        raise Malformed("envelope without an events list")
    pushes: list[tuple[str, ImagePush]] = []
    untagged = False
    seen: set[str] = set()
    for event in events:
        if not isinstance(event, dict):
            raise Malformed("an event is not a JSON object")
        action = str(event.get("action"))
        media_type = text(event, "target", "mediaType") or ""
        if action != "push" or media_type not in MANIFEST_TYPES:
            seen.add(action if action != "push" else "layer push")
            continue
        tag = text(event, "target", "tag")
        if not tag:
            untagged = True
            continue
        pushes.append((str(event.get("id") or ""), _push(event, tag)))
    if not pushes:
        if untagged:
            return Ignored("untagged manifest")
        return Ignored("no manifest push", ", ".join(sorted(seen)) or None)
    ids = sorted(event_id for event_id, _ in pushes)
    key = dedup_key("registry", *ids) if all(ids) else _content_key(pushes)
    delivery = ids[0] if len(ids) == 1 and ids[0] else key
    actor = text(events[0], "actor", "name") if isinstance(events[0], dict) else None
    return Hints("registry", "image", key, delivery, actor, tuple(p for _, p in pushes))


def _push(event: dict[str, Any], tag: str) -> ImagePush:
    repository = text(event, "target", "repository")
    host = text(event, "request", "host") or urlsplit(text(event, "target", "url") or "").netloc
    if not repository or not host:
        raise Malformed("manifest push without target.repository or request.host")
    return ImagePush(
        image=image_ref(host, repository),
        tag=tag,
        digest=text(event, "target", "digest"),
        order=_sortable(text(event, "timestamp") or ""),
    )


def _sortable(timestamp: str) -> str:
    """RFC 3339 with nanoseconds -> a string that sorts by time (fractions padded)."""
    match = _TIMESTAMP.match(timestamp)
    if match is None:
        return timestamp
    whole, fraction, zone = match.groups()
    return f"{whole}.{(fraction or '').ljust(9, '0')[:9]}{zone}"


def _content_key(pushes: list[tuple[str, ImagePush]]) -> str:
    parts = sorted(f"{p.image.name}:{p.tag}@{p.digest}" for _, p in pushes)
    return dedup_key("registry", *parts)
