"""GitHub and Gitea/Forgejo deliveries: push, ping, and GHCR's package events.

Gitea and Forgejo send GitHub-compatible headers (``X-GitHub-Event``,
``X-GitHub-Delivery``) next to their own; either set is understood here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs

from rollhook.images import ImageRef, ReferenceError, parse_reference
from rollhook.jobs import Source
from rollhook.targets import repo_key
from service.sources import (
    ZERO_SHA,
    GitPush,
    Hints,
    Ignored,
    ImagePush,
    Malformed,
    Parsed,
    body_key,
    dedup_key,
    image_ref,
    listed_paths,
    load_json,
    text,
)

# GitHub lists at most this many commits; a push of more is truncated.
MAX_LISTED_COMMITS = 2048
FORM = "application/x-www-form-urlencoded"
CONTENT_TYPES = frozenset({"application/json", FORM})
_CLONE_URL_KEYS = ("clone_url", "ssh_url", "html_url", "git_url", "url")
_GITEA_DELIVERY = ("x-gitea-delivery", "x-forgejo-delivery", "x-gogs-delivery")
_GITEA_EVENT = ("x-gitea-event", "x-forgejo-event", "x-gogs-event")
# The same few repository URLs arrive with every delivery: normalise each once.
_repo_key = lru_cache(maxsize=1024)(repo_key)


def _first(headers: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        if value := headers.get(name):
            return value
    return None


def decode(content_type: str, body: bytes) -> dict[str, Any]:
    """JSON as sent, or the JSON inside the ``payload`` field of a form body."""
    if content_type != FORM:
        return load_json(body)
    try:
        fields = parse_qs(body.decode("utf-8"), strict_parsing=False)
    except UnicodeDecodeError as exc:
        raise Malformed("form body is not UTF-8") from exc
    payload = fields.get("payload")
    if not payload:
        raise Malformed("form body without a payload field")
    return load_json(payload[0].encode())


def parse(
    headers: Mapping[str, str], body: bytes, content_type: str = "application/json"
) -> Parsed:
    gitea = (
        _first(headers, _GITEA_DELIVERY) is not None or _first(headers, _GITEA_EVENT) is not None
    )
    event = headers.get("x-github-event") or _first(headers, _GITEA_EVENT)
    if not event:
        raise Malformed("missing X-GitHub-Event header")
    delivery = headers.get("x-github-delivery") or _first(headers, _GITEA_DELIVERY)
    if not delivery:
        raise Malformed("missing X-GitHub-Delivery header")
    doc = decode(content_type, body)
    source: Source = "gitea" if gitea else "github"
    if event == "ping":
        return Ignored("ping")
    if event == "push":
        parsed = _push(doc, source, delivery, complete_needs_total=gitea)
    elif event in {"package", "registry_package"}:
        parsed = _package(doc, event, delivery)
    else:
        return Ignored("event not handled", event)
    return replace(parsed, body_key=body_key(body)) if isinstance(parsed, Hints) else parsed


def _push(
    doc: dict[str, Any], source: Source, delivery: str, *, complete_needs_total: bool
) -> Parsed:
    ref = doc.get("ref")
    after = doc.get("after")
    repository = doc.get("repository")
    if not isinstance(ref, str) or not isinstance(after, str) or not isinstance(repository, dict):
        raise Malformed("push without ref, after or repository")
    if ref.startswith("refs/tags/"):
        return Ignored("tag push", ref.removeprefix("refs/tags/"))
    if doc.get("deleted") is True or after == ZERO_SHA:
        return Ignored("deleted ref", ref)
    if not ref.startswith("refs/heads/"):
        return Ignored("not a branch", ref)
    keys = frozenset(_repo_key(url) for k in _CLONE_URL_KEYS if (url := text(repository, k)))
    if not keys:
        raise Malformed("push without a repository URL")
    push = GitPush(
        repo_keys=keys,
        repository=text(repository, "full_name") or sorted(keys)[0],
        branch=ref.removeprefix("refs/heads/"),
        after=after,
        changed=_changed_paths(doc, complete_needs_total=complete_needs_total),
    )
    actor = text(doc, "pusher", "name") or text(doc, "sender", "login")
    return Hints(source, "push", dedup_key(source, delivery), delivery, actor, (push,))


def _changed_paths(doc: dict[str, Any], *, complete_needs_total: bool) -> frozenset[str] | None:
    """The files the push changed, when the payload lists them all; else None (unsure).

    A new branch or a force push changes files that no listed commit names (a force push
    can drop commits), and GitHub lists at most 2048 commits; Gitea cuts the list to a
    page and says how many there were in ``total_commits``.
    """
    commits = doc.get("commits")
    if doc.get("created") is True or doc.get("forced") is True or doc.get("before") == ZERO_SHA:
        return None
    if not isinstance(commits, list) or not 0 < len(commits) < MAX_LISTED_COMMITS:
        return None
    total = doc.get("total_commits")
    if (complete_needs_total or total is not None) and total != len(commits):
        return None
    # Gitea lists the newest commit first, GitHub last: the head must be there somewhere.
    if not any(isinstance(c, dict) and c.get("id") == doc.get("after") for c in commits):
        return None
    return listed_paths(commits)


def _package(doc: dict[str, Any], event: str, delivery: str) -> Parsed:
    action = doc.get("action")
    if action not in {"published", "updated"}:
        return Ignored("event not handled", f"{event} {action}")
    package = doc.get(event)
    if not isinstance(package, dict) or not isinstance(package.get("package_version"), dict):
        raise Malformed(f"{event} event without {event}.package_version")
    version: dict[str, Any] = package["package_version"]
    metadata = version.get("container_metadata")
    kind = str(package.get("package_type") or "").lower()
    if not isinstance(metadata, dict) and kind not in {"container", "docker"}:
        return Ignored("not a container package", kind or None)
    tag = text(version, "container_metadata", "tag", "name")
    if not tag:
        return Ignored("untagged manifest")
    digest = text(version, "container_metadata", "tag", "digest") or text(version, "version")
    push = ImagePush(_ghcr_image(package, version), tag, digest)
    actor = text(doc, "sender", "login")
    return Hints("ghcr", "image", dedup_key("github", delivery), delivery, actor, (push,))


def _ghcr_image(package: dict[str, Any], version: dict[str, Any]) -> ImageRef:
    """``ghcr.io/owner/name`` from ``package_url`` (``ghcr.io/Owner/name:tag``)."""
    url = text(version, "package_url")
    if url:
        try:
            ref = parse_reference(url.rstrip(":").lower())
        except ReferenceError:
            ref = None
        if ref is not None:
            return image_ref(ref.registry, ref.repository)
    owner = text(package, "owner", "login") or text(package, "namespace")
    name = text(package, "name")
    if not owner or not name:
        raise Malformed("package event without package_url or owner and name")
    return image_ref("ghcr.io", f"{owner}/{name}")
