"""Docker Hub repository webhooks: unsigned, so the endpoint's URL carries a token.

The payload names no digest and no delivery id; a multi-arch push can fire several
identical calls, so repository + tag + push time is the identity. ``callback_url`` is
a legacy field Docker no longer supports: it is never called.
"""

from __future__ import annotations

from collections.abc import Mapping

from rollhook.images import DOCKER_HUB
from service.sources import (
    Hints,
    ImagePush,
    Malformed,
    Parsed,
    dedup_key,
    image_ref,
    load_json,
    text,
)

# Docker Hub does not document its request headers: a missing content type is taken as JSON.
CONTENT_TYPES = frozenset({"application/json", ""})


def parse(headers: Mapping[str, str], body: bytes) -> Parsed:
    doc = load_json(body)
    repository = text(doc, "repository", "repo_name")
    tag = text(doc, "push_data", "tag")
    pushed_at = (
        doc.get("push_data", {}).get("pushed_at")
        if isinstance(doc.get("push_data"), dict)
        else None
    )
    if not repository or not tag:
        raise Malformed("push without repository.repo_name or push_data.tag")
    key = dedup_key("dockerhub", repository, tag, pushed_at)
    push = ImagePush(image_ref(DOCKER_HUB, repository), tag, None, order=str(pushed_at))
    return Hints("dockerhub", "image", key, key, text(doc, "push_data", "pusher"), (push,))
