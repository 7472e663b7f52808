"""What a webhook said, reduced to hints: pure parsers from (headers, raw body) to values.

Every parser returns either :class:`Hints` (one or more pushes, with the delivery id and
the key that makes a redelivery the same event) or :class:`Ignored` (understood, not
ours, with the reason the sender gets), and raises :class:`Malformed` when the body or
a required non-auth header is unusable. Nothing here trusts a payload for what to
deploy: a hint only says which configured target should look again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from rollhook.images import DOCKER_HUB, ImageRef, ReferenceError, parse_reference
from rollhook.jobs import Source

# The events table's dedup_key column is 200 characters wide.
_MAX_KEY = 200
_HUB_HOSTS = {"index.docker.io", "registry-1.docker.io", "registry.hub.docker.com", DOCKER_HUB}


class Malformed(ValueError):
    """The body (or a required non-auth header) cannot be understood: answer 400."""


@dataclass(frozen=True)
class GitPush:
    repo_keys: frozenset[str]  # rollhook.targets.repo_key of every URL the payload names
    repository: str  # for people: owner/name as the sender spells it
    branch: str
    after: str
    # Every path the push changed, or None when the payload's lists may be truncated.
    changed: frozenset[str] | None


@dataclass(frozen=True)
class ImagePush:
    image: ImageRef  # registry host + repository, normalised
    tag: str
    digest: str | None
    order: str = ""  # sorts newest last among pushes of one delivery (a timestamp)


Push = GitPush | ImagePush


@dataclass(frozen=True)
class Hints:
    source: Source
    kind: str  # "push" (Git) or "image" (a registry)
    dedup_key: str
    delivery_id: str
    actor: str | None
    pushes: tuple[Push, ...] = field(default=())
    # Signed sources only: the delivery id is not signed, so the same signed body under
    # another id (a replay) must be the same event: this key says so.
    body_key: str | None = None


@dataclass(frozen=True)
class Ignored:
    reason: str
    detail: str | None = None


Parsed = Hints | Ignored

ZERO_SHA = "0" * 40


def load_json(body: bytes) -> dict[str, Any]:
    """A JSON object from a body; orjson first (2-3x faster than the standard library on a
    push), the standard library for what orjson refuses but it takes (a byte order mark,
    UTF-16 or UTF-32, NaN, a lone surrogate), so that the same bodies parse as before."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            # RecursionError: thousands of nested brackets, which no sender means.
            raise Malformed("body is not valid JSON") from exc
    if not isinstance(doc, dict):
        raise Malformed("body is not a JSON object")
    return doc


def dedup_key(source: str, *parts: object) -> str:
    """A namespaced key; hashed when it would not fit the column."""
    key = f"{source}:" + ":".join(str(p) for p in parts)
    if len(key) <= _MAX_KEY:
        return key
    return f"{source}:sha256:" + hashlib.sha256(key.encode()).hexdigest()


def body_key(body: bytes) -> str:
    """The dedup key of a signed body: the same bytes are the same event, whatever the
    (unsigned) delivery id or event header says, across GitHub and Gitea alike."""
    return "body:sha256:" + hashlib.sha256(body).hexdigest()


def text(doc: Mapping[str, Any], *path: str) -> str | None:
    """A string found by walking nested objects, or None."""
    node: Any = doc
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node if isinstance(node, str) and node else None


def image_ref(host: str, repository: str) -> ImageRef:
    """registry host + repository as events name them, normalised like the targets file."""
    host = host.strip().lower()
    repository = repository.strip().strip("/").lower()
    if not host or not repository:
        raise Malformed("image push without a registry host or repository")
    if host in _HUB_HOSTS:
        host = DOCKER_HUB
        if "/" not in repository:
            repository = f"library/{repository}"
    try:
        # Validates the repository path; the host is kept as sent, even without a dot.
        checked = parse_reference(f"example.invalid/{repository}")
    except ReferenceError as exc:
        raise Malformed(str(exc)) from exc
    return ImageRef(host, checked.repository)


def header(headers: Mapping[str, str], name: str) -> str:
    """A required non-auth header (checked after auth): missing is a 400."""
    value = headers.get(name)
    if not value:
        raise Malformed(f"missing {name} header")
    return value


def listed_paths(commits: list[Any]) -> frozenset[str] | None:
    """Every path the listed commits added, removed or modified; None if a list is missing."""
    changed: set[str] = set()
    for commit in commits:
        if not isinstance(commit, dict):
            return None
        for kind in ("added", "removed", "modified"):
            paths = commit.get(kind)
            if not isinstance(paths, list):
                return None
            changed.update(p for p in paths if isinstance(p, str))
    return frozenset(changed)
