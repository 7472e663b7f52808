"""The stand-in for anything-llm: a busybox image built here (nothing can be pulled).

The root filesystem is Debian's static busybox plus its applet links and the entrypoint in
``standin_files/``; it is imported with the Docker SDK (no Dockerfile, no base image) and
pushed to the local registry. What the image does is described in the entrypoint.
"""

from __future__ import annotations

import io
import json
import secrets
import subprocess
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import docker

BUSYBOX = Path("/usr/bin/busybox")
ENTRYPOINT = Path(__file__).parent / "standin_files" / "entrypoint.sh"
ACCEPTOR = Path(__file__).parent / "standin_files" / "acceptor.c"
REPOSITORY = "acme/anythingllm"
VARIANTS = ("good", "slow", "never-healthy", "crash")
# Boot delays baked into the images: "good" is quick, "slow" is clearly slower than
# any settle time the tests use; both can be overridden with BOOT_DELAY at run time.
DEFAULT_BOOT_DELAY = {"good": 0.3, "slow": 3.0, "never-healthy": 0.3, "crash": 0.0}


@dataclass(frozen=True)
class Build:
    """One stand-in image: what it is and where it goes."""

    tag: str
    version: int  # the storage schema version it migrates to
    variant: str
    app_version: str  # what /api/utils/metrics reports
    boot_delay: float
    registry_host: str
    repository: str

    @property
    def repo(self) -> str:
        return f"{self.registry_host}/{self.repository}"

    @property
    def ref(self) -> str:
        return f"{self.repo}:{self.tag}"


# The session's default set: tag -> (schema version, variant).
DEFAULT_SET = {
    "1.0.0": (1, "good"),
    "2.0.0": (2, "good"),
    "2.0.0-slow": (2, "slow"),
    "3.0.0-never-healthy": (3, "never-healthy"),
    "3.0.0-crash": (3, "crash"),
}


def _is_static_elf(path: Path) -> bool:
    """Whether an ELF64 executable has no program interpreter (PT_INTERP), i.e. is static."""
    data = path.read_bytes()
    if data[:5] != b"\x7fELF\x02":
        return False
    phoff = int.from_bytes(data[32:40], "little")
    phentsize = int.from_bytes(data[54:56], "little")
    phnum = int.from_bytes(data[56:58], "little")
    pt_interp = 3
    return all(
        int.from_bytes(data[phoff + i * phentsize : phoff + i * phentsize + 4], "little")
        != pt_interp
        for i in range(phnum)
    )


def _rootfs_base() -> bytes:
    """Busybox, a link per applet, and the directories the app expects, as a tar stream."""
    # The image holds nothing but busybox: a dynamically linked one would not even start.
    if not BUSYBOX.exists() or not _is_static_elf(BUSYBOX):
        raise RuntimeError(f"{BUSYBOX} is missing or not static: install busybox-static")
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, mode in (
            ("bin", 0o755),
            ("etc", 0o755),
            ("tmp", 0o1777),
            ("app", 0o755),
            ("app/server", 0o755),
            ("app/server/storage", 0o755),
            ("standin", 0o755),
        ):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = mode
            tar.addfile(info)
        tar.add(str(BUSYBOX), arcname="bin/busybox")
        for applet in applets:
            if applet == "busybox":
                continue
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        _add_file(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
        _add_file(tar, "etc/group", b"root:x:0:\n", 0o644)
        _add_file(tar, "standin/entrypoint.sh", ENTRYPOINT.read_bytes(), 0o755)
        _add_file(tar, "bin/acceptor", _acceptor(), 0o755)
    # Without the end-of-archive blocks, so that more members can follow.
    return buffer.getvalue()


def _acceptor() -> bytes:
    """The stand-in's listener (``standin_files/acceptor.c``), built static with gcc."""
    with tempfile.TemporaryDirectory() as folder:
        binary = Path(folder) / "acceptor"
        try:
            subprocess.run(
                ["gcc", "-static", "-O2", "-o", str(binary), str(ACCEPTOR)],
                capture_output=True,
                check=True,
                timeout=120,
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            raise RuntimeError(
                f"cannot build the stand-in's acceptor (gcc and libc6-dev): {exc} "
                f"{detail.decode(errors='replace')[-300:]}"
            ) from exc
        return binary.read_bytes()


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _rootfs(base: bytes, build: Build) -> bytes:
    """The base tree plus a file unique to this build, so that every build has its own digest."""
    buffer = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(base)) as source,
        tarfile.open(fileobj=buffer, mode="w") as tar,
    ):
        for member in source.getmembers():
            tar.addfile(member, source.extractfile(member) if member.isfile() else None)
        stamp = {**build.__dict__, "nonce": secrets.token_hex(8)}
        _add_file(tar, "standin/build.json", json.dumps(stamp).encode(), 0o644)
    return buffer.getvalue()


