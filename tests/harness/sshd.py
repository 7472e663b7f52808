"""A private OpenSSH server on 127.0.0.1 for SFTP: its own host key, config and client key.

Debian's /usr/sbin/sshd with nothing of the system's configuration: key authentication
only (an authorized key generated per session), no PAM, root allowed by key (the tests
run as root), ``internal-sftp``. Clients reach it with :meth:`SftpServer.ssh_command`:
the generated key, a known_hosts file holding the server's key, strict host key checking,
and no user or system ssh configuration.

sshd's privilege separation directory is compiled in (/run/sshd on Debian); it is created
(empty, root's, 0755, as the package's service does) when missing, and left in place.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.harness.ports import free_port, port_open
from tests.harness.process import Daemon

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rollhook-test", "-f", str(path)],
        check=True,
        capture_output=True,
    )


class SftpServer:
    """``repository(path)``: an ``sftp:`` repository string; ``options``: restic's -o."""

    user = "root"
    host = "127.0.0.1"

    def __init__(self, root: Path, log_dir: Path) -> None:
        if not SSHD.is_file() or shutil.which("ssh") is None:
            raise RuntimeError("openssh-server/-client missing: run scripts/install-test-deps.sh")
        self.root = root
        self.port = free_port()
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o700)
        self.host_key = root / "host_key"
        self.client_key = root / "client_key"
        self.known_hosts = root / "known_hosts"
        self.authorized_keys = root / "authorized_keys"
        for key in (self.host_key, self.client_key):
            if not key.exists():
                _keygen(key)
        self.authorized_keys.write_text(self.client_key.with_suffix(".pub").read_text())
        kind, blob = self.host_key.with_suffix(".pub").read_text().split()[:2]
        self.known_hosts.write_text(f"[{self.host}]:{self.port} {kind} {blob}\n")
        self.config = root / "sshd_config"
        self.config.write_text(
            "\n".join(
                [
                    f"ListenAddress {self.host}:{self.port}",
                    f"HostKey {self.host_key}",
                    "PidFile none",
                    f"AuthorizedKeysFile {self.authorized_keys}",
                    "UsePAM no",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "StrictModes no",  # the harness root is not a home directory
                    "Subsystem sftp internal-sftp",
                    "AllowTcpForwarding no",
                    "X11Forwarding no",
                    "PermitTTY no",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        # -D: stay in the foreground; -e: log to stderr (the daemon's log file).
        argv = [str(SSHD), "-D", "-e", "-f", str(self.config)]
        self.daemon = Daemon(f"sshd-{self.port}", argv, log_dir / f"sshd-{self.port}.log")

    def start(self) -> None:
        if not PRIVSEP_DIR.is_dir():
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        subprocess.run([str(SSHD), "-t", "-f", str(self.config)], check=True, capture_output=True)
        self.daemon.start()
        self.daemon.wait_until(lambda: port_open(self.port), "sshd port", timeout=30)

    def stop(self) -> None:
        self.daemon.stop()

    def ssh_command(self, port: int | None = None) -> str:
        """The ssh command restic runs for its SFTP connection (``-o sftp.command=``)."""
        return " ".join(
            [
                "ssh",
                "-F",
                "/dev/null",
                "-i",
                str(self.client_key),
                "-p",
                str(port or self.port),
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                f"UserKnownHostsFile={self.known_hosts}",
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=10",
                f"{self.user}@{self.host}",
                "-s",
                "sftp",
            ]
        )

    def options(self, port: int | None = None) -> dict[str, str]:
        """restic's extended options for this server (``port``: another one, to miss)."""
        return {"sftp.command": self.ssh_command(port)}

    def repository(self, path: Path | str) -> str:
        return f"sftp:{self.user}@{self.host}:{os.fspath(path)}"
