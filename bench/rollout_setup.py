"""Everything the rollout benchmark runs on, started by itself on 127.0.0.1 and stopped again.

The same pieces the tests use (tests/harness): a private Docker engine, a local registry,
a git server over HTTP, Redis, and stand-in anything-llm images with a fixed boot time.
Each piece registers its own teardown on an ExitStack the moment it has started, so an
interrupted run still cleans up what it got to.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path

from tests.harness.engine import PrivateEngine
from tests.harness.gitserver import GitServer
from tests.harness.ports import free_port
from tests.harness.reaper import claim, reap_stale
from tests.harness.redis import RedisServer
from tests.harness.registry import Registry
from tests.harness.standin import StandInImages
from workers.engine import DockerEngine


@dataclass(frozen=True)
class Image:
    """One stand-in image in the local registry (and not in the engine until pulled)."""

    ref: str  # registry/repository:tag, what a compose file names
    digest_ref: str  # registry/repository@sha256:..., what rollhook pulls
    app_version: str  # what /api/utils/metrics reports
    schema: int  # the storage schema it migrates to


@dataclass(frozen=True)
class ImageSpec:
    repository: str
    tag: str
    schema: int
    variant: str = "good"


@dataclass
class Servers:
    """What a deployment needs: a private engine, a registry and a git server."""

    root: Path
    engine: PrivateEngine
    registry: Registry
    git: GitServer


@dataclass
class Infra(Servers):
    """The servers and Redis, for a rollhook run as its processes (web, worker, beat)."""

    redis: RedisServer


def start_servers(stack: ExitStack) -> Servers:
    """Start the engine, registry and git server; their teardown goes on ``stack``."""
    reap_stale()  # engines and directories of earlier runs that were killed
    root = Path(tempfile.mkdtemp(prefix="rh-bench-", dir="/tmp"))
    stack.callback(shutil.rmtree, root, ignore_errors=True)
    claim(root)  # should this run die, the next run (or test session) reaps it
    logs = root / "logs"

    engine = PrivateEngine(root / "engine", logs)
    stack.callback(engine.stop)
    engine.start()
    registry = Registry(root / "registry", logs)
    stack.callback(registry.stop)
    registry.start()
    git = GitServer(root / "git", free_port())
    stack.callback(git.stop)
    git.start()
    return Servers(root, engine, registry, git)


def start_infra(stack: ExitStack) -> Infra:
    """The servers and Redis; their teardown goes on ``stack``."""
    servers = start_servers(stack)
    redis = RedisServer(servers.root / "redis", servers.root / "logs")
    stack.callback(redis.stop)
    redis.start()
    return Infra(servers.root, servers.engine, servers.registry, servers.git, redis)


def build_images(infra: Infra, specs: list[ImageSpec], boot_delay: float) -> dict[str, Image]:
    """Build and push stand-in images, then remove them from the engine.

    Keyed by ``repository:tag``. Afterwards they exist only in the registry, so the
    first deployment of each pulls it, as a real release would be pulled.
    """

    def build(spec: ImageSpec) -> Image:
        # One SDK client per thread: the Docker SDK's client is not shared across threads.
        images = StandInImages(infra.engine.host, infra.registry.host)
        try:
            ref = images.build(
                spec.tag,
                spec.schema,
                spec.variant,
                boot_delay=boot_delay,
                repository=spec.repository,
            )
            digest_ref = images.digest_ref(spec.tag, repository=spec.repository)
        finally:
            images.close()
        return Image(ref, digest_ref, spec.tag, spec.schema)

    with ThreadPoolExecutor(max_workers=4) as pool:
        built = list(pool.map(build, specs))
    with closing(infra.engine.client()) as client:
        for image in built:
            client.images.remove(image.ref, force=True)
    return {f"{s.repository}:{s.tag}": image for s, image in zip(specs, built, strict=True)}


def bare_pull_seconds(infra: Infra, images: list[Image]) -> list[float]:
    """How long rollhook's own pull (by digest, through the engine) takes for fresh images.

    Each image is removed again afterwards. This is the pull cost subtracted from
    push-to-healthy when computing rollhook's overhead.
    """
    seconds = []
    with DockerEngine(infra.engine.host) as engine, closing(infra.engine.client()) as client:
        for image in images:
            began = time.monotonic()
            engine.pull(image.digest_ref)
            seconds.append(time.monotonic() - began)
            client.images.remove(image.digest_ref, force=True)
    return seconds


def seed_storage(storage: Path, size: int) -> None:
    """Fill an anything-llm storage folder with ``size`` bytes of documents.

    Files of at most 16 MiB of incompressible data, written once (like uploaded
    documents and vector data); the app's live database stays small. Synced, so that
    flushing it does not land in a measured deployment.
    """
    docs = storage / "documents" / "custom-documents"
    docs.mkdir(parents=True, exist_ok=True)
    chunk = min(size, 16 << 20)
    block = os.urandom(1 << 20)
    written = n = 0
    while written < size:
        length = min(chunk, size - written)
        with open(docs / f"doc-{n:04d}.bin", "wb") as out:
            out.write(os.urandom(64))  # every file distinct
            blocks, tail = divmod(length - 64, len(block))
            for _ in range(blocks):
                out.write(block)
            out.write(block[:tail])
        written += length
        n += 1
    os.sync()
