"""The test harness itself: each piece does what the integration tests rely on."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import httpx
import psycopg
import pytest
import redis
import sqlalchemy

from tests.harness import Listener, Received, compose_file, free_port, infra_files
from tests.harness.debian import configured_mirror
from tests.harness.engine import PrivateEngine
from tests.harness.gitserver import GitServer, git_env
from tests.harness.postgres import PostgresServer
from tests.harness.reaper import reap_stale
from tests.harness.redis import RedisServer
from tests.harness.registry import Registry
from tests.harness.standin import StandInImages

# Generous: these waits absorb a slow machine; nothing here measures speed.
WAIT = 60.0


def wait_until(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:.0f}s")
        time.sleep(0.1)


def get(port: int, path: str) -> httpx.Response | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2)
    except httpx.TransportError:
        return None


def answers_200(port: int, path: str = "/api/ping") -> bool:
    response = get(port, path)
    return response is not None and response.status_code == 200


def app_version(port: int) -> str | None:
    response = get(port, "/api/utils/metrics")
    return response.json()["appVersion"] if response and response.status_code == 200 else None


def sig_keys(env_file: Path) -> list[str]:
    return [line for line in env_file.read_text().splitlines() if line.startswith("SIG_KEY=")]


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = [free_port() for _ in range(20)]
    assert len(set(ports)) == 20
    for port in ports[:5]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_reaper_ends_what_a_dead_run_left_and_spares_live_runs(tmp_path: Path) -> None:
    dead = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True, check=True)
    stale, live = tmp_path / "rh-stale", tmp_path / "rh-live"
    for root, owner in ((stale, dead.stdout.strip()), (live, str(os.getpid()))):
        (root / "redis").mkdir(parents=True)
        (root / "owner.pid").write_text(owner)
    # A daemon of the dead run, found by its working directory (as redis-server is).
    leftover = subprocess.Popen(["sleep", "300"], cwd=stale / "redis")
    try:
        assert reap_stale(tmp_path) == [stale]
        assert leftover.wait(timeout=20) != 0
    finally:
        leftover.kill()
        leftover.wait()
    assert not stale.exists()
    assert live.exists()


# --- Redis ---------------------------------------------------------------------------------


def test_redis_stops_and_comes_back_on_the_same_url(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.set("harness", "1")
        assert client.get("harness") == b"1"
        with redis_server.stopped(), pytest.raises(redis.ConnectionError):
            client.ping()
        assert client.ping()
        # No persistence: a restarted broker has lost what it held.
        assert client.get("harness") is None
    finally:
        client.close()


# --- PostgreSQL ----------------------------------------------------------------------------


def test_postgres_answers_and_gives_fresh_databases(
    postgres_url: str, postgres_server: PostgresServer
) -> None:
    assert postgres_url.startswith("postgresql+psycopg://")
    shared = sqlalchemy.create_engine(postgres_url)
    try:
        with shared.connect() as conn:
            assert conn.execute(sqlalchemy.text("select 41 + 1")).scalar() == 42
    finally:
        shared.dispose()

    own = postgres_server.create_database()
    assert own != postgres_url
    dsn = own.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        tables = "select count(*) from pg_tables where schemaname = 'public'"
        assert conn.execute(tables).fetchone() == (0,)
        conn.execute("create table t (x int)")
        conn.execute("insert into t values (1)")
        conn.commit()
        assert conn.execute(tables).fetchone() == (1,)


# --- git over HTTP -------------------------------------------------------------------------


def clone(url: str, dest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "clone", "-q", url, str(dest)],
        capture_output=True,
        text=True,
        env=git_env(),
        timeout=60,
        check=False,
    )


def test_git_clone_over_http(git_server: GitServer, tmp_path: Path) -> None:
    repo = git_server.create_repo("public-infra")
    first = repo.commit({"a.txt": "one\n", "dir/b.txt": "two\n"}, "first")
    second = repo.commit({"a.txt": None, "dir/b.txt": "three\n"}, "second", author="Ann <a@x.test>")
    assert repo.head() == second != first
    assert repo.url == f"{git_server.base_url}/public-infra.git"
    assert git_server.create_repo("public-infra").url.endswith("/public-infra-2.git")

    result = clone(repo.url, tmp_path / "c")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "c" / "a.txt").exists()
    assert (tmp_path / "c" / "dir" / "b.txt").read_text() == "three\n"
    log = subprocess.run(
        ["git", "-C", str(tmp_path / "c"), "log", "--format=%H %an %s"],
        capture_output=True,
        text=True,
        check=True,
        env=git_env(),
    ).stdout.splitlines()
    assert log == [f"{second} Ann second", f"{first} Test first"]


def test_git_token_is_required_when_set(git_server: GitServer, tmp_path: Path) -> None:
    repo = git_server.create_repo("private-infra", token="s3cret-token")
    sha = repo.commit({"f": "x"}, "private")

    anonymous = clone(repo.url, tmp_path / "anon")
    assert anonymous.returncode != 0
    wrong = clone(repo.url.replace("http://", "http://git:wrong@"), tmp_path / "wrong")
    assert wrong.returncode != 0
    authed = clone(repo.authed_url, tmp_path / "ok")
    assert authed.returncode == 0, authed.stderr
    head = subprocess.run(
        ["git", "-C", str(tmp_path / "ok"), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert head == sha
    assert any(r.status == 401 for r in git_server.requests if "private-infra" in r.path)
    assert any(r.user == "git" for r in git_server.requests if "private-infra" in r.path)


def test_git_force_push_rewrites_history(git_server: GitServer, tmp_path: Path) -> None:
    repo = git_server.create_repo("rewritten")
    base = repo.commit({"f": "1"}, "base")
    dropped = repo.commit({"f": "2"}, "dropped")
    repo.force_push_reset(base)
    assert repo.head() == base
    replacement = repo.commit({"f": "3"}, "replacement")
    assert clone(repo.url, tmp_path / "c").returncode == 0
    ancestry = subprocess.run(
        ["git", "-C", str(tmp_path / "c"), "rev-list", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert ancestry == [replacement, base]
    assert dropped not in ancestry

    # A push over HTTP by someone else (here: git itself) is followed by the next commit.
    work = tmp_path / "c"
    (work / "g").write_text("pushed over http\n")
    git = ["git", "-C", str(work), "-c", "user.name=P", "-c", "user.email=p@x.test"]
    subprocess.run([*git, "add", "g"], check=True, env=git_env())
    subprocess.run([*git, "commit", "-q", "-m", "http push"], check=True, env=git_env())
    subprocess.run([*git, "push", "-q", "origin", "HEAD:main"], check=True, env=git_env())
    after = repo.commit({"h": "x"}, "after http push")
    assert clone(repo.url, tmp_path / "d").returncode == 0
    assert (tmp_path / "d" / "g").read_text() == "pushed over http\n"
    assert repo.head() == after


# --- the private engine, the registry, the stand-in -----------------------------------------


def run_standin(
    client: docker.DockerClient,
    image: str,
    data: Path,
    port: int,
    **environment: str,
) -> docker.models.containers.Container:
    """The stand-in as compose would run it: host network, storage and .env bind-mounted."""
    (data / "storage").mkdir(parents=True, exist_ok=True)
    (data / ".env").touch()  # a missing file would be bind-mounted as a new directory
    return client.containers.run(
        image,
        detach=True,
        network_mode="host",
        environment={"SERVER_PORT": str(port), "STORAGE_DIR": "/app/server/storage", **environment},
        volumes={
            str(data / "storage"): {"bind": "/app/server/storage", "mode": "rw"},
            str(data / ".env"): {"bind": "/app/server/.env", "mode": "rw"},
        },
    )


@pytest.fixture
def containers(
    docker_client: docker.DockerClient,
) -> Iterator[list[docker.models.containers.Container]]:
    """Containers a test started; removed afterwards whatever happened."""
    started: list[docker.models.containers.Container] = []
    yield started
    for container in started:
        container.remove(force=True)


def exited(container: docker.models.containers.Container) -> bool:
    container.reload()
    return container.status == "exited"


@pytest.mark.engine
def test_engine_is_private_with_no_bridge(
    docker_engine: PrivateEngine, docker_client: docker.DockerClient
) -> None:
    assert docker_engine.host.startswith("unix:///tmp/rh-")
    assert len(docker_engine.host) < 100
    info = docker_client.info()
    assert info["DockerRootDir"].startswith(str(docker_engine.root))
    # No bridge network: containers can only use the host's (or none).
    assert "bridge" not in {n.name for n in docker_client.networks.list()}


@pytest.mark.engine
def test_good_standin_serves_migrates_and_keeps_its_key(
    docker_client: docker.DockerClient, standin: StandInImages, containers: list, tmp_path: Path
) -> None:
    port = free_port()
    app = run_standin(docker_client, standin.ref("1.0.0"), tmp_path, port)
    containers.append(app)
    wait_until(lambda: answers_200(port), "stand-in v1 answering /api/ping")
    assert get(port, "/api/ping").json() == {"online": True}
    assert app_version(port) == "1.0.0"
    storage = tmp_path / "storage"
    assert (storage / "schema_version").read_text().strip() == "1"
    # The "database" keeps growing while the app runs: a backup faces a live file.
    size = (storage / "anythingllm.db").stat().st_size
    wait_until(lambda: (storage / "anythingllm.db").stat().st_size > size, "db writes")
    keys = sig_keys(tmp_path / ".env")
    assert len(keys) == 1
    assert len(keys[0]) > len("SIG_KEY=''") + 20

    # Stops on SIGTERM by itself: docker's SIGKILL after the timeout would show as 137.
    app.stop(timeout=20)
    assert app.wait(timeout=10)["StatusCode"] in (0, 143)

    # v2 over the same data: migrates forward, keeps the key.
    upgraded = run_standin(docker_client, standin.ref("2.0.0"), tmp_path, port)
    containers.append(upgraded)
    wait_until(lambda: app_version(port) == "2.0.0", "v2 serving")
    assert (storage / "schema_version").read_text().strip() == "2"
    assert sig_keys(tmp_path / ".env") == keys
    assert "migrated 1 -> 2 by 2.0.0" in (storage / "anythingllm.db").read_text()


@pytest.mark.engine
def test_standin_adds_its_key_beside_existing_settings(
    docker_client: docker.DockerClient, standin: StandInImages, containers: list, tmp_path: Path
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("JWT_SECRET='kept-as-is'")  # no trailing newline, as editors leave it
    port = free_port()
    containers.append(run_standin(docker_client, standin.ref("1.0.0"), tmp_path, port))
    wait_until(lambda: answers_200(port), "v1 serving")
    lines = env_file.read_text().splitlines()
    assert lines[0] == "JWT_SECRET='kept-as-is'"
    assert len(lines) == 2
    assert lines[1].startswith("SIG_KEY='")


@pytest.mark.engine
def test_standin_refuses_storage_a_newer_version_migrated(
    docker_client: docker.DockerClient, standin: StandInImages, containers: list, tmp_path: Path
) -> None:
    port = free_port()
    newer = run_standin(docker_client, standin.ref("2.0.0"), tmp_path, port)
    containers.append(newer)
    wait_until(lambda: answers_200(port), "v2 serving")
    newer.stop(timeout=20)

    older = run_standin(docker_client, standin.ref("1.0.0"), tmp_path, port)
    containers.append(older)
    assert older.wait(timeout=WAIT)["StatusCode"] != 0
    assert b"storage was migrated by a newer version" in older.logs()
    assert (tmp_path / "storage" / "schema_version").read_text().strip() == "2"
    assert not answers_200(port)


@pytest.mark.engine
def test_crash_variant_migrates_then_exits(
    docker_client: docker.DockerClient, standin: StandInImages, containers: list, tmp_path: Path
) -> None:
    port = free_port()
    app = run_standin(docker_client, standin.ref("3.0.0-crash"), tmp_path, port)
    containers.append(app)
    assert app.wait(timeout=WAIT)["StatusCode"] != 0
    assert (tmp_path / "storage" / "schema_version").read_text().strip() == "3"
    assert not answers_200(port)


@pytest.mark.engine
def test_never_healthy_variant_migrates_and_never_answers_200(
    docker_client: docker.DockerClient, standin: StandInImages, containers: list, tmp_path: Path
) -> None:
    port = free_port()
    app = run_standin(docker_client, standin.ref("3.0.0-never-healthy"), tmp_path, port)
    containers.append(app)
    # It is up (metrics answer) yet the probe never succeeds.
    wait_until(lambda: app_version(port) is not None, "never-healthy serving metrics")
    assert app_version(port) == "3.0.0-never-healthy"
    for _ in range(10):
        response = get(port, "/api/ping")
        assert response is not None and response.status_code != 200
        time.sleep(0.1)
    assert not exited(app)
    assert (tmp_path / "storage" / "schema_version").read_text().strip() == "3"


@pytest.mark.engine
def test_slow_variant_has_its_boot_delay_baked_in_and_overridable(
    docker_client: docker.DockerClient, standin: StandInImages, containers: list, tmp_path: Path
) -> None:
    env = docker_client.images.get(standin.ref("2.0.0-slow")).attrs["Config"]["Env"]
    assert "BOOT_DELAY=3.0" in env
    port = free_port()
    app = run_standin(docker_client, standin.ref("2.0.0-slow"), tmp_path, port, BOOT_DELAY="0")
    containers.append(app)
    wait_until(lambda: answers_200(port), "slow variant with BOOT_DELAY=0 serving")


@pytest.mark.engine
def test_push_and_pull_back_by_digest(
    docker_client: docker.DockerClient, standin: StandInImages, registry: Registry
) -> None:
    digests = {standin.digests[standin.ref(tag)] for tag in ("1.0.0", "2.0.0", "2.0.0-slow")}
    assert len(digests) == 3  # every build has its own digest
    ref = standin.build("9.9.9", 9, repository="acme/pulled")
    digest = standin.digests[ref]
    assert registry.manifest_digest("acme/pulled", "9.9.9") == digest
    assert "9.9.9" in registry.tags("acme/pulled")

    docker_client.images.remove(ref, force=True)
    pulled = docker_client.images.pull(f"{registry.host}/acme/pulled@{digest}")
    assert f"{registry.host}/acme/pulled@{digest}" in pulled.attrs["RepoDigests"]


@pytest.mark.engine
def test_notifying_registry_posts_real_push_events(
    standin: StandInImages, registry: Registry
) -> None:
    token = "registry-token-123"
    with Listener() as listener, registry.notifying(listener.url + "hooks/registry", token) as host:
        standin.build("4.0.0", 4)  # to the plain registry: no event
        ref = standin.build("4.0.1", 4, registry_host=host)
        assert ref == f"{host}/acme/anythingllm:4.0.1"
        # Shared storage: what was pushed through one instance is served by the other.
        assert registry.manifest_digest("acme/anythingllm", "4.0.1") == standin.digests[ref]

        def manifest_push(request: Received) -> bool:
            body = json.loads(request.body)
            return any(
                e["action"] == "push" and e["target"].get("tag") == "4.0.1" for e in body["events"]
            )

        received = listener.wait_for(manifest_push, timeout=WAIT)
    assert received.path == "/hooks/registry"
    assert received.headers["Authorization"] == f"Bearer {token}"
    assert received.headers["Content-Type"].startswith("application/vnd.docker.distribution.events")
    event = next(
        e for e in json.loads(received.body)["events"] if e["target"].get("tag") == "4.0.1"
    )
    assert event["target"]["repository"] == "acme/anythingllm"
    assert event["target"]["digest"] == standin.digests[ref]
    # Only the notifying instance notifies (the push of 4.0.0 went unnoticed), and the
    # registry's own blob checks during the push (HEAD: "pull" events) are filtered out.
    events = [e for r in listener.received for e in json.loads(r.body)["events"]]
    assert {e["request"]["host"] for e in events} == {host}
    assert {e["action"] for e in events} == {"push"}
    assert all(e["target"].get("tag") != "4.0.0" for e in events)


@pytest.mark.engine
def test_compose_up_wait_and_down_on_the_standin(
    docker_engine: PrivateEngine, standin: StandInImages, compose_bin: Path, tmp_path: Path
) -> None:
    port = free_port()
    project_dir = tmp_path / "work"
    project_dir.mkdir()
    (project_dir / ".env").touch()  # anything-llm's runtime .env: a file, not a directory
    release = tmp_path / "release"
    release.mkdir()
    (release / "docker-compose.yml").write_text(
        compose_file(standin.ref("1.0.0"), healthcheck=True)
    )
    (release / ".env").write_text(f"SERVER_PORT={port}\n")
    base = [
        str(compose_bin),
        "-p",
        "harness",
        "--project-directory",
        str(project_dir),
        "-f",
        str(release / "docker-compose.yml"),
        "--env-file",
        str(release / ".env"),
    ]
    env = docker_engine.env()

    up = subprocess.run(
        [*base, "up", "-d", "--wait"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    try:
        assert up.returncode == 0, up.stderr
        assert answers_200(port)
        assert (project_dir / "storage" / "schema_version").read_text().strip() == "1"
        assert "SIG_KEY=" in (project_dir / ".env").read_text()
    finally:
        down = subprocess.run(
            [*base, "down"], env=env, capture_output=True, text=True, timeout=120, check=False
        )
    assert down.returncode == 0, down.stderr
    assert not answers_200(port)
    # The bundled binary's exit code is real: a bad file fails.
    bad = subprocess.run(
        [*base[:-4], "-f", str(tmp_path / "missing.yml"), "config"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode != 0


def test_compose_file_is_a_host_network_standin_service() -> None:
    text = compose_file("127.0.0.1:5000/acme/anythingllm:1.0.0")
    assert "network_mode: host" in text
    assert "./storage:/app/server/storage" in text
    assert "./.env:/app/server/.env" in text
    files = infra_files("img:1", 3001)
    assert files["environments/prod/anything-llm/.env"] == "SERVER_PORT=3001\n"
    assert os.path.basename(next(iter(files))) == "docker-compose.yml"


def test_the_debian_mirror_is_the_one_apt_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image test's base comes from this machine's mirror: the first enabled ``deb``
    entry for bookworm, deb822 or one-line; security and disabled entries are not it."""
    monkeypatch.delenv("ROLLHOOK_DEBIAN_MIRROR", raising=False)
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    assert configured_mirror(etc) == "http://deb.debian.org/debian"  # nothing configured
    (etc / "sources.list.d" / "a-security.sources").write_text(
        "Types: deb\nURIs: http://security.example.test/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n"
    )
    (etc / "sources.list.d" / "b-off.sources").write_text(
        "Types: deb\nURIs: http://off.example.test/debian\nSuites: bookworm\nEnabled: no\n"
    )
    (etc / "sources.list.d" / "c.list.disabled").write_text(
        "deb http://disabled.example.test/debian bookworm main\n"
    )
    (etc / "sources.list.d" / "d-mirror.sources").write_text(
        "Types: deb deb-src\n# a comment\nURIs: http://mirror.example.test/debian/\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
    )
    assert configured_mirror(etc) == "http://mirror.example.test/debian"
    (etc / "sources.list").write_text(
        "# deb http://commented.example.test/debian bookworm main\n"
        "deb [arch=amd64] http://one-line.example.test/debian bookworm main contrib\n"
    )
    assert configured_mirror(etc) == "http://one-line.example.test/debian"
    monkeypatch.setenv("ROLLHOOK_DEBIAN_MIRROR", "http://chosen.example.test/debian")
    assert configured_mirror(etc) == "http://chosen.example.test/debian"
