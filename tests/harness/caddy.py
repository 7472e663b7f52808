"""The proxy's two Caddy processes (front and switch), private to one test session.

They run as ``rollhook proxy`` runs them (same configurations, same environment), with
their admin APIs on unix sockets under the harness root and HOME/XDG directories there
too (Caddy's PKI, certificates and locks), so nothing reaches the machine's own Caddy,
its trust store or port 2019. Front routes listen on free loopback ports the tests pick.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path

from tests.harness.process import Daemon
from workers.proxy import CaddyAdmin, Layout, Proxy, Route, Switch
from workers.proxy.process import caddy_argv, caddy_env, clear_stale_sockets, write_configs


class CaddyProxy:
    """``front`` and ``switch`` daemons; ``driver()`` gives a ``Proxy`` on their admin APIs."""

    def __init__(self, root: Path, log_dir: Path) -> None:
        if shutil.which("caddy") is None:
            raise RuntimeError("caddy is missing: run scripts/install-test-deps.sh")
        self.layout = Layout(root)
        self.layout.check()
        self._log_dir = log_dir
        self.front: Daemon | None = None
        self.switch: Daemon | None = None

    @property
    def ca_root(self) -> Path:
        """The root certificate of Caddy's local CA (``tls: internal``)."""
        return self.layout.caddy_home / "data" / "pki" / "authorities" / "local" / "root.crt"

    def start(self, routes: Iterable[Route] = (), switches: Mapping[str, Switch] = {}) -> None:
        front, switch = write_configs(self.layout, list(routes), switches)
        clear_stale_sockets(self.layout)
        env = caddy_env(self.layout)
        self.switch = Daemon(
            "caddy-switch", caddy_argv(switch), self._log_dir / "caddy-switch.log", env=env
        )
        self.front = Daemon(
            "caddy-front", caddy_argv(front), self._log_dir / "caddy-front.log", env=env
        )
        for daemon, admin in (
            (self.switch, self.layout.switch_admin),
            (self.front, self.layout.front_admin),
        ):
            daemon.start()
            daemon.wait_until(partial(_answers, admin), f"admin API on {admin}")

    def stop(self) -> None:
        for daemon in (self.front, self.switch):
            if daemon is not None:
                daemon.stop()

    def driver(self) -> Proxy:
        return Proxy(self.layout)

    def pids(self) -> dict[str, int]:
        return {
            d.name: d.pid for d in (self.front, self.switch) if d is not None and d.pid is not None
        }


def _answers(path: Path) -> bool:
    # httpcore leaks the socket of a failed unix connect (a ResourceWarning): try first.
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    with CaddyAdmin(path, timeout=2) as admin:
        return admin.get("/config/admin") is not None