class StandInImages:
    """Builds stand-in images and pushes them to the local registry.

    ``ref(tag)`` names an image of the default set (or any tag built here);
    ``digest_ref(tag)`` names it by the digest the registry holds; ``digests`` maps every
    pushed reference to its digest.
    """

    def __init__(self, docker_host: str, registry_host: str) -> None:
        self.docker_host = docker_host
        self.client = docker.DockerClient(base_url=docker_host, timeout=120)
        self.registry_host = registry_host
        self.digests: dict[str, str] = {}  # "<registry>/<repo>:<tag>" -> "sha256:..."
        self._base: bytes | None = None

    def ref(self, tag: str, repository: str = REPOSITORY, registry_host: str | None = None) -> str:
        return f"{registry_host or self.registry_host}/{repository}:{tag}"

    def digest_ref(
        self, tag: str, repository: str = REPOSITORY, registry_host: str | None = None
    ) -> str:
        """``<registry>/<repository>@sha256:...`` of a tag this object pushed."""
        digest = self.digests[self.ref(tag, repository, registry_host)]
        return f"{registry_host or self.registry_host}/{repository}@{digest}"

    def close(self) -> None:
        self.client.close()

    def build_default_set(self) -> None:
        self._base = self._base or _rootfs_base()
        builds = [
            self._spec(tag, version, variant) for tag, (version, variant) in DEFAULT_SET.items()
        ]

        # Imports and pushes wait on the engine and the registry: in parallel, one client
        # per build (the SDK's client is not meant to be shared across threads).
        def build_one(build: Build) -> None:
            with closing(docker.DockerClient(base_url=self.docker_host, timeout=120)) as client:
                self._build(client, build, push=True)

        with ThreadPoolExecutor(max_workers=len(builds)) as pool:
            for future in [pool.submit(build_one, build) for build in builds]:
                future.result()

    def build(
        self,
        tag: str,
        version: int,
        variant: str = "good",
        *,
        boot_delay: float | None = None,
        repository: str = REPOSITORY,
        push: bool = True,
        app_version: str | None = None,
        registry_host: str | None = None,
    ) -> str:
        """Build (and by default push) a stand-in image; returns ``<registry>/<repo>:<tag>``.

        ``version`` is the storage schema version the image migrates to; ``app_version``
        (default: the tag) is what ``/api/utils/metrics`` reports as ``appVersion``;
        ``registry_host`` pushes elsewhere, e.g. to a notifying registry.
        """
        build = self._spec(
            tag,
            version,
            variant,
            boot_delay=boot_delay,
            repository=repository,
            app_version=app_version,
            registry_host=registry_host,
        )
        return self._build(self.client, build, push=push)

    def _spec(
        self,
        tag: str,
        version: int,
        variant: str,
        *,
        boot_delay: float | None = None,
        repository: str = REPOSITORY,
        app_version: str | None = None,
        registry_host: str | None = None,
    ) -> Build:
        if variant not in VARIANTS:
            raise ValueError(f"unknown stand-in variant {variant!r}; one of {VARIANTS}")
        return Build(
            tag=tag,
            version=int(version),
            variant=variant,
            app_version=app_version or tag,
            boot_delay=DEFAULT_BOOT_DELAY[variant] if boot_delay is None else boot_delay,
            registry_host=registry_host or self.registry_host,
            repository=repository,
        )

    def _build(self, client: docker.DockerClient, build: Build, push: bool) -> str:
        if self._base is None:
            self._base = _rootfs_base()
        changes = [
            'CMD ["/bin/sh", "/standin/entrypoint.sh"]',
            "ENV PATH=/bin",
            f"ENV STANDIN_VERSION={build.version}",
            f"ENV STANDIN_APP_VERSION={build.app_version}",
            f"ENV STANDIN_VARIANT={build.variant}",
            f"ENV BOOT_DELAY={build.boot_delay}",
            "WORKDIR /app/server",
        ]
        client.api.import_image_from_data(
            _rootfs(self._base, build), repository=build.repo, tag=build.tag, changes=changes
        )
        if push:
            self.digests[build.ref] = _push(client, build.repo, build.tag)
        return build.ref


def _push(client: docker.DockerClient, repository: str, tag: str) -> str:
    digest = None
    for line in client.api.push(repository, tag=tag, stream=True, decode=True):
        if "error" in line:
            raise RuntimeError(f"push of {repository}:{tag} failed: {line['error']}")
        digest = line.get("aux", {}).get("Digest", digest)
    if digest is None:
        raise RuntimeError(f"push of {repository}:{tag} reported no digest")
    return str(digest)
