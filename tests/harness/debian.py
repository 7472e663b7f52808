"""A Debian base image made here, for machines that cannot pull one.

No registry holds a base image for these tests, but a Debian mirror is reachable: the
base is made by debootstrap (minbase, plus what rollhook's Dockerfile needs) from the
mirror this machine's apt uses, and kept as a tarball in a cache directory. A cold build
takes a minute or two; later runs import the tarball in seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from contextlib import closing
from pathlib import Path

import docker

from tests.harness.engine import unmount_below

SUITE = "bookworm"  # Python 3.11, as the Dockerfile's default base
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# The Dockerfile's build stage makes a venv (python3-venv brings ensurepip); its final
# stage installs git, openssh-client, ca-certificates and restic, already here but restic.
PACKAGES = ("python3", "python3-venv", "ca-certificates", "git", "openssh-client")
REPO_ROOT = Path(__file__).parents[2]


def cache_dir() -> Path:
    """``ROLLHOOK_TEST_CACHE``, else ``.test-run/cache`` in the repository (gitignored)."""
    configured = os.environ.get("ROLLHOOK_TEST_CACHE")
    return Path(configured) if configured else REPO_ROOT / ".test-run" / "cache"


def _sources_entries(text: str, deb822: bool) -> list[tuple[str, list[str]]]:
    """(URI, suites) of each ``deb`` entry of one apt sources file."""
    entries: list[tuple[str, list[str]]] = []
    if not deb822:
        for line in text.splitlines():
            # deb [options] uri suite components...
            match = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
            if match:
                entries.append((match.group(1), [match.group(2)]))
        return entries
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        suites = fields.get("suites", "").split()
        entries.extend((uri, suites) for uri in fields.get("uris", "").split())
    return entries


def configured_mirror(etc: Path = Path("/etc/apt")) -> str:
    """The mirror apt uses here for Debian's main suite (``ROLLHOOK_DEBIAN_MIRROR`` wins)."""
    configured = os.environ.get("ROLLHOOK_DEBIAN_MIRROR")
    if configured:
        return configured
    files = [(etc / "sources.list", False)]
    sources_d = etc / "sources.list.d"
    if sources_d.is_dir():
        for path in sorted(sources_d.iterdir()):
            if path.suffix in {".list", ".sources"}:
                files.append((path, path.suffix == ".sources"))
    for path, deb822 in files:
        with contextlib.suppress(OSError):
            for uri, suites in _sources_entries(path.read_text(), deb822):
                if SUITE in suites and uri.startswith(("http://", "https://")):
                    return uri.rstrip("/")
    return DEFAULT_MIRROR


def base_tarball(mirror: str, packages: tuple[str, ...] = PACKAGES) -> Path:
    """The base's root file system as a tarball, made by debootstrap when not cached.

    The cache is keyed by suite, mirror and packages; ``make clean`` (or deleting the
    file) forces a fresh one.
    """
    key = hashlib.sha256(f"{SUITE} {mirror} {' '.join(packages)}".encode()).hexdigest()[:12]
    cache = cache_dir()
    tarball = cache / f"debian-{SUITE}-minbase-{key}.tar"
    if tarball.is_file():
        return tarball
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not os.access(debootstrap, os.X_OK):
        raise RuntimeError("no debootstrap on this machine: run scripts/install-test-deps.sh")
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=cache))
    root = work / "root"
    try:
        argv = [debootstrap, "--variant=minbase", f"--include={','.join(packages)}"]
        done = subprocess.run(
            [*argv, SUITE, str(root), mirror],
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
        if done.returncode != 0:
            log = root / "debootstrap" / "debootstrap.log"
            detail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(
                f"debootstrap from {mirror} failed ({done.returncode}):\n"
                f"{done.stdout[-2000:]}{done.stderr[-2000:]}\n{detail}"
            )
        # The host's CA bundle: a TLS-intercepting proxy's CA, if any, is trusted inside.
        host_cas = Path("/etc/ssl/certs/ca-certificates.crt")
        if host_cas.is_file():
            shutil.copyfile(host_cas, root / "etc/ssl/certs/ca-certificates.crt")
        # apt's downloaded packages are not part of an image.
        for deb in (root / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        partial = work / "base.tar"
        subprocess.run(
            ["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), "."],
            check=True,
            capture_output=True,
            timeout=600,
        )
        partial.replace(tarball)  # whole or not at all, for a run that is killed
    finally:
        unmount_below(work)  # debootstrap mounts /proc and /sys inside while it works
        shutil.rmtree(work, ignore_errors=True)
    return tarball


def import_base(client: docker.DockerClient, tarball: Path, reference: str) -> None:
    """Import the tarball as an image named ``reference`` (``repository:tag``)."""
    repository, _, tag = reference.rpartition(":")
    client.api.import_image_from_file(str(tarball), repository=repository, tag=tag)
    client.images.get(reference)  # raises if the import did not make it


def build_image(
    docker_host: str,
    tag: str,
    buildargs: dict[str, str],
    context: Path = REPO_ROOT,
    timeout: float = 1800,
) -> tuple[str, float]:
    """``docker build`` of ``context``'s Dockerfile with host networking (the private
    engine has no bridge); returns the build's log and its duration. A failed step raises
    with the log's end."""
    started = time.monotonic()
    lines: list[str] = []
    with closing(docker.APIClient(base_url=docker_host, timeout=int(timeout))) as api:
        for chunk in api.build(
            path=str(context),
            tag=tag,
            buildargs=buildargs,
            network_mode="host",
            rm=True,
            forcerm=True,
            decode=True,
        ):
            if "stream" in chunk:
                lines.append(chunk["stream"])
            if "error" in chunk:
                log = "".join(lines)[-6000:]
                raise RuntimeError(f"docker build failed: {chunk['error']}\n{log}")
    return "".join(lines), time.monotonic() - started
