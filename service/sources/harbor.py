"""Harbor webhooks, in its default format and as CloudEvents (Harbor 2.8+).

Only artifact pushes count. A push by digest alone names the digest where the tag
would be; that is not a tag a policy can follow, so it is ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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

CLOUDEVENTS = "application/cloudevents+json"
CONTENT_TYPES = frozenset({"application/json", CLOUDEVENTS})


def parse(
    headers: Mapping[str, str], body: bytes, content_type: str = "application/json"
) -> Parsed:
    doc = load_json(body)
    if content_type == CLOUDEVENTS or "specversion" in doc:
        kind, data, when = doc.get("type"), doc.get("data"), doc.get("time")
        if kind != "harbor.artifact.pushed":
            return Ignored("event not handled", str(kind))
    else:
        kind, data, when = doc.get("type"), doc.get("event_data"), doc.get("occur_at")
        if kind != "PUSH_ARTIFACT":
            return Ignored("event not handled", str(kind))
    if not isinstance(data, dict) or not isinstance(data.get("resources"), list):
        raise Malformed("artifact push without resources")
    repository = text(data, "repository", "repo_full_name")
    if not repository:
        raise Malformed("artifact push without repository.repo_full_name")
    pushes = [p for r in data["resources"] if (p := _push(r, repository, when)) is not None]
    if not pushes:
        return Ignored("untagged manifest")
    key = dedup_key("harbor", repository, *sorted(f"{p.tag}@{p.digest}" for p in pushes), when)
    return Hints("harbor", "image", key, key, text(doc, "operator"), tuple(pushes))


def _push(resource: Any, repository: str, when: Any) -> ImagePush | None:
    if not isinstance(resource, dict):
        raise Malformed("a resource is not a JSON object")
    tag, digest = text(resource, "tag"), text(resource, "digest")
    if not tag or tag == digest or tag.startswith("sha256:"):
        return None
    # resource_url is host/namespace/name:tag, with Harbor's external host as written.
    host, sep, _ = (text(resource, "resource_url") or "").partition("/")
    if not sep:
        raise Malformed("resource without a resource_url naming the registry host")
    return ImagePush(image_ref(host, repository), tag, digest, order=str(when))
