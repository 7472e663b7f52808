"""Off-host snapshots against Debian's restic, in a local repository and over SFTP.

The SFTP repository is served by the harness's own sshd on 127.0.0.1 (key auth); the
data is shaped like anything-llm's storage, with an app process writing its SQLite
database while the stage is built.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.harness.ports import free_port
from tests.harness.sshd import SftpServer
from tests.workers.sqlite_app import Writer, check_copy, make_database
from workers import procs
from workers.backup import Source
from workers.backup.contents import place, target_tags
from workers.backup.remote import (
    Forgotten,
    RemoteConfig,
    Repository,
    RepositoryLocked,
    RepositoryMissing,
    RepositoryUnreachable,
    Retention,
    WrongPassword,
)
from workers.backup.staging import Stage
from workers.errors import InfrastructureError, OperatorError, StepTimeout

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="owners can only be set by root"),
    pytest.mark.skipif(shutil.which("restic") is None, reason="restic is not installed"),
]

PASSWORD = "correct-horse-7d1f3a"
ENV_SECRET = "aws-secret-9b2e41c7"
SECRET = "SIG_KEY='remote-secret-5a8c0f'"
TARGET = "anythingllm"

Backend = Callable[..., RemoteConfig]


@pytest.fixture(params=["local", "sftp"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Makes the configuration of a repository (a fresh one per test) on this backend."""
    password = tmp_path / "password"
    password.write_text(f"{PASSWORD}\n")
    password.chmod(0o600)
    server: SftpServer | None = None
    if request.param == "sftp":
        server = request.getfixturevalue("sftp_server")

    def make(
        name: str = "repo", *, password_file: Path = password, port: int | None = None
    ) -> RemoteConfig:
        where = tmp_path / name
        if server is None:
            return RemoteConfig(str(where), password_file, cache_dir=tmp_path / "cache")
        return RemoteConfig(
            server.repository(where),
            password_file,
            options=server.options(port),
            cache_dir=tmp_path / "cache",
        )

    return make


def local(tmp_path: Path) -> RemoteConfig:
    password = tmp_path / "password"
    password.write_text(PASSWORD)
    return RemoteConfig(str(tmp_path / "repo"), password, cache_dir=tmp_path / "cache")


@pytest.fixture
def writers() -> Iterator[list[Writer]]:
    started: list[Writer] = []
    yield started
    for writer in started:
        writer.stop()


def make_storage(host: Path, *, model_bytes: int = 2_000_000) -> tuple[Path, Path]:
    """anything-llm's storage: its database, LanceDB tables, documents, models, the .env."""
    storage = host / "srv" / "anythingllm" / "storage"
    storage.mkdir(parents=True)
    make_database(storage / "anythingllm.db", "DELETE", filler_rows=50)
    os.chown(storage / "anythingllm.db", 1000, 1000)
    table = storage / "lancedb" / "workspace.lance"
    (table / "_versions").mkdir(parents=True)
    (table / "data").mkdir()
    (table / "_latest.manifest").write_bytes(os.urandom(700))
    (table / "_versions" / "1.manifest").write_bytes(os.urandom(700))
    for n in range(10):
        (table / "data" / f"{n:04x}.lance").write_bytes(os.urandom(100_000))
    docs = storage / "documents" / "custom-documents"
    docs.mkdir(parents=True)
    for n in range(20):
        (docs / f"doc-{n}.json").write_text(f'{{"pageContent": "document {n}"}}')
    (storage / "models" / "downloaded").mkdir(parents=True)
    (storage / "models" / "downloaded" / "model.gguf").write_bytes(os.urandom(model_bytes))
    (storage / "vector-cache").mkdir()
    (storage / "vector-cache" / "abc.json").write_bytes(os.urandom(5000))
    (storage / "escape").symlink_to("/etc")  # planted by the app: a link, never followed
    for path in [storage, *storage.rglob("*")]:
        if not path.is_symlink():
            os.chown(path, 1000, 1000)
    env = storage / ".env"
    env.write_text(f"{SECRET}\nJWT_SECRET='0123456789abcdef'\n")
    os.chown(env, 1000, 1000)
    env.chmod(0o600)
    return storage, env


def sources_of(storage: Path, env: Path) -> list[Source]:
    return [Source("volume:anythingllm_storage", storage), Source(f"bind:{env}", env)]


def describe(root: Path) -> dict[str, tuple[object, ...]]:
    """Type, mode, owner, mtime and content (or link target) of every entry below root."""
    found: dict[str, tuple[object, ...]] = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st = path.lstat()
        rel = str(path.relative_to(root))
        meta = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns)
        if stat.S_ISLNK(st.st_mode):
            found[rel] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            found[rel] = ("dir", *meta)
        else:
            found[rel] = ("file", *meta, path.read_bytes())
    return found


