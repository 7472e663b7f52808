"""A throw-away Redis on 127.0.0.1 (no persistence) that tests can stop and start again."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import redis

from tests.harness.ports import free_port, port_open
from tests.harness.process import Daemon


class RedisServer:
    """``url`` stays the same across ``stop()``/``start()``: the port is kept.

    ``args`` come last, over the defaults (a compose file's: TLS only on ``port``, say);
    ``url`` is then how a client reaches it.
    """

    def __init__(
        self,
        root: Path,
        log_dir: Path,
        *,
        port: int | None = None,
        args: Sequence[str] = (),
        url: str | None = None,
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is missing: run scripts/install-test-deps.sh")
        self.port = port or free_port()
        self.url = url or f"redis://127.0.0.1:{self.port}/0"
        root.mkdir(parents=True, exist_ok=True)
        argv = [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(root)]
        # No RDB snapshots and no AOF: a restart starts empty, like a broker that lost state.
        argv += ["--save", "", "--appendonly", "no", "--daemonize", "no", *args]
        self.daemon = Daemon(f"redis-{self.port}", argv, log_dir / f"redis-{self.port}.log")

    def start(self) -> None:
        self.daemon.start()
        self.daemon.wait_until(self.ping, "redis PING", timeout=30)

    def stop(self) -> None:
        self.daemon.stop()
        if port_open(self.port):
            raise RuntimeError(f"redis on port {self.port} still answers after stop")

    def ping(self) -> bool:
        with redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1) as r:
            return bool(r.ping())

    def flushall(self) -> None:
        with redis.Redis.from_url(self.url, socket_timeout=5) as r:
            r.flushall()

    @contextmanager
    def stopped(self) -> Iterator[None]:
        """Redis is down inside the block and up again (empty, same port) after it."""
        self.stop()
        try:
            yield
        finally:
            self.start()
