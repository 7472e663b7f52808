"""Git stays the truth (``sync.write_back``): after a registry push or a poll moved a pinned
image and its deployment succeeded, the new tag is committed to the infra repository.

:func:`rewrite_env` and :func:`rewrite_compose` are pure (table-tested): the ``.env``
variable, or the compose service's ``image:`` tag, set to the new tag, with the digest
as a comment. :func:`write_back` decides whether a deployment calls for it and commits
and pushes through :meth:`workers.gitsync.GitRepo.change_file` (never forcing; a push
that lost a race is fetched, re-applied and retried). A failure is the ``write-back``
step's, never the deployment's: it stays succeeded and the failure is reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import yaml

from rollhook.images import ReferenceError, parse_reference
from rollhook.targets import Target
from workers.errors import OperatorError
from workers.gitsync import GitRepo

# Deployments from these sources moved an image without Git saying so.
IMAGE_SOURCES = frozenset({"registry", "dockerhub", "harbor", "ghcr", "poll"})
COMMENT = "# rollhook: "


@dataclass(frozen=True)
class Moved:
    """The image a deployment runs now, for the write-back's service."""

    service: str
    repository: str  # registry/repository, as the images list names it
    tag: str
    digest: str

    @property
    def comment(self) -> str:
        return f"{COMMENT}{self.repository}:{self.tag}@{self.digest}"


def rewrite_env(text: str | None, variable: str, moved: Moved) -> str | None:
    """``variable`` set to the tag (the line above it a rollhook comment with the digest);
    None when the file has no such variable (nothing of ours to change)."""
    lines = (text or "").splitlines()
    pattern = re.compile(rf"^(\s*(?:export\s+)?{re.escape(variable)}\s*=)(.*)$")
    for at, line in enumerate(lines):
        found = pattern.match(line)
        if found is None:
            continue
        value = found.group(2).strip()
        quote = value[0] if value[:1] in {"'", '"'} else ""
        lines[at] = f"{found.group(1)}{quote}{moved.tag}{quote}"
        if at > 0 and lines[at - 1].startswith(COMMENT):
            lines[at - 1] = moved.comment
        else:
            lines.insert(at, moved.comment)
        return "\n".join(lines) + "\n"
    return None


def rewrite_compose(text: str | None, service: str, moved: Moved) -> str | None:
    """The service's ``image:`` line with the new tag (only the tag changes: the
    repository stays as written) and the digest as a comment; None when the service has
    no literal image line (an interpolated ``${VAR}`` is the ``.env``'s business)."""
    if text is None:
        return None
    try:
        services = (yaml.safe_load(text) or {}).get("services") or {}
    except yaml.YAMLError:
        return None
    image = (services.get(service) or {}).get("image") if isinstance(services, dict) else None
    if not isinstance(image, str) or "$" in image:
        return None
    try:
        ref = parse_reference(image)
    except ReferenceError:
        return None
    written = image.split("@", 1)[0]
    bare = written.rsplit(":", 1)[0] if ref.tag and written.endswith(f":{ref.tag}") else written
    new = f"{bare}:{moved.tag}"
    lines = text.splitlines()
    in_service, indent = False, -1
    for at, line in enumerate(lines):
        stripped = line.strip()
        depth = len(line) - len(line.lstrip())
        if re.match(rf"^{re.escape(service)}\s*:\s*$", stripped) and depth > 0:
            in_service, indent = True, depth
            continue
        if in_service and stripped and depth <= indent:
            break
        found = re.match(r"^(\s*image\s*:\s*)([\"']?)([^\"'#\s]+)\2", line)
        if in_service and found and found.group(3) == image:
            lines[at] = f"{found.group(1)}{found.group(2)}{new}{found.group(2)}  {moved.comment}"
            return "\n".join(lines) + "\n"
    return None


def moved_image(target: Target, images: dict[str, dict[str, Any]]) -> Moved | None:
    """What the write-back's service runs after the deployment, or None when it has no
    tagged image of a watched repository."""
    config = target.sync.write_back
    if config is None:
        return None
    service = config.service or target.service
    new = str((images.get(service) or {}).get("new") or "")
    try:
        ref = parse_reference(new)
    except ReferenceError:
        return None
    if not ref.tag or not ref.digest or ref.name not in {_name(i) for i in target.images}:
        return None
    return Moved(service, ref.name, ref.tag, ref.digest)


def write_back(
    target: Target, git: GitRepo, trigger: dict[str, Any], images: dict[str, dict[str, Any]]
) -> str:
    """Commit the moved tag when this deployment calls for it; what was done, in words.
    Raises the git adapter's errors (the caller reports them)."""
    config = target.sync.write_back
    if config is None or trigger.get("source") not in IMAGE_SOURCES:
        return "not needed"
    moved = moved_image(target, images)
    if moved is None:
        return "no tagged image of a watched repository to write"
    path = str(PurePosixPath(target.path) / config.file)
    branch = config.branch or target.branch
    compose = config.file.endswith((".yml", ".yaml"))
    variable = config.variable or ""

    def rewrite(text: str | None) -> str | None:
        if compose:
            new = rewrite_compose(text, config.service or target.service, moved)
            what = f"literal image line for {config.service or target.service}"
        else:
            new = rewrite_env(text, variable, moved)
            what = f"variable {variable}"
        if new is None:
            raise OperatorError(f"write-back: {path} at the head of {branch} has no {what}")
        return new

    short = moved.digest.split(":")[-1][:12]
    message = f"rollhook: {target.name} {moved.repository}:{moved.tag} ({moved.digest})"
    sha = git.change_file(branch, path, rewrite, message)
    if sha is None:
        return f"{branch} already says {moved.tag} ({short})"
    return f"pushed {sha[:12]} to {branch}: {path} says {moved.tag} ({short})"


def _name(image: str) -> str:
    try:
        return parse_reference(image).name
    except ReferenceError:
        return image