def test_a_snapshot_of_a_running_app_restores_equal_to_its_stage(
    backend: Backend, tmp_path: Path, writers: list[Writer]
) -> None:
    repo = Repository(backend())
    assert repo.init_if_missing() is True
    assert repo.init_if_missing() is False
    storage, env = make_storage(tmp_path / "host")
    writer = Writer(storage / "anythingllm.db", "DELETE", pause=0.001)
    writers.append(writer)
    writer.commits(at_least=20)
    before = datetime.now(UTC)
    with Stage(tmp_path / "stage").build(TARGET, sources_of(storage, env)) as staged:
        snap = repo.snapshot(
            staged.paths, cwd=staged.tree, tags=staged.contents.tags(), host="host-a"
        )
        expected = describe(staged.tree / str(storage).lstrip("/"))
        staged_bytes = sum(s.bytes for s in staged.contents.sources)
    after = datetime.now(UTC)
    assert writer.commits(at_least=1) > 20  # the app kept writing all along

    assert not snap.incomplete
    assert snap.target == TARGET
    assert set(snap.tags) >= {"rollhook", f"target={TARGET}", f"path={storage}", f"path={env}"}
    assert staged_bytes <= snap.size <= staged_bytes + 10_000  # plus the manifest
    assert snap.data_added > 2_000_000  # the first snapshot uploads it all
    assert before <= snap.time <= after

    listed = repo.snapshots(target_tags(TARGET))
    assert [(s.id, s.size, s.host) for s in listed] == [(snap.id, staged_bytes, "host-a")]
    assert repo.size(snap.id) == snap.size  # what a restore writes, measured by restic
    assert repo.snapshots(target_tags("other")) == []

    # A new host whose records are empty: the snapshot says what it holds and where.
    contents = repo.contents("latest")
    assert contents == staged.contents
    scratch = repo.restore(snap.id, tmp_path / "scratch")
    placements, unused = place(contents, sources_of(storage, env))
    assert unused == []
    restored = placements[0].origin(scratch)
    assert restored == scratch / str(storage).lstrip("/")
    assert describe(restored) == expected  # byte for byte, with owners, modes, mtimes
    assert check_copy(restored / "anythingllm.db") >= 20
    assert not (restored / "anythingllm.db-journal").exists()
    dotenv = placements[1].origin(scratch)
    assert dotenv is not None and dotenv.read_text().startswith(SECRET)
    assert os.readlink(restored / "escape") == "/etc"
    assert not any(p.name == "passwd" for p in scratch.rglob("*"))


def test_restore_into_a_directory_that_is_not_empty_is_refused(tmp_path: Path) -> None:
    repo = Repository(local(tmp_path))
    repo.init_if_missing()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f").write_text("x")
    snap = repo.snapshot(["data"], cwd=tmp_path, tags=target_tags("t"), host="h")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine").write_text("keep me")
    with pytest.raises(OperatorError, match="needs an empty directory"):
        repo.restore(snap.id, tmp_path / "busy")
    assert os.listdir(tmp_path / "busy") == ["mine"]
    only = repo.restore("latest", tmp_path / "one", tags=target_tags("t"), paths=["/data/f"])
    assert (only / "data" / "f").read_text() == "x"


def test_a_second_snapshot_of_data_one_percent_changed_adds_little(
    backend: Backend, tmp_path: Path
) -> None:
    repo = Repository(backend())
    repo.init_if_missing()
    storage, env = make_storage(tmp_path / "host", model_bytes=9_000_000)
    stage = Stage(tmp_path / "stage")

    def take() -> int:
        with stage.build(TARGET, sources_of(storage, env)) as staged:
            snap = repo.snapshot(
                staged.paths, cwd=staged.tree, tags=staged.contents.tags(), host="h"
            )
        assert snap.data_added is not None
        return snap.data_added

    first = take()
    total = sum(p.stat().st_size for p in storage.rglob("*") if p.is_file() and not p.is_symlink())
    assert total > 10_000_000
    assert first > 0.9 * total
    # 1%: one LanceDB data file rewritten, a document added.
    lance = storage / "lancedb" / "workspace.lance" / "data" / "0003.lance"
    lance.write_bytes(os.urandom(60_000))
    (storage / "documents" / "custom-documents" / "new.json").write_bytes(os.urandom(40_000))
    second = take()
    assert 100_000 <= second < 0.05 * first


