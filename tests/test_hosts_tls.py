"""The README's "Several hosts" URLs, exactly as operators write them (host ``localhost``),
against Redis and PostgreSQL started with deploy/hosts/central.compose.yml's own TLS
arguments and a throw-away CA whose server certificate names localhost and 127.0.0.1.

Web, beat and ``rollhook worker --host b`` run on them: b's heartbeat reaches the records
and ``rollhook hosts``, a task sent to b's queue over rediss:// runs on b's worker, a
webhook's job crosses from web to it. The servers really check: Redis has no plain port,
PostgreSQL refuses a connection without TLS (its hba file here), and the same URLs
naming another CA fail on the certificate. The compose file passes ``docker compose
config`` and the worker's unit ``systemd-analyze verify``; neither is run (no images,
no systemd here).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import select
from sqlalchemy.exc import OperationalError as DatabaseError

from rollhook.broker import INSPECT_TARGET, make_celery, send_to_host
from rollhook.records.db import make_engine
from rollhook.records.schema import TERMINAL_STATUSES, hosts
from rollhook.settings import load_settings
from tests.harness.engine import compose_binary
from tests.harness.ports import free_port
from tests.harness.postgres import PostgresServer
from tests.harness.redis import RedisServer
from tests.stack import Stack, running_stack
from tests.test_end_to_end import queued_id

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
COMPOSE = ROOT / "deploy" / "hosts" / "central.compose.yml"
UNIT = ROOT / "deploy" / "hosts" / "rollhook-worker.service"
CENTRAL = "central.example.lan"  # the README's and compose file's name for the central host
TLS_DIR = "/etc/rollhook/tls/"  # where the README's URLs find ca.pem
PASSWORD = "rollhook-password-for-tests"

# Redis, PostgreSQL and the processes with TLS: about 25 s, left out of `make test-unit`.
pytestmark = pytest.mark.slow


def readme_url(name: str) -> str:
    """The README's ``NAME='...'`` line under "Several hosts"."""
    found = re.findall(rf"^{name}='([^']+)'$", README.read_text(), re.MULTILINE)
    assert len(found) == 1, f"README.md: one {name}='...' line expected, found {found}"
    return found[0]


def replace_once(text: str, old: str, new: str) -> str:
    """``text`` with ``old`` (there exactly once, or the README changed form) as ``new``."""
    assert text.count(old) == 1, f"{old!r} expected once in {text!r}"
    return text.replace(old, new)


def compose_args(service: str, tls: Path) -> list[str]:
    """A service's command in the compose file, split as compose splits it, its /tls/
    files (the mounted /etc/rollhook/tls) in ``tls``."""
    command: str = yaml.safe_load(COMPOSE.read_text())["services"][service]["command"]
    return [arg.replace("/tls/", f"{tls}/") for arg in shlex.split(command)]


# -- a throw-away CA -------------------------------------------------------------------


def openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def make_ca(directory: Path) -> Path:
    """``directory``/ca.pem and ca.key: a CA of its own (EC keys: quick to make)."""
    directory.mkdir(parents=True, exist_ok=True)
    key, ca = directory / "ca.key", directory / "ca.pem"
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
    key.chmod(0o600)
    openssl(
        *("req", "-x509", "-new", "-key", key, "-days", "2", "-out", ca),
        *("-subj", f"/CN=rollhook test CA {directory.name}"),
        *("-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
    )  # fmt: skip
    return ca


def make_server_certificate(directory: Path) -> None:
    """``directory``/server.pem and server.key (0600) for localhost, signed by its ca.pem."""
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    extensions = directory / "server.ext"
    extensions.write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
    key.chmod(0o600)
    openssl("req", "-new", "-key", key, "-subj", "/CN=localhost", "-out", csr)
    openssl(
        *("x509", "-req", "-in", csr, "-days", "2", "-out", cert, "-extfile", extensions),
        *("-CA", directory / "ca.pem", "-CAkey", directory / "ca.key", "-CAcreateserial"),
    )  # fmt: skip


# -- the central part, as the compose file starts it ------------------------------------


@dataclass(frozen=True)
class Central:
    tls: Path  # ca.pem, server.pem, server.key
    other_ca: Path  # a CA that signed nothing of these servers
    redis_url: str  # the README's URLs for localhost
    database_url: str

    def naming(self, ca: Path) -> tuple[str, str]:
        """Both URLs with ``ca`` for the CA to check the servers against."""
        mine = str(self.tls / "ca.pem")
        return self.redis_url.replace(mine, str(ca)), self.database_url.replace(mine, str(ca))


@pytest.fixture(scope="module")
def central(
    tmp_path_factory: pytest.TempPathFactory, harness_root: Path, harness_logs: Path
) -> Iterator[Central]:
    tls = tmp_path_factory.mktemp("tls")
    make_ca(tls)
    make_server_certificate(tls)
    other_ca = make_ca(tmp_path_factory.mktemp("other-ca"))

    port = free_port()
    redis_args = compose_args("redis", tls)
    assert redis_args[0] == "redis-server", redis_args
    at = redis_args.index("--tls-port") + 1
    # The README's port is the compose file's TLS port; here a free one on loopback.
    redis_url = readme_url("ROLLHOOK_REDIS_URL")
    redis_url = replace_once(redis_url, f"{CENTRAL}:{redis_args[at]}/", f"localhost:{port}/")
    redis_url = replace_once(redis_url, TLS_DIR, f"{tls}/")
    redis_args[at] = str(port)
    redis = RedisServer(
        harness_root / "redis-tls", harness_logs, port=port, args=redis_args[1:], url=redis_url
    )

    postgres = PostgresServer(harness_root / "postgres-tls", harness_logs)
    conf = {name: postgres.conf_file(tls / name) for name in ("server.pem", "server.key")}
    # Every TCP connection needs TLS (no plain `host` line): the harness's own as its
    # user, rollhook's with the password the URL carries.
    hba = tls / "pg_hba.conf"
    hba.write_text(
        "local all all trust\n"
        f"hostssl all {postgres.user} 127.0.0.1/32 trust\n"
        "hostssl rollhook rollhook 127.0.0.1/32 scram-sha-256\n"
    )
    postgres.args += [
        *compose_args("postgres", conf["server.pem"].parent),
        *("-c", f"hba_file={postgres.conf_file(hba)}"),
    ]
    database_url = readme_url("ROLLHOOK_DATABASE_URL")
    database_url = replace_once(database_url, "rollhook:...@", f"rollhook:{PASSWORD}@")
    database_url = replace_once(database_url, f"@{CENTRAL}/", f"@localhost:{postgres.port}/")
    database_url = replace_once(database_url, TLS_DIR, f"{tls}/")
    try:
        redis.start()
        postgres.start()
        with psycopg.connect(
            f"host=127.0.0.1 port={postgres.port} user={postgres.user} dbname=postgres",
            autocommit=True,
        ) as conn:
            conn.execute(f"create role rollhook login password '{PASSWORD}'")
            conn.execute("create database rollhook owner rollhook")
        yield Central(tls, other_ca, redis_url, database_url)
    finally:
        postgres.stop()
        redis.stop()


# -- a host's worker on them -----------------------------------------------------------


def _target(host: str) -> dict[str, Any]:
    # Webhooks only (no poll); no such repository: a deployment of it fails at once.
    return {
        "repo": f"file:///nonexistent/infra-{host}.git",
        "project": f"on-{host}",
        "service": "app",
        "host": host,
        "sync": {"interval": 0},
    }


def _push(repo: str) -> dict[str, Any]:
    sha = uuid.uuid4().hex + "0" * 8
    return {
        "ref": "refs/heads/main",
        "before": "0" * 40,
        "after": sha,
        "commits": [{"id": sha, "message": "deploy", "modified": ["docker-compose.yml"]}],
        "repository": {"full_name": "acme/infra", "clone_url": repo},
        "pusher": {"name": "dev"},
    }


def _cli_hosts(stack: Stack) -> dict[str, Any]:
    answer = subprocess.run(
        [sys.executable, "-m", "cli.main", "hosts", "--json"],
        env={**stack.env, "ROLLHOOK_URL": stack.url},
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert answer.returncode == 0, answer.stdout + answer.stderr
    return {h["name"]: h for h in json.loads(answer.stdout)["hosts"]}


def test_a_worker_of_host_b_beats_and_runs_its_tasks_over_tls(
    central: Central, tmp_path: Path
) -> None:
    config = yaml.safe_dump({"targets": {"web": _target("a"), "db": _target("b")}})
    env = {
        "ROLLHOOK_REDIS_URL": central.redis_url,
        "ROLLHOOK_DATABASE_URL": central.database_url,
        "ROLLHOOK_NOTIFY_CONSOLE": "true",
        "DOCKER_HOST": "unix:///nonexistent/docker.sock",  # nothing here needs an engine
    }
    with running_stack(tmp_path, config, env, processes=("web", "beat")) as stack:
        stack.start("worker", "--host", "b", as_name="worker-b")

        # 1. b's heartbeat reaches PostgreSQL (TLS only, see the hba file): the API and
        # `rollhook hosts` show b up with its worker; a was never seen.
        def b_up() -> bool:
            return any(
                h["name"] == "b" and h["state"] == "up"
                for h in stack.api.get("/hosts").json()["hosts"]
            )

        stack.wait_for(b_up, 45, "host b up")
        seen = _cli_hosts(stack)
        assert seen["b"]["state"] == "up", seen
        assert seen["a"]["state"] == "down" and seen["a"]["last_seen"] is None, seen
        assert len(seen["b"]["workers"]) == 1, seen

        # 2. A task sent over rediss:// from here, as the settings build the broker, runs
        # on b's worker.
        settings = load_settings(redis_url=central.redis_url)
        celery = make_celery(settings.broker_url())
        task_id = str(uuid.uuid4())
        try:
            send_to_host(celery, INSPECT_TARGET, "b", ["db"], task_id=task_id)
        finally:
            celery.close()
        done = f"Task {INSPECT_TARGET}[{task_id}] succeeded"
        stack.wait_for(lambda: done in stack.log("worker-b"), 30, "the task run on b")

        # 3. Beat's ticks (over rediss://) ran on b's worker: it recorded b's state.
        records = make_engine(central.database_url)
        try:

            def told() -> str | None:
                with records.connect() as conn:
                    return conn.execute(
                        select(hosts.c.state).where(hosts.c.name == "b")
                    ).scalar_one_or_none()

            assert stack.wait_for(told, 30, "beat's look at the hosts") == "up"
        finally:
            records.dispose()

        # 4. A webhook's job crosses from web to b's worker, which runs the deployment
        # (it fails at once: the repository does not exist).
        event = queued_id(stack.github_push(_push(_target("b")["repo"]), "tls-1"))
        [deployment] = stack.wait_final(event, timeout=60)
        assert deployment["target"] == "db" and deployment["status"] in TERMINAL_STATUSES
        assert f"target=db deployment={deployment['id']}" in stack.log("worker-b")


# -- the servers check ------------------------------------------------------------------


def _broker_fails(url: str) -> str:
    celery = make_celery(load_settings(redis_url=url).broker_url())
    try:
        with celery.connection_for_write() as conn, pytest.raises(BrokerError) as failed:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=10)
    finally:
        celery.close()
    return str(failed.value)


def _records_fail(url: str) -> str:
    records = make_engine(load_settings(database_url=url).records_url())
    try:
        with pytest.raises(DatabaseError) as failed, closing(records.connect()):
            pass
    finally:
        records.dispose()
    return str(failed.value)


def test_the_servers_refuse_plain_connections_and_other_cas(central: Central) -> None:
    # The README's URLs connect (the control for what follows).
    celery = make_celery(load_settings(redis_url=central.redis_url).broker_url())
    try:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=10)
    finally:
        celery.close()
    records = make_engine(load_settings(database_url=central.database_url).records_url())
    try:
        with records.connect() as conn:
            assert conn.exec_driver_sql(
                "select ssl from pg_stat_ssl where pid = pg_backend_pid()"
            ).scalar()
    finally:
        records.dispose()

    # Without TLS: Redis's only port speaks TLS, PostgreSQL has no entry for it.
    plain_redis = central.redis_url.replace("rediss://", "redis://").split("?")[0]
    # The server ends a connection that does not start with a TLS handshake.
    refused = _broker_fails(plain_redis)
    assert "reset by peer" in refused or "closed by server" in refused, refused
    plain_db = central.database_url.replace("sslmode=verify-full", "sslmode=disable")
    assert "no encryption" in _records_fail(plain_db)

    # Another CA: the certificate check fails, for both.
    redis_url, database_url = central.naming(central.other_ca)
    assert "certificate verify failed" in _broker_fails(redis_url)
    assert "certificate verify failed" in _records_fail(database_url)


