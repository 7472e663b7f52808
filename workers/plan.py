"""Planning a deployment: the compose file at a commit, the pins, every image as a digest.

The normalised compose config holds interpolated secrets, so it lives only in memory
here: what leaves this module (the record, the override file, logs) names images,
services, paths and hashes, never config values.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from packaging.version import InvalidVersion, Version

from rollhook.images import ImageRef, ReferenceError, parse_reference
from rollhook.targets import Target
from workers.backup import Source
from workers.compose import config_hash
from workers.errors import OperatorError


class Resolver(Protocol):
    def resolve(self, ref: ImageRef) -> str: ...


@dataclass
class Plan:
    commit: str
    images: dict[str, str]  # service -> repo:tag@digest (what will run)
    pins: dict[str, dict[str, Any]]  # service -> pin, as persisted once this succeeds
    config_hash: str
    fingerprint: str  # commit + config hash: the desired state, remembered when it fails
    sources: list[Source] = field(default_factory=list)  # the gated service's data
    services: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _image_of(config: dict[str, Any], service: str) -> str:
    spec = config["services"][service]
    image = spec.get("image")
    if not image:
        raise OperatorError(
            f"service {service!r} has no image: rollhook deploys images and never builds"
        )
    return str(image)


def _older(tag: str | None, than: str | None) -> bool:
    """Whether a pushed tag is an older version than the one in place (both semver)."""
    try:
        return Version((tag or "").removeprefix("v")) < Version((than or "").removeprefix("v"))
    except InvalidVersion:
        return False


def effective_pins(
    config: dict[str, Any],
    persisted: dict[str, dict[str, Any]],
    hints: list[dict[str, Any]],
    deployment_id: str,
    *,
    semver: bool = False,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The pins this deployment runs with, and notes on pins dropped or unmatched.

    A persisted pin holds while the service's image line in Git is the one it was pinned
    against; when a newer commit changes that line, Git moved on and the pin is dropped.
    Under a semver tag policy an automatic push of an older version than the one in
    place is not followed (a late or replayed notification must not downgrade); a
    person may still ask for it.
    """
    notes: list[str] = []
    pins: dict[str, dict[str, Any]] = {}
    for service, pin in persisted.items():
        if service not in config["services"]:
            notes.append(f"pin on {service} dropped: the service is gone from the compose file")
        elif _image_of(config, service) != pin.get("image_line"):
            notes.append(f"pin on {service} ({pin['ref']}) dropped: Git changed its image line")
        else:
            pins[service] = pin
    for hint in hints:
        repository, tag = hint["repository"], hint.get("tag")
        matched = False
        for service in config["services"]:
            line = _image_of(config, service)
            try:
                ref = parse_reference(line)
            except ReferenceError:
                continue
            if ref.name == repository:
                matched = True
                current = pins[service]["ref"].rpartition(":")[2] if service in pins else ref.tag
                if semver and not hint.get("manual") and _older(tag, current):
                    notes.append(f"{repository}:{tag} is older than {current}; not followed")
                    continue
                pins[service] = {
                    "image_line": line,
                    "ref": f"{repository}:{tag or ref.tag or 'latest'}",
                    "deployment": deployment_id,
                }
                if hint.get("manual") and hint.get("digest"):
                    pins[service]["digest"] = hint["digest"]  # a person named the digest
        if not matched:
            notes.append(f"image {repository} is not used by any service; the push is ignored")
    return pins, notes


def data_sources(config: dict[str, Any], service: str, volume_path: Any) -> list[Source]:
    """The gated service's bind mounts and named volumes, as host paths."""
    sources: list[Source] = []
    for mount in config["services"][service].get("volumes") or []:
        kind = mount.get("type")
        if kind == "bind":
            path = Path(mount["source"])
            sources.append(Source(f"bind:{path}", path))
        elif kind == "volume" and mount.get("source"):
            declared = (config.get("volumes") or {}).get(mount["source"]) or {}
            name = declared.get("name") or mount["source"]
            path = volume_path(name)
            if path is not None:  # None: not created yet (first deployment), no data
                sources.append(Source(f"volume:{name}", path))
    return sources


def shared_writable_mounts(config: dict[str, Any]) -> list[str]:
    """Mounts two running copies of the project would share and both write: every bind
    mount and named volume that is not read-only, as ``service: source -> target``."""
    found = []
    for service, spec in sorted((config.get("services") or {}).items()):
        for mount in spec.get("volumes") or []:
            kind, source = mount.get("type"), mount.get("source")
            if kind in {"bind", "volume"} and source and not mount.get("read_only"):
                found.append(f"{service}: {source} -> {mount.get('target')}")
    return found


def check_start_first(target: Target, config: dict[str, Any]) -> None:
    """Refuse start-first for a compose file whose services keep data of their own."""
    if target.strategy != "start-first":
        return
    mounts = shared_writable_mounts(config)
    if mounts:
        raise OperatorError(
            f"strategy: start-first runs two copies of the project at once and "
            f"{mounts[0]} is mounted read-write: both would write that data (use recreate, "
            "or keep the data outside this compose file)"
        )


def mount_points(config: dict[str, Any], service: str) -> dict[str, str]:
    """Where the service sees each of its sources (named as ``data_sources`` names them)."""
    found: dict[str, str] = {}
    for mount in config["services"][service].get("volumes") or []:
        kind, target = mount.get("type"), mount.get("target")
        if kind == "bind" and target:
            found[f"bind:{Path(mount['source'])}"] = str(target)
        elif kind == "volume" and mount.get("source") and target:
            declared = (config.get("volumes") or {}).get(mount["source"]) or {}
            found[f"volume:{declared.get('name') or mount['source']}"] = str(target)
    return found


def make_plan(
    *,
    target: Target,
    commit: str,
    config: dict[str, Any],
    persisted_pins: dict[str, dict[str, Any]],
    hints: list[dict[str, Any]],
    deployment_id: str,
    registry: Resolver,
    volume_path: Any,
) -> Plan:
    if target.service not in config.get("services", {}):
        raise OperatorError(
            f"the compose file has no service {target.service!r} (targets.{target.name}.service)"
        )
    check_start_first(target, config)
    pins, notes = effective_pins(
        config, persisted_pins, hints, deployment_id, semver=target.tag_policy.kind == "semver"
    )
    images: dict[str, str] = {}
    for service in sorted(config["services"]):
        line = _image_of(config, service)
        text = pins[service]["ref"] if service in pins else line
        try:
            ref = parse_reference(text)
        except ReferenceError as exc:
            raise OperatorError(f"service {service}: {exc}") from exc
        # A persisted pin keeps its digest; a new one (this push) is resolved now.
        digest = pins.get(service, {}).get("digest") or ref.digest or registry.resolve(ref)
        images[service] = str(ref.with_digest(digest))
        if service in pins:
            pins[service] = {**pins[service], "digest": digest}
    digest_hash = config_hash(config, images)
    return Plan(
        commit=commit,
        images=images,
        pins=pins,
        config_hash=digest_hash,
        fingerprint=hashlib.sha256(f"{commit}\n{digest_hash}".encode()).hexdigest()[:40],
        sources=data_sources(config, target.service, volume_path),
        services=sorted(config["services"]),
        notes=notes,
    )
