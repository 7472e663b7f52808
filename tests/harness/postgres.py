"""A throw-away PostgreSQL cluster on 127.0.0.1, from Debian's postgresql packages.

initdb and postgres refuse to run as root, so as root they run as the ``postgres`` user
(created by the package) through ``runuser``; the cluster lives in a directory that user
owns. fsync is off: the data is thrown away at the end of the session.
"""

from __future__ import annotations

import getpass
import glob
import os
import shutil
import signal
import uuid
from pathlib import Path

import psycopg

from tests.harness.ports import free_port
from tests.harness.process import Daemon, run


def _bindir() -> Path:
    """The newest installed server's bin directory (Debian keeps them per major version)."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    if candidates:
        return Path(candidates[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("no PostgreSQL server: run scripts/install-test-deps.sh")
    return Path(initdb).resolve().parent


class PostgresServer:
    """``args`` (``-c name=value`` ...) come after the defaults; files they name (a key,
    an hba file) are put where the server can read them with :meth:`conf_file`."""

    def __init__(self, root: Path, log_dir: Path) -> None:
        self.root = root
        self.log_dir = log_dir
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else getpass.getuser()
        self.args: list[str] = []
        self._bin = _bindir()

    def conf_file(self, source: Path) -> Path:
        """A copy of ``source`` under the root, the server's user's, mode 0600 (what
        PostgreSQL asks of a key file); before :meth:`start`."""
        conf = self.root / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        copy = conf / source.name
        shutil.copyfile(source, copy)
        copy.chmod(0o600)
        if os.geteuid() == 0:
            shutil.chown(conf, "postgres", "postgres")
            shutil.chown(copy, "postgres", "postgres")
        return copy

    def _as_owner(self, argv: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *argv]
        return argv

    def start(self) -> None:
        data = self.root / "data"
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        run(
            self._as_owner(
                [
                    str(self._bin / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    self.user,
                    "-A",
                    "trust",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale",
                    "C",
                ]
            ),
            timeout=120,
        )
        argv = self._as_owner(
            [
                str(self._bin / "postgres"),
                "-D",
                str(data),
                "-p",
                str(self.port),
                "-k",
                str(self.root),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
                *self.args,
            ]
        )
        # SIGINT is PostgreSQL's "fast" shutdown: it does not wait for clients to leave.
        self.daemon = Daemon(
            "postgres", argv, self.log_dir / "postgres.log", stop_signal=signal.SIGINT
        )
        self.daemon.start()
        self.daemon.wait_until(self._answers, "postgres connection", timeout=60)

    def _dsn(self, dbname: str) -> str:
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname={dbname}"

    def _answers(self) -> bool:
        with psycopg.connect(self._dsn("postgres"), connect_timeout=2) as conn:
            return conn.execute("select 1").fetchone() == (1,)

    def create_database(self, name: str | None = None) -> str:
        """A new, empty database; returns its SQLAlchemy URL (psycopg 3 driver)."""
        name = name or f"rollhook_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self._dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'create database "{name}"')
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if getattr(self, "daemon", None) is not None:
            self.daemon.stop(timeout=30)