# -- the deploy files ----------------------------------------------------------------


def test_the_compose_file_passes_compose_config(tmp_path: Path) -> None:
    answer = subprocess.run(
        [str(compose_binary()), "-f", str(COMPOSE), "config", "--format", "json"],
        # No engine is needed; a nonexistent one makes sure none is touched.
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "DOCKER_HOST": "unix:///nonexistent/docker.sock",
        },
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert answer.returncode == 0, answer.stderr
    services = json.loads(answer.stdout)["services"]
    # web and beat carry the README's Redis URL, the one the tests above use.
    for name in ("web", "beat"):
        assert services[name]["environment"]["ROLLHOOK_REDIS_URL"] == readme_url(
            "ROLLHOOK_REDIS_URL"
        )
    # Compose reads the servers' commands as the tests above split them.
    assert services["redis"]["command"] == compose_args("redis", Path("/tls"))
    assert services["postgres"]["command"] == compose_args("postgres", Path("/tls"))


def test_the_worker_unit_passes_systemd_analyze() -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: run scripts/install-test-deps.sh"
    [exec_start] = re.findall(r"^ExecStart=(\S+)", UNIT.read_text(), re.MULTILINE)
    answer = subprocess.run(
        [analyze, "verify", str(UNIT)], capture_output=True, text=True, check=False, timeout=60
    )
    # The one complaint allowed: rollhook is not installed where the unit expects it.
    missing = f"Command {exec_start} is not executable"
    lines = (answer.stdout + answer.stderr).splitlines()
    assert [line for line in lines if line.strip() and missing not in line] == [], lines
    assert answer.returncode == 0 or any(missing in line for line in lines)
