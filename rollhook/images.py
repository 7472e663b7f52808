"""Container image references: parsed, normalised and compared the way Docker does.

``mintplexlabs/anythingllm`` and ``docker.io/mintplexlabs/anythingllm`` are the same
repository; ``ubuntu`` is ``docker.io/library/ubuntu``. Events match targets on
registry host plus repository, so both sides go through :func:`parse_reference`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
_HUB_ALIASES = {"index.docker.io", "registry-1.docker.io", "registry.hub.docker.com", DOCKER_HUB}
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-fA-F0-9]{32,}$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_PATH_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")


class ReferenceError(ValueError):
    """Not a valid image reference."""


@dataclass(frozen=True)
class ImageRef:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """registry/repository, the key events are matched on."""
        return f"{self.registry}/{self.repository}"

    def with_digest(self, digest: str) -> ImageRef:
        return ImageRef(self.registry, self.repository, self.tag, digest)

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"{self.name}{tag}{digest}"

    def pullable(self) -> str:
        """The reference to pull: by digest when one is known, else by tag."""
        if self.digest:
            return f"{self.name}@{self.digest}"
        return f"{self.name}:{self.tag or 'latest'}"


def _looks_like_host(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost"


def parse_reference(text: str) -> ImageRef:
    """Parse ``[host[:port]/]path[:tag][@digest]`` into a normalised reference."""
    text = text.strip()
    if not text or any(c.isspace() for c in text):
        raise ReferenceError(f"invalid image reference {text!r}")
    digest = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST.match(digest):
            raise ReferenceError(f"invalid digest in image reference: {digest!r}")
    tag = None
    last_slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > last_slash:
        text, tag = text[:colon], text[colon + 1 :]
        if not _TAG.match(tag):
            raise ReferenceError(f"invalid tag in image reference: {tag!r}")
    parts = text.split("/")
    if len(parts) > 1 and _looks_like_host(parts[0]):
        registry, path = parts[0].lower(), parts[1:]
    else:
        registry, path = DOCKER_HUB, parts
    if registry in _HUB_ALIASES:
        registry = DOCKER_HUB
        if len(path) == 1:
            path = ["library", *path]
    if not path or not all(_PATH_COMPONENT.match(p) for p in path):
        raise ReferenceError(f"invalid repository in image reference: {'/'.join(path)!r}")
    return ImageRef(registry, "/".join(path), tag, digest)


def short_digest(digest: str | None) -> str:
    """``sha256:05617e7b...`` -> ``05617e7b1c2d`` for people to read."""
    if not digest:
        return "-"
    return digest.split(":", 1)[-1][:12]
