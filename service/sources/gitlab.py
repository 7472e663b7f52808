"""GitLab push hooks (``X-Gitlab-Event: Push Hook``).

GitLab lists only the newest 20 commits and says how many there were in
``total_commits_count``; the file lists are complete only when both agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rollhook.targets import repo_key
from service.sources import (
    ZERO_SHA,
    GitPush,
    Hints,
    Ignored,
    Malformed,
    Parsed,
    dedup_key,
    header,
    listed_paths,
    load_json,
    text,
)

CONTENT_TYPES = frozenset({"application/json"})
_URL_KEYS = ("git_http_url", "git_ssh_url", "web_url", "http_url", "ssh_url")


def parse(headers: Mapping[str, str], body: bytes) -> Parsed:
    event = header(headers, "x-gitlab-event")
    if event == "Tag Push Hook":
        return Ignored("tag push")
    if event != "Push Hook":
        return Ignored("event not handled", event)
    doc = load_json(body)
    ref, after = doc.get("ref"), doc.get("after")
    if not isinstance(ref, str) or not isinstance(after, str):
        raise Malformed("push without ref or after")
    if ref.startswith("refs/tags/"):
        return Ignored("tag push", ref.removeprefix("refs/tags/"))
    if after == ZERO_SHA:
        return Ignored("deleted ref", ref)
    if not ref.startswith("refs/heads/"):
        return Ignored("not a branch", ref)
    project: dict[str, Any] = doc["project"] if isinstance(doc.get("project"), dict) else {}
    repository: dict[str, Any] = (
        doc["repository"] if isinstance(doc.get("repository"), dict) else {}
    )
    urls = [u for k in _URL_KEYS for d in (project, repository) if (u := text(d, k))]
    if not urls:
        raise Malformed("push without a project URL")
    delivery = headers.get("idempotency-key") or headers.get("x-gitlab-event-uuid")
    if delivery:
        key = dedup_key("gitlab", delivery)
    else:
        # GitLab before 14.8 names no delivery: the push itself is the identity.
        key = dedup_key("gitlab", doc.get("project_id"), ref, doc.get("before"), after)
        delivery = key
    push = GitPush(
        repo_keys=frozenset(repo_key(u) for u in urls),
        repository=text(project, "path_with_namespace") or urls[0],
        branch=ref.removeprefix("refs/heads/"),
        after=after,
        changed=_changed_paths(doc),
    )
    actor = text(doc, "user_username") or text(doc, "user_name")
    return Hints("gitlab", "push", key, delivery, actor, (push,))


def _changed_paths(doc: dict[str, Any]) -> frozenset[str] | None:
    commits, total = doc.get("commits"), doc.get("total_commits_count")
    if doc.get("before") == ZERO_SHA or not isinstance(commits, list):
        return None
    if not commits or len(commits) != total:
        return None
    return listed_paths(commits)