def test_forget_removes_what_the_retention_does_not_keep_then_prunes(
    backend: Backend, tmp_path: Path
) -> None:
    repo = Repository(backend())
    repo.init_if_missing()
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_bytes(os.urandom(1234))
    times = {
        "nov-15": datetime(2025, 11, 15, 3, tzinfo=UTC),
        "dec-20": datetime(2025, 12, 20, 3, tzinfo=UTC),
        "jan-05": datetime(2026, 1, 5, 3, tzinfo=UTC),
        "jan-06": datetime(2026, 1, 6, 3, tzinfo=UTC),
        "jan-07": datetime(2026, 1, 7, 3, tzinfo=UTC),
        "jan-08-early": datetime(2026, 1, 8, 1, tzinfo=UTC),
        "jan-08": datetime(2026, 1, 8, 3, tzinfo=UTC),
    }
    ids = {}
    for name, when in times.items():
        (data / "f").write_bytes(os.urandom(1234))  # each holds its own data
        snap = repo.snapshot(["data"], cwd=tmp_path, tags=target_tags(TARGET), host="h", time=when)
        ids[snap.id] = name
    other = repo.snapshot(
        ["data"], cwd=tmp_path, tags=target_tags("other"), host="h", time=times["nov-15"]
    )

    listed = repo.snapshots(target_tags(TARGET))
    assert [ids[s.id] for s in listed] == list(reversed(times))  # newest first
    assert {s.size for s in listed} == {None}  # not taken from a stage: no size tag
    assert listed[0].age(now=datetime(2026, 1, 9, 3, tzinfo=UTC)) == timedelta(days=1)

    # daily=3: the last snapshot of each of the 3 latest days; monthly=2: of the 2 latest
    # months (January's is the daily one of the 8th).
    gone = repo.forget(Retention(daily=3, monthly=2), tags=target_tags(TARGET))
    assert sorted(ids[s.id] for s in gone.kept) == ["dec-20", "jan-06", "jan-07", "jan-08"]
    assert sorted(ids[s.id] for s in gone.removed) == ["jan-05", "jan-08-early", "nov-15"]
    assert gone.pruned
    remaining = repo.snapshots()
    assert {s.id for s in remaining} == {s.id for s in gone.kept} | {other.id}
    assert repo.check().ok
    assert repo.forget(Retention(daily=3, monthly=2), tags=target_tags(TARGET)).removed == ()
    assert repo.forget(Retention(last=1), tags=target_tags("none")) == Forgotten((), (), False)
    with pytest.raises(OperatorError, match="must keep something"):
        repo.forget(Retention(), tags=target_tags(TARGET))
    with pytest.raises(OperatorError, match="needs tags"):
        repo.forget(Retention(last=1), tags=[])


def test_a_damaged_pack_file_fails_check(tmp_path: Path) -> None:
    repo = Repository(local(tmp_path))
    repo.init_if_missing()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "blob").write_bytes(os.urandom(3_000_000))
    repo.snapshot(["data"], cwd=tmp_path, tags=target_tags("t"), host="h")
    assert repo.check(read_data_subset="100%").ok
    packs = [p for p in (tmp_path / "repo" / "data").rglob("*") if p.is_file()]
    largest = max(packs, key=lambda p: p.stat().st_size)
    largest.chmod(0o600)
    with largest.open("r+b") as handle:
        handle.seek(largest.stat().st_size // 2)
        handle.write(b"\0rollhook was here\0")
    result = repo.check(read_data_subset="100%")
    assert not result.ok
    assert result.problems
    assert all("\n" not in line for line in result.problems)


def test_a_wrong_password_is_an_operator_error_that_leaks_nothing(
    backend: Backend, tmp_path: Path
) -> None:
    Repository(backend()).init_if_missing()
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password-4e7b\n")
    config = backend(password_file=wrong)
    config = RemoteConfig(**{**config.__dict__, "env": {"AWS_SECRET_ACCESS_KEY": ENV_SECRET}})
    repo = Repository(config)
    with pytest.raises(WrongPassword) as caught:
        repo.snapshots()
    message = str(caught.value)
    assert isinstance(caught.value, OperatorError)
    assert "wrong password" in message
    assert str(wrong) in message  # which file to fix
    assert "\n" not in message
    for secret in (PASSWORD, "not-the-password-4e7b", ENV_SECRET):
        assert secret not in message
    with pytest.raises(WrongPassword):
        repo.init_if_missing()  # never "missing", never re-created


def test_a_missing_repository_is_an_operator_error_until_created(backend: Backend) -> None:
    repo = Repository(backend("nowhere"))
    with pytest.raises(RepositoryMissing, match="no repository there") as caught:
        repo.snapshots()
    assert isinstance(caught.value, OperatorError)
    assert repo.init_if_missing() is True
    assert repo.snapshots() == []


def test_an_unreachable_sftp_server_is_an_infrastructure_error(
    sftp_server: SftpServer, tmp_path: Path
) -> None:
    password = tmp_path / "password"
    password.write_text(PASSWORD)
    nobody = free_port()  # nothing listens there
    config = RemoteConfig(
        sftp_server.repository(tmp_path / "repo"), password, options=sftp_server.options(nobody)
    )
    with pytest.raises(RepositoryUnreachable) as caught:
        Repository(config).snapshots()
    assert isinstance(caught.value, InfrastructureError)
    assert "\n" not in str(caught.value)
    assert "unable to start the sftp session" in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_a_password_in_the_repository_url_never_reaches_a_message(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text(PASSWORD)
    url = f"rest:http://backup:url-secret-77@127.0.0.1:{free_port()}/repo"
    repo = Repository(RemoteConfig(url, password))
    assert "url-secret-77" not in repo.display
    with pytest.raises(RepositoryUnreachable) as caught:
        repo.snapshots()
    assert "connection refused" in str(caught.value)
    assert "url-secret-77" not in str(caught.value)


def restic_holding_a_lock(config: RemoteConfig, tmp_path: Path) -> subprocess.Popen[bytes]:
    """A restic backup reading stdin: it holds its lock until stdin closes."""
    proc = subprocess.Popen(
        [
            "restic",
            "--repo",
            config.repository,
            "--password-file",
            str(config.password_file),
            "backup",
            "--stdin",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=procs.child_env(),
    )
    locks = tmp_path / "repo" / "locks"
    for _ in range(600):
        if any(locks.iterdir()):
            return proc
        assert proc.poll() is None, "restic exited before taking its lock"
        time.sleep(0.05)
    raise AssertionError("restic took no lock")


def test_a_lock_left_by_a_killed_restic_is_removed_a_live_one_is_not(tmp_path: Path) -> None:
    config = local(tmp_path)
    repo = Repository(config)
    repo.init_if_missing()
    locks = tmp_path / "repo" / "locks"

    live = restic_holding_a_lock(config, tmp_path)
    try:
        with pytest.raises(RepositoryLocked, match="already locked by PID") as caught:
            repo.check()  # wants an exclusive lock
        assert isinstance(caught.value, InfrastructureError)
        assert any(locks.iterdir())  # the live lock was left alone
    finally:
        live.kill()  # as a worker killed with SIGKILL: no chance to remove its lock
        live.wait()
        assert live.stdin is not None
        live.stdin.close()
    assert any(locks.iterdir())
    assert repo.check().ok  # the stale lock was removed, and the check ran
    assert not any(locks.iterdir())


def restic_argv(config: RemoteConfig) -> list[str]:
    return [
        config.restic,
        "--repo",
        config.repository,
        "--password-file",
        str(config.password_file),
    ]


def restic_list_with_lock(config: RemoteConfig) -> subprocess.CompletedProcess[bytes]:
    """``restic snapshots`` as rollhook ran it before: taking restic's default lock."""
    return subprocess.run(
        [*restic_argv(config), "snapshots", "--json"],
        check=False,
        capture_output=True,
        env=procs.child_env(),
    )


def restic_pruning_paused(config: RemoteConfig, tmp_path: Path) -> subprocess.Popen[bytes]:
    """A restic prune stopped (SIGSTOP) while its exclusive lock refuses a locking listing:
    as another host's prune that is still running."""
    proc = subprocess.Popen(
        [*restic_argv(config), "prune", "--max-unused", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=procs.child_env(),
    )
    locks = tmp_path / "repo" / "locks"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "restic prune ended before it was seen holding its lock"
        if any("-tmp-" not in name for name in os.listdir(locks)):  # written, then renamed
            proc.send_signal(signal.SIGSTOP)
            if b"locked exclusively" in restic_list_with_lock(config).stderr:
                return proc
            proc.send_signal(signal.SIGCONT)
    raise AssertionError("restic prune was not seen holding its lock")


def test_listing_snapshots_is_not_refused_while_another_prune_holds_the_lock(
    tmp_path: Path,
) -> None:
    config = local(tmp_path)
    repo = Repository(config)
    repo.init_if_missing()
    data = tmp_path / "data"
    data.mkdir()
    tags = target_tags(TARGET)
    for _ in range(3):  # forgotten snapshots leave packs for the prune to repack
        for f in range(200):
            (data / f"{f}.bin").write_bytes(os.urandom(2000))
        repo.snapshot([str(data)], tags=tags, host="old-host")
    kept = repo.snapshot([str(data)], tags=tags, host="old-host")
    for snap in repo.snapshots(tags)[1:]:
        subprocess.run(
            [*restic_argv(config), "forget", snap.id],
            check=True,
            capture_output=True,
            env=procs.child_env(),
        )

    pruning = restic_pruning_paused(config, tmp_path)  # refuses restic's default lock
    try:
        found = repo.snapshots(tags, sizes=True)
        assert [s.id for s in found] == [kept.id]
        assert found[0].size is not None and found[0].size > 0
        assert os.listdir(tmp_path / "repo" / "locks")  # the prune's lock was left alone
    finally:
        pruning.send_signal(signal.SIGCONT)
        pruning.wait(timeout=120)
    assert pruning.returncode == 0


def test_every_restic_runs_in_its_own_group_and_a_timeout_ends_it_with_its_ssh(
    sftp_server: SftpServer, tmp_path: Path
) -> None:
    password = tmp_path / "password"
    password.write_text(PASSWORD)
    config = RemoteConfig(
        sftp_server.repository(tmp_path / "repo"), password, options=sftp_server.options()
    )
    groups: list[procs.ProcessGroup] = []
    Repository(config, on_spawn=groups.append).init_if_missing()
    assert len(groups) == 2  # cat config, then init
    (tmp_path / "data").mkdir()
    with (tmp_path / "data" / "big").open("wb") as out:
        for _ in range(40):
            out.write(os.urandom(5_000_000))
    slow = Repository(config, on_spawn=groups.append, timeout=1.0)
    with pytest.raises(StepTimeout, match="ran past its 1s deadline"):
        slow.snapshot(["data"], cwd=tmp_path, tags=["t"], host="h")
    group = groups[-1]
    assert not procs.is_ours(group)  # restic and the ssh it started are gone
    leftovers = [
        pid
        for pid in os.listdir("/proc")
        if pid.isdigit() and sftp_server.ssh_command() in _cmdline(pid)
    ]
    assert leftovers == []


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_restic_gets_only_the_environment_it_is_given(tmp_path: Path) -> None:
    fake = tmp_path / "restic"
    fake.write_text(f'#!/bin/sh\nenv > {tmp_path}/env.txt\necho "[]"\n')
    fake.chmod(0o755)
    password = tmp_path / "password"
    password.write_text(PASSWORD)
    os.environ["ROLLHOOK_SECRET_FOR_TEST"] = "must-not-pass"
    try:
        config = RemoteConfig(
            "/nowhere",
            password,
            env={"AWS_ACCESS_KEY_ID": "id", "B2_ACCOUNT_KEY": "key", "RESTIC_PACK_SIZE": "16"},
            restic=str(fake),
        )
        assert Repository(config).snapshots() == []
    finally:
        del os.environ["ROLLHOOK_SECRET_FOR_TEST"]
    seen = dict(
        line.split("=", 1) for line in (tmp_path / "env.txt").read_text().splitlines() if line
    )
    seen.pop("PWD", None)  # set by the shell itself
    assert set(seen) == {
        "PATH",
        "HOME",
        "LC_ALL",
        "TZ",
        "AWS_ACCESS_KEY_ID",
        "B2_ACCOUNT_KEY",
        "RESTIC_PACK_SIZE",
    }
    for bad in ({"PATH": "/x"}, {"RESTIC_PASSWORD": "x"}, {"RESTIC_REPOSITORY": "/x"}):
        with pytest.raises(OperatorError):
            Repository(RemoteConfig("/nowhere", password, env=bad, restic=str(fake)))


def test_tags_and_ids_are_checked_before_restic_runs(tmp_path: Path) -> None:
    repo = Repository(RemoteConfig(str(tmp_path / "repo"), tmp_path / "password"))
    with pytest.raises(OperatorError, match="invalid snapshot tag"):
        repo.snapshots(["a,b"])
    with pytest.raises(OperatorError, match="invalid snapshot id"):
        repo.restore("--target=/", tmp_path / "x")
    with pytest.raises(OperatorError, match="invalid read_data_subset"):
        repo.check(read_data_subset="all of it")
    with pytest.raises(OperatorError, match="at least one path"):
        repo.snapshot([], tags=["t"], host="h")
    assert not (tmp_path / "repo").exists()
    assert not (tmp_path / "x").exists()
