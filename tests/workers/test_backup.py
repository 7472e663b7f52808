"""Data backups on the real filesystem: consistency with a live app, links, restore, prune.

Runs as root (owners are set to anything-llm's 1000:1000 and others). The "app" is a
thread committing real SQLite transactions and rewriting LanceDB-style metadata and the
runtime .env in place, as anything-llm does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import socket
import sqlite3
import stat
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from workers.backup import BackupStore, Source, files
from workers.backup import restore as restore_module
from workers.backup.files import is_live_name
from workers.errors import DeployError, InfrastructureError, OperatorError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="owners can only be set by root")

SECRET = "SIG_KEY='do-not-log-this-7f3a9c1e5b'"
APP_UID, APP_GID = 1000, 1000
MANIFEST_SIZE = 512


# -- an anything-llm storage tree --------------------------------------------------------


def _write(
    path: Path, data: bytes, mode: int = 0o644, owner: tuple[int, int] = (1000, 1000)
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chown(path, *owner)
    os.chmod(path, mode)


def make_storage(root: Path, journal_mode: str = "DELETE") -> tuple[Path, Path]:
    """A storage directory shaped like anything-llm's, plus its runtime .env beside it."""
    storage = root / "storage"
    storage.mkdir()
    rng = random.Random(1)
    db = sqlite3.connect(storage / "anythingllm.db", isolation_level=None)
    db.execute(f"PRAGMA journal_mode={journal_mode}")
    db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
    db.execute("BEGIN")
    for _ in range(200):
        db.execute("INSERT INTO notes (payload) VALUES (?)", (rng.randbytes(500),))
    db.execute("COMMIT")
    db.close()
    table = storage / "lancedb" / "workspace.lance"
    _write(table / "_latest.manifest", b"m" * MANIFEST_SIZE)
    _write(table / "_versions" / "1.manifest", b"v" * MANIFEST_SIZE)
    _write(table / "data" / "0a1b.lance", rng.randbytes(300_000))
    _write(storage / "documents" / "custom-documents" / "doc.json", b'{"pageContent": "hello"}')
    _write(storage / "vector-cache" / "abc.json", rng.randbytes(20_000), mode=0o640)
    _write(storage / "models" / "downloaded" / "model.gguf", rng.randbytes(2_000_000))
    (storage / "plugins" / "empty").mkdir(parents=True)
    for path in [*storage.rglob("*"), storage]:
        if path.is_dir():
            os.chown(path, APP_UID, APP_GID)
    os.chown(storage / "anythingllm.db", APP_UID, APP_GID)
    env = root / ".env"
    _write(env, f"{SECRET}\nJWT_SECRET='0123456789abcdef'\n".encode(), mode=0o600)
    return storage, env


def sources_of(storage: Path, env: Path) -> list[Source]:
    return [Source("volume:anythingllm_storage", storage), Source(f"bind:{env}", env)]


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Everything a backup must preserve, per entry: type, mode, owner, mtime, content."""

    def describe(path: str) -> tuple[Any, ...] | None:
        st = os.lstat(path)
        meta = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns)
        if stat.S_ISREG(st.st_mode):
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            return ("file", *meta, st.st_size, digest)
        if stat.S_ISDIR(st.st_mode):
            return ("dir", *meta)
        if stat.S_ISLNK(st.st_mode):
            return ("link", st.st_uid, st.st_gid, st.st_mtime_ns, os.readlink(path))
        return None  # sockets and FIFOs are not backed up

    found = {"": describe(str(root))}
    if root.is_dir() and not root.is_symlink():
        for rel, _ in files.walk(str(root)):
            found[rel] = describe(f"{root}/{rel}")
    return {rel: d for rel, d in found.items() if d is not None}


def data_dir(store: BackupStore, backup_id: str, index: int) -> Path:
    return store.root / backup_id / "data" / str(index)


class App(threading.Thread):
    """Stands in for anything-llm while pass 1 runs: commits and rewrites live files."""

    def __init__(self, db: Path, live: list[Path], journal_mode: str) -> None:
        super().__init__(daemon=True)
        self.db, self.live, self.journal_mode = db, live, journal_mode
        self.rows: dict[int, bytes] = {}
        self.commits = 0
        self.error: BaseException | None = None
        self.conn: sqlite3.Connection | None = None
        self._stop_flag = threading.Event()
        self._progress = threading.Condition()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            self.error = exc
            with self._progress:
                self._progress.notify_all()

    def _run(self) -> None:
        rng = random.Random(2)
        conn = sqlite3.connect(self.db, isolation_level=None, check_same_thread=False)
        self.conn = conn  # never closed while "running": the app is killed, not shut down
        conn.execute(f"PRAGMA journal_mode={self.journal_mode}")
        conn.execute("PRAGMA synchronous=OFF")  # speed; durability is not what is tested
        self.rows = dict(conn.execute("SELECT id, payload FROM notes").fetchall())
        while not self._stop_flag.is_set():
            pending: dict[int, bytes] = {}
            conn.execute("BEGIN IMMEDIATE")
            for _ in range(5):
                payload = rng.randbytes(rng.randint(100, 3000))
                cur = conn.execute("INSERT INTO notes (payload) VALUES (?)", (payload,))
                assert cur.lastrowid is not None
                pending[cur.lastrowid] = payload
            old = rng.choice(list(self.rows))  # and one row rewritten in place
            pending[old] = rng.randbytes(len(self.rows[old]))
            conn.execute("UPDATE notes SET payload = ? WHERE id = ?", (pending[old], old))
            conn.execute("COMMIT")
            self.rows.update(pending)
            for path in self.live:  # same size: only the content says it changed
                fd = os.open(path, os.O_WRONLY)
                try:
                    size = os.fstat(fd).st_size
                    os.pwrite(fd, (b"%08d" % self.commits) * (size // 8) + b"x" * (size % 8), 0)
                finally:
                    os.close(fd)
            with self._progress:
                self.commits += 1
                self._progress.notify_all()

    def wait_for_commits(self, n: int = 1) -> None:
        with self._progress:
            target = self.commits + n
            ok = self._progress.wait_for(
                lambda: self.commits >= target or self.error is not None, timeout=30
            )
        if self.error is not None:
            raise self.error
        assert ok, "the app thread made no progress"

    def stop(self) -> None:
        self._stop_flag.set()
        self.join(timeout=30)
        if self.error is not None:
            raise self.error


def rows_of_copy(db_dir: Path, scratch: Path) -> tuple[str, dict[int, bytes]]:
    """Open a backed-up database through a copy: opening it in place would write to it."""
    scratch.mkdir()
    for path in db_dir.glob("anythingllm.db*"):
        shutil.copy2(path, scratch / path.name)
    conn = sqlite3.connect(scratch / "anythingllm.db")
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        rows = dict(conn.execute("SELECT id, payload FROM notes").fetchall())
    finally:
        conn.close()
    return integrity, rows


@pytest.fixture
def racing_copies(monkeypatch: pytest.MonkeyPatch) -> Callable[[App], None]:
    """Make every pass-1 file copy wait for an app commit after its stat was taken.

    That is the window where a backup that trusted the pass-1 stat would keep a stale
    or torn copy; without this, whether the thread hits it is luck.
    """

    def install(app: App) -> None:
        real = files.copy_data

        def racing(src: int, dst: int) -> int:
            app.wait_for_commits()
            return real(src, dst)

        monkeypatch.setattr(files, "copy_data", racing)

    return install


# -- consistency -------------------------------------------------------------------------


@pytest.mark.parametrize("journal_mode", ["WAL", "DELETE"])
def test_backup_equals_the_data_when_the_app_stopped(
    tmp_path: Path,
    journal_mode: str,
    racing_copies: Callable[[App], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    storage, env = make_storage(tmp_path, journal_mode)
    manifest = storage / "lancedb" / "workspace.lance" / "_latest.manifest"
    app = App(storage / "anythingllm.db", [manifest, env], journal_mode)
    app.start()
    app.wait_for_commits()
    racing_copies(app)
    store = BackupStore(tmp_path / "backups")

    before = app.commits
    running = store.start("b1", sources_of(storage, env))
    during_pass1 = app.commits - before
    monkeypatch.undo()
    app.wait_for_commits(3)  # the app keeps writing after pass 1, until it is stopped
    app.stop()
    expected = dict(app.rows)
    info = running.finish()

    assert during_pass1 > 0, "the app must have written while pass 1 ran"
    assert snapshot(data_dir(store, "b1", 0)) == snapshot(storage)
    assert snapshot(data_dir(store, "b1", 1)) == snapshot(env)
    integrity, rows = rows_of_copy(data_dir(store, "b1", 0), tmp_path / "scratch")
    assert integrity == "ok"
    assert rows == expected
    assert info.final_bytes_written > 0  # the final pass did repair what changed
    assert app.conn is not None
    app.conn.close()


def test_live_file_changed_without_size_or_mtime_change_is_caught(tmp_path: Path) -> None:
    storage, env = make_storage(tmp_path)
    store = BackupStore(tmp_path / "backups")
    running = store.start("b1", sources_of(storage, env))

    db_path = storage / "anythingllm.db"
    manifest = storage / "lancedb" / "workspace.lance" / "_versions" / "1.manifest"
    before = {p: os.stat(p) for p in (db_path, manifest, env)}
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("UPDATE notes SET payload = zeroblob(500) WHERE id = 7")  # same size, in place
    db.close()
    manifest.write_bytes(b"w" * MANIFEST_SIZE)
    env.write_bytes(env.read_bytes().replace(b"do-not-log", b"DO-NOT-LOG"))
    for path, st in before.items():
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert (os.stat(path).st_size, os.stat(path).st_mtime_ns) == (st.st_size, st.st_mtime_ns)

    running.finish()

    assert snapshot(data_dir(store, "b1", 0)) == snapshot(storage)
    assert (data_dir(store, "b1", 1)).read_bytes() == env.read_bytes()
    _, rows = rows_of_copy(data_dir(store, "b1", 0), tmp_path / "scratch")
    assert rows[7] == bytes(500)


def test_live_files_are_compared_by_content_even_when_their_stat_is_unchanged(
    tmp_path: Path,
) -> None:
    # A write landing in the same timestamp tick as pass 1's stat leaves every stat field
    # as it was. Simulate its effect, a stale pass-1 copy, by damaging the copies.
    storage, env = make_storage(tmp_path)
    store = BackupStore(tmp_path / "backups")
    running = store.start("b1", sources_of(storage, env))
    partial = store.root / "b1.partial" / "data"
    for copy in (partial / "0" / "anythingllm.db", partial / "1"):
        fd = os.open(copy, os.O_WRONLY)
        os.pwrite(fd, b"\xff" * 64, 100)
        os.close(fd)

    running.finish()

    assert (data_dir(store, "b1", 0) / "anythingllm.db").read_bytes() == (
        storage / "anythingllm.db"
    ).read_bytes()
    assert data_dir(store, "b1", 1).read_bytes() == env.read_bytes()


def test_final_pass_copies_nothing_in_bulk(tmp_path: Path) -> None:
    storage, env = make_storage(tmp_path)
    big = storage / "models" / "downloaded" / "big.gguf"
    with open(big, "wb") as out:  # 200 MB, mostly holes, with real data in places
        for offset in range(0, 200 << 20, 50 << 20):
            out.seek(offset)
            out.write(random.Random(offset).randbytes(1 << 20))
        out.truncate(200 << 20)
    real = storage / "models" / "downloaded" / "real.bin"
    real.write_bytes(os.urandom(16 << 20))
    store = BackupStore(tmp_path / "backups")

    running = store.start("b1", sources_of(storage, env))
    db = sqlite3.connect(storage / "anythingllm.db", isolation_level=None)
    db.execute("INSERT INTO notes (payload) VALUES (x'00')")  # the live DB did change
    db.close()
    info = running.finish()

    assert info.pass1_bytes_written >= (16 << 20) + (4 << 20)
    assert info.final_bytes_written <= files.CHUNK  # one chunk of the DB, nothing in bulk
    assert info.final_bytes_compared < (2 << 20)  # only the small live files were read
    copy = data_dir(store, "b1", 0) / "models" / "downloaded" / "big.gguf"
    assert copy.stat().st_size == 200 << 20
    assert copy.stat().st_blocks * 512 < (8 << 20)  # holes stayed holes
    assert snapshot(data_dir(store, "b1", 0)) == snapshot(storage)


def test_new_changed_and_deleted_entries_between_passes(tmp_path: Path) -> None:
    storage, env = make_storage(tmp_path)
    store = BackupStore(tmp_path / "backups")
    running = store.start("b1", sources_of(storage, env))
    (storage / "documents" / "new.json").write_text("{}")
    (storage / "documents" / "custom-documents" / "doc.json").write_text('{"changed": 1}')
    shutil.rmtree(storage / "vector-cache")
    (storage / "plugins" / "empty").rmdir()
    (storage / "plugins" / "empty").write_text("now a file")
    os.symlink("documents", storage / "docs")
    running.finish()
    assert snapshot(data_dir(store, "b1", 0)) == snapshot(storage)


# -- links between backups ---------------------------------------------------------------


def test_unchanged_files_are_hard_links_to_the_previous_backup_live_ones_never(
    tmp_path: Path,
) -> None:
    storage, env = make_storage(tmp_path)
    store = BackupStore(tmp_path / "backups")
    first = store.start("b1", sources_of(storage, env)).finish()
    assert first.bytes_linked == 0
    (storage / "vector-cache" / "abc.json").write_bytes(b"changed")

    second = store.start("b2", sources_of(storage, env)).finish()

    def ino(backup_id: str, rel: str, index: int = 0) -> int:
        return os.lstat(data_dir(store, backup_id, index) / rel).st_ino

    for rel in ["models/downloaded/model.gguf", "lancedb/workspace.lance/data/0a1b.lance"]:
        assert ino("b1", rel) == ino("b2", rel), rel
    for rel in [
        "anythingllm.db",
        "lancedb/workspace.lance/_latest.manifest",
        "lancedb/workspace.lance/_versions/1.manifest",
        "vector-cache/abc.json",  # changed
    ]:
        assert ino("b1", rel) != ino("b2", rel), rel
    assert ino("b1", "", 1) != ino("b2", "", 1)  # the runtime .env (a single-file source)
    assert second.linked_from == "b1"
    assert second.bytes_linked >= 2_300_000
    assert (data_dir(store, "b1", 0) / "vector-cache" / "abc.json").read_bytes() != b"changed"
    assert snapshot(data_dir(store, "b2", 0)) == snapshot(storage)


def test_a_linked_file_changed_before_the_final_pass_never_alters_the_older_backup(
    tmp_path: Path,
) -> None:
    storage, env = make_storage(tmp_path)
    store = BackupStore(tmp_path / "backups")
    store.start("b1", sources_of(storage, env)).finish()
    model = storage / "models" / "downloaded" / "model.gguf"
    original = model.read_bytes()

    running = store.start("b2", sources_of(storage, env))
    assert os.lstat(data_dir(store, "b2.partial", 0) / "models/downloaded/model.gguf").st_nlink == 2
    with open(model, "r+b") as out:  # the app rewrites it in place, same size
        out.write(b"\x00" * 4096)
    running.finish()

    assert (data_dir(store, "b1", 0) / "models/downloaded/model.gguf").read_bytes() == original
    assert (data_dir(store, "b2", 0) / "models/downloaded/model.gguf").read_bytes() == (
        model.read_bytes()
    )


def test_a_file_rewritten_with_its_size_and_mtime_restored_is_copied_not_linked(
    tmp_path: Path,
) -> None:
    # Size and mtime alone would say "unchanged"; the inode's ctime cannot be set back.
    storage, env = make_storage(tmp_path)
    store = BackupStore(tmp_path / "backups")
    store.start("b1", sources_of(storage, env)).finish()
    model = storage / "models" / "downloaded" / "model.gguf"
    st = model.stat()
    with open(model, "r+b") as out:
        out.write(b"\x00" * 4096)
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))

    store.start("b2", sources_of(storage, env)).finish()

    copy = data_dir(store, "b2", 0) / "models" / "downloaded" / "model.gguf"
    assert copy.read_bytes() == model.read_bytes()
    assert (
        copy.stat().st_ino
        != (data_dir(store, "b1", 0) / "models/downloaded/model.gguf").stat().st_ino
    )


def test_estimate_counts_what_cannot_be_linked(tmp_path: Path) -> None:
    storage, env = make_storage(tmp_path)
    store = BackupStore(tmp_path / "backups")
    sources = sources_of(storage, env)
    full = store.estimate(sources)
    assert full >= 2_300_000  # model + lance data + the rest
    store.start("b1", sources).finish()
    after = store.estimate(sources)
    db_size = (storage / "anythingllm.db").stat().st_size
    assert db_size <= after < 500_000  # live files and directories only
    (storage / "models" / "downloaded" / "model.gguf").write_bytes(os.urandom(2_000_000))
    assert store.estimate(sources) >= after + 2_000_000


# -- what a backup preserves -------------------------------------------------------------


def test_owners_modes_times_symlinks_and_empty_dirs_are_preserved(tmp_path: Path) -> None:
    storage, env = make_storage(tmp_path)
    shared = storage / "shared"
    shared.mkdir(mode=0o750)
    os.chmod(shared, 0o2750)  # noqa: S103  (a setgid directory, to see it kept)
    os.chown(shared, 1234, 5678)
    _write(shared / "script.sh", b"#!/bin/sh\n", mode=0o4755, owner=(0, 0))
    _write(shared / "other-owner", b"x", mode=0o400, owner=(1234, 5678))
    os.symlink("../documents", shared / "relative")
    os.symlink("/etc/hostname", shared / "outside")  # must stay a link, never be followed
    os.symlink("/nonexistent/target", shared / "dangling")
    os.chown(shared / "outside", 1234, 5678, follow_symlinks=False)
    os.utime(shared / "outside", ns=(1, 1_000_000_123), follow_symlinks=False)
    os.mkfifo(storage / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(storage / "app.sock"))
    os.utime(storage / "documents", ns=(5, 1_600_000_000_123_456_789))
    os.utime(shared, ns=(5, 1_500_000_000_987_654_321))
    store = BackupStore(tmp_path / "backups")
    try:
        info = store.start("b1", sources_of(storage, env)).finish()
    finally:
        sock.close()

    copy = data_dir(store, "b1", 0)
    assert snapshot(copy) == snapshot(storage)
    assert snapshot(data_dir(store, "b1", 1)) == snapshot(env)
    assert os.readlink(copy / "shared" / "outside") == "/etc/hostname"
    assert (copy / "plugins" / "empty").is_dir()
    assert not os.path.lexists(copy / "fifo") and not os.path.lexists(copy / "app.sock")
    notes = " ".join(info.sources[0].notes)
    assert "FIFO" in notes and "socket" in notes
    assert stat.S_IMODE(os.stat(copy / "shared").st_mode) == 0o2750
    assert stat.S_IMODE(os.stat(copy / "shared" / "script.sh").st_mode) == 0o4755
    assert os.stat(store.root / "b1").st_mode & 0o077 == 0  # holds secrets


def test_a_missing_source_is_skipped_with_a_note(tmp_path: Path) -> None:
    storage, env = make_storage(tmp_path)
    store = BackupStore(tmp_path / "backups")
    fresh = Source("volume:not-created-yet", tmp_path / "nope")
    info = store.start("b1", [*sources_of(storage, env), fresh]).finish()
    missing = info.sources[2]
    assert missing.kind == "missing"
    assert any("does not exist" in note for note in missing.notes)
    assert store.get("b1") == info  # the manifest round-trips


# -- completeness and crash safety ----------------------------------------------------------


def test_a_partial_backup_is_never_listed(tmp_path: Path) -> None:
    storage, env = make_storage(tmp_path)
    store = BackupStore(tmp_path / "backups")
    running = store.start("b1", sources_of(storage, env))
    assert store.list() == []
    with pytest.raises(OperatorError, match="incomplete"):
        store.get("b1")
    with pytest.raises(OperatorError):
        store.restore("b1")
    # A crash between writing the manifest and the rename: still not a backup.
    crashed = store.root / "b0.partial"
    shutil.copytree(store.root / "b1.partial", crashed)
    info = running.finish()
    (crashed / "manifest.json").write_text(json.dumps(info.to_json() | {"id": "b0"}))
    assert [b.id for b in store.list()] == ["b1"]


def test_abort_and_context_manager_leave_nothing(tmp_path: Path) -> None:
    storage, env = make_storage(tmp_path)
    store = BackupStore(tmp_path / "backups")
    store.start("b1", sources_of(storage, env)).abort()
    with store.start("b2", sources_of(storage, env)):
        pass
    assert sorted(os.listdir(store.root)) == [".lock"]


def test_a_backup_interrupted_by_a_crash_can_be_started_again(tmp_path: Path) -> None:
    storage, env = make_storage(tmp_path)
    store = BackupStore(tmp_path / "backups")
    (store.root / "b1.partial" / "data" / "0").mkdir(parents=True)  # left by a dead worker
    (store.root / "b1.partial" / "data" / "0" / "junk").write_text("half")
    info = store.start("b1", sources_of(storage, env)).finish()
    assert info.complete
    assert snapshot(data_dir(store, "b1", 0)) == snapshot(storage)
    with pytest.raises(DeployError, match="already exists"):
        store.start("b1", sources_of(storage, env))


# -- restore ---------------------------------------------------------------------------


def mutate(storage: Path, env: Path) -> None:
    """What a new version might do to the data before it fails its health gate."""
    db = sqlite3.connect(storage / "anythingllm.db", isolation_level=None)
    db.execute("CREATE TABLE migrated (x)")
    db.close()
    (storage / "documents" / "custom-documents" / "doc.json").unlink()
    (storage / "documents" / "added.json").write_text("{}")
    os.chmod(storage / "vector-cache" / "abc.json", 0o604)
    shutil.rmtree(storage / "plugins")
    (storage / "plugins").write_text("a file now")
    env.write_text("SIG_KEY='rotated'\n")


def test_restore_by_rename_brings_back_dirs_and_the_env_file(tmp_path: Path) -> None:
    storage, env = make_storage(tmp_path)
    store = BackupStore(tmp_path / "backups")
    store.start("b1", sources_of(storage, env)).finish()
    mutate(storage, env)
    mutated = snapshot(storage), env.read_bytes()

    result = store.restore("b1")

    assert snapshot(storage) == snapshot(data_dir(store, "b1", 0))
    assert snapshot(env) == snapshot(data_dir(store, "b1", 1))
    assert [s.action for s in result.sources] == ["replaced", "replaced"]
    aside_dir = tmp_path / "storage.rollhook-aside-b1"
    assert snapshot(aside_dir) == mutated[0]
    assert (tmp_path / ".env.rollhook-aside-b1").read_bytes() == mutated[1]
    assert result.sources[0].aside == str(aside_dir)
    restored = storage / "models" / "downloaded" / "model.gguf"
    backed_up = data_dir(store, "b1", 0) / "models" / "downloaded" / "model.gguf"
    assert os.stat(restored).st_ino != os.stat(backed_up).st_ino  # copies, never links
    assert os.stat(restored).st_nlink == 1
    assert not list(tmp_path.glob("*rollhook-restore*"))
    _, rows = rows_of_copy(storage, tmp_path / "scratch")
    assert len(rows) == 200


def test_restore_of_the_documented_layout_with_the_env_inside_the_storage_dir(
    tmp_path: Path,
) -> None:
    # anything-llm's docs mount $STORAGE_LOCATION as a directory and
    # $STORAGE_LOCATION/.env as a file: two sources, one inside the other.
    storage, _ = make_storage(tmp_path)
    env = storage / ".env"
    _write(env, f"{SECRET}\n".encode(), mode=0o600)
    sources = [Source(f"bind:{storage}", storage), Source(f"bind:{env}", env)]
    store = BackupStore(tmp_path / "backups")
    store.start("b1", sources).finish()
    mutate(storage, env)

    result = store.restore("b1")

    assert [s.action for s in result.sources] == ["replaced", "included"]
    assert snapshot(storage) == snapshot(data_dir(store, "b1", 0))
    assert env.read_bytes() == data_dir(store, "b1", 1).read_bytes() == f"{SECRET}\n".encode()
    assert not [p for p in storage.iterdir() if "rollhook" in p.name]


def test_names_that_are_not_utf8_survive_backup_links_and_restore(tmp_path: Path) -> None:
    storage, env = make_storage(tmp_path)
    odd = os.fsencode(storage / "documents") + b"/caf\xe9.json"
    fd = os.open(odd, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"latin-1 name")
    os.close(fd)
    store = BackupStore(tmp_path / "backups")
    store.start("b1", sources_of(storage, env)).finish()
    store.start("b2", sources_of(storage, env)).finish()  # reads b1's index back
    copy = os.fsencode(data_dir(store, "b2", 0) / "documents") + b"/caf\xe9.json"
    assert os.stat(copy).st_nlink == 2  # linked from b1 through the index
    os.unlink(odd)
    store.restore("b2")
    assert snapshot(storage) == snapshot(data_dir(store, "b2", 0))


def test_restore_recreates_a_deleted_source(tmp_path: Path) -> None:
    storage, env = make_storage(tmp_path)
    store = BackupStore(tmp_path / "backups")
    store.start("b1", sources_of(storage, env)).finish()
    shutil.rmtree(storage)
    env.unlink()

    result = store.restore("b1")

    assert [s.action for s in result.sources] == ["recreated", "recreated"]
    assert snapshot(storage) == snapshot(data_dir(store, "b1", 0))
    assert env.read_bytes() == data_dir(store, "b1", 1).read_bytes()


def test_restore_of_a_source_missing_at_backup_time_sets_the_new_data_aside(
    tmp_path: Path,
) -> None:
    fresh = tmp_path / "created-by-new-version"
    store = BackupStore(tmp_path / "backups")
    store.start("b1", [Source("volume:v", fresh)]).finish()
    fresh.mkdir()
    (fresh / "x").write_text("new")
    result = store.restore("b1")
    assert result.sources[0].action == "removed"
    assert not fresh.exists()
    assert (tmp_path / "created-by-new-version.rollhook-aside-b1" / "x").read_text() == "new"


@pytest.fixture
def crash_once(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, int], None]:
    """Make the n-th call of a restore step raise, as if the worker died right there."""

    def install(name: str, n: int) -> None:
        real = getattr(restore_module, name)
        calls = {"n": 0}

        def crashing(*args: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == n:
                monkeypatch.undo()
                raise RuntimeError("worker died")
            return real(*args)

        monkeypatch.setattr(restore_module, name, crashing)

    return install


@pytest.mark.parametrize(
    ("step", "nth"),
    [
        ("_stage", 2),  # one source staged, the next not
        ("set_aside", 2),  # the first source swapped, the second not
        ("put_in_place", 1),  # the first source set aside, its copy not yet in place
        ("put_in_place", 2),
    ],
)
def test_restore_finishes_when_run_again_after_a_crash(
    tmp_path: Path, step: str, nth: int, crash_once: Callable[[str, int], None]
) -> None:
    storage, env = make_storage(tmp_path)
    store = BackupStore(tmp_path / "backups")
    store.start("b1", sources_of(storage, env)).finish()
    mutate(storage, env)
    mutated = snapshot(storage)
    crash_once(step, nth)
    with pytest.raises(RuntimeError, match="worker died"):
        store.restore("b1")

    result = store.restore("b1")

    assert snapshot(storage) == snapshot(data_dir(store, "b1", 0))
    assert env.read_bytes() == data_dir(store, "b1", 1).read_bytes()
    # The data the first run replaced is in the first aside copy, whole; a source that
    # run had already swapped is swapped again, its redundant aside named ".2".
    assert snapshot(tmp_path / "storage.rollhook-aside-b1") == mutated
    assert (tmp_path / ".env.rollhook-aside-b1").read_text() == "SIG_KEY='rotated'\n"
    assert result.sources[0].aside is not None
    assert result.sources[0].aside.startswith(f"{storage}.rollhook-aside-b1")
    assert result.sources[1].aside == f"{env}.rollhook-aside-b1"
    assert not [p for p in tmp_path.iterdir() if "rollhook-restore" in p.name]


def test_a_rerun_restores_a_source_the_app_changed_after_the_interrupted_run(
    tmp_path: Path, crash_once: Callable[[str, int], None]
) -> None:
    storage, env = make_storage(tmp_path)
    store = BackupStore(tmp_path / "backups")
    store.start("b1", sources_of(storage, env)).finish()
    mutate(storage, env)
    crash_once("set_aside", 2)  # the storage was swapped in, the .env not
    with pytest.raises(RuntimeError):
        store.restore("b1")
    (storage / "documents" / "written-meanwhile.json").write_text("{}")  # the app ran

    store.restore("b1")

    assert snapshot(storage) == snapshot(data_dir(store, "b1", 0))


def test_restore_crashed_while_staging_rebuilds_the_half_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage, env = make_storage(tmp_path)
    store = BackupStore(tmp_path / "backups")
    store.start("b1", sources_of(storage, env)).finish()
    mutate(storage, env)
    real = files.copy_file
    calls = {"n": 0}

    def dying(src: str, dst: str, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("worker died")
        return real(src, dst, **kw)

    monkeypatch.setattr(files, "copy_file", dying)
    with pytest.raises(RuntimeError):
        store.restore("b1")
    assert (tmp_path / "storage.rollhook-restore-b1.partial").exists()
    monkeypatch.undo()

    store.restore("b1")

    assert snapshot(storage) == snapshot(data_dir(store, "b1", 0))
    assert not list(tmp_path.glob("*.partial"))


def test_restoring_twice_keeps_the_first_aside_copy(tmp_path: Path) -> None:
    storage, env = make_storage(tmp_path)
    store = BackupStore(tmp_path / "backups")
    store.start("b1", sources_of(storage, env)).finish()
    mutate(storage, env)
    store.restore("b1")
    second = store.restore("b1")
    assert second.sources[1].aside == f"{env}.rollhook-aside-b1.2"
    assert (tmp_path / ".env.rollhook-aside-b1").read_text() == "SIG_KEY='rotated'\n"


def test_restore_refuses_when_the_disk_cannot_hold_the_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage, env = make_storage(tmp_path)
    store = BackupStore(tmp_path / "backups")
    store.start("b1", sources_of(storage, env)).finish()
    mutate(storage, env)
    before = snapshot(storage)
    full = SimpleNamespace(total=1 << 30, used=1 << 30, free=0)
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: full)
    with pytest.raises(InfrastructureError, match="nothing was changed"):
        store.restore("b1")
    assert snapshot(storage) == before


# -- prune -----------------------------------------------------------------------------


def test_prune_keeps_n_and_the_protected_and_cleans_partials_and_asides(
    tmp_path: Path,
) -> None:
    storage, env = make_storage(tmp_path)
    store = BackupStore(tmp_path / "backups")
    for n in range(1, 5):
        (storage / "documents" / f"{n}.json").write_text(str(n))
        store.start(f"b{n}", sources_of(storage, env)).finish()
    store.restore("b2")
    store.restore("b4")
    (store.root / "b5.partial" / "data").mkdir(parents=True)  # a crashed writer's
    (store.root / ".trash-b0").mkdir()  # a crashed prune's
    running = store.start("b6", sources_of(storage, env))  # a writer still at work

    removed = store.prune(keep=1, protect={"b1"})

    assert removed == ["b3", "b2"]
    assert [b.id for b in store.list()] == ["b4", "b1"]
    assert not (store.root / "b5.partial").exists()
    assert not (store.root / ".trash-b0").exists()
    assert (store.root / "b6.partial").exists()
    assert not (tmp_path / "storage.rollhook-aside-b2").exists()
    assert (tmp_path / "storage.rollhook-aside-b4").exists()
    assert not (tmp_path / ".env.rollhook-aside-b2").exists()
    assert (tmp_path / ".env.rollhook-aside-b4").exists()
    # The survivors are intact although they shared inodes with what was removed.
    assert snapshot(data_dir(store, "b4", 0)) == snapshot(storage)
    running.finish()
    assert store.list()[0].id == "b6"


def test_prune_with_nothing_there(tmp_path: Path) -> None:
    assert BackupStore(tmp_path / "none").prune(keep=3) == []


# -- errors and secrets ------------------------------------------------------------------


def test_unwritable_store_is_an_infrastructure_error_naming_the_path(tmp_path: Path) -> None:
    storage, env = make_storage(tmp_path)
    (tmp_path / "blocker").write_text("a file where a directory should be")
    store = BackupStore(tmp_path / "blocker" / "backups")
    with pytest.raises(InfrastructureError, match="blocker"):
        store.start("b1", sources_of(storage, env))


def test_unknown_or_invalid_backup_ids_are_operator_errors(tmp_path: Path) -> None:
    store = BackupStore(tmp_path / "backups")
    with pytest.raises(OperatorError, match="no backup"):
        store.restore("nope")
    with pytest.raises(OperatorError, match="invalid"):
        store.get("../etc")


def test_secrets_in_the_env_file_never_reach_the_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage, env = make_storage(tmp_path)
    store = BackupStore(tmp_path / "backups")
    with caplog.at_level(logging.DEBUG):
        running = store.start("b1", sources_of(storage, env))
        env.write_text(f"{SECRET}\nNEW='x'\n")
        running.finish()
        mutate(storage, env)
        store.restore("b1")
        store.prune(keep=0)
    assert caplog.records  # something was logged ...
    assert "do-not-log" not in caplog.text  # ... and no secret in it


@pytest.mark.parametrize(
    ("rel", "live"),
    [
        ("anythingllm.db-wal", True),
        ("anythingllm.db-journal", True),
        ("x.sqlite-shm", True),
        (".env", True),
        ("lancedb/ws.lance/_latest.manifest", True),
        ("lancedb/ws.lance/_versions/3.manifest", True),
        ("lancedb/ws.lance/_transactions/2-abc.txn", True),
        ("lancedb/ws.lance/_indices/uuid/index.idx", True),
        ("lancedb/ws.lance/data/abc.lance", False),
        ("lancedb/ws.lance/_deletions/1-2.arrow", False),
        ("documents/_versions/x.json", False),  # not under a LanceDB tree
        ("vector-cache/abc.json", False),
        ("models/downloaded/model.gguf", False),
    ],
)
def test_which_files_are_live_by_name(rel: str, live: bool) -> None:
    assert is_live_name(rel) is live


# -- what the app may plant: symlinks, swapped directories, mounts --------------------------
#
# The app container writes inside the directories mounted into it: it can make any entry
# there a symlink, or swap a directory for one while rollhook reads it. rollhook runs as
# root on the host: none of that may make it read or write outside the data.


def victim_files(root: Path) -> dict[str, tuple[Any, ...]]:
    """Host files the app must never get rollhook to touch."""
    victim = root / "victim"
    _write(victim / "authorized_keys", b"ssh-ed25519 AAAA the-admin\n", mode=0o600, owner=(0, 0))
    _write(victim / "sshdir" / "id_ed25519", b"host key\n", mode=0o600, owner=(0, 0))
    return snapshot(victim)


def nested_layout(tmp_path: Path, *extra: str) -> tuple[Path, Path, list[Source]]:
    """anything-llm's documented layout: the storage dir, and its .env mounted as a file."""
    storage, _ = make_storage(tmp_path)
    env = storage / ".env"
    _write(env, f"{SECRET}\n".encode(), mode=0o600)
    for rel in extra:
        (storage / rel).mkdir(parents=True, exist_ok=True)
        _write(storage / rel / "conf.json", b"{}")
    sources = [Source(f"bind:{storage}", storage), Source(f"bind:{env}", env)]
    sources += [Source(f"bind:{storage / rel}", storage / rel) for rel in extra]
    return storage, env, sources


def plant_symlink(path: Path, target: Path) -> None:
    """The app replaces an entry of its data with a symlink (as its own user)."""
    files.remove(str(path))
    os.symlink(target, path)
    os.chown(path, APP_UID, APP_GID, follow_symlinks=False)


def rollhook_leftovers(root: Path) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, n), root)
        for d, dirs, names in os.walk(root)
        for n in [*dirs, *names]
        if "rollhook" in n
    )


def test_restore_refuses_a_symlink_planted_at_a_nested_source_and_changes_nothing(
    tmp_path: Path,
) -> None:
    # The attack: the app writes a payload into .env, swaps .env for a symlink to a host
    # file and crashes; the health gate fails and the rollback restores as root.
    victim = victim_files(tmp_path)
    storage, env, sources = nested_layout(tmp_path)
    store = BackupStore(tmp_path / "backups")
    store.start("b1", sources).finish()
    env.write_text("payload\n")
    plant_symlink(env, tmp_path / "victim" / "authorized_keys")
    live = snapshot(storage)

    with pytest.raises(OperatorError, match=r"symlink") as caught:
        store.restore("b1")

    assert str(env) in str(caught.value)
    assert "nothing was changed" in str(caught.value)
    assert snapshot(tmp_path / "victim") == victim
    assert snapshot(storage) == live  # not even the storage dir was swapped
    assert rollhook_leftovers(tmp_path) == []  # nothing staged or set aside


def test_restore_refuses_a_nested_directory_source_swapped_for_a_symlink(tmp_path: Path) -> None:
    victim = victim_files(tmp_path)
    storage, _, sources = nested_layout(tmp_path, "sub")
    store = BackupStore(tmp_path / "backups")
    store.start("b1", sources).finish()
    plant_symlink(storage / "sub", tmp_path / "victim" / "sshdir")
    live = snapshot(storage)

    with pytest.raises(OperatorError, match=r"symlink"):
        store.restore("b1")

    assert snapshot(tmp_path / "victim") == victim
    assert snapshot(storage) == live
    assert rollhook_leftovers(tmp_path) == []


def test_restore_refuses_a_symlink_on_the_way_to_a_nested_source(tmp_path: Path) -> None:
    # Not the source itself but a directory above it, inside the storage dir.
    victim = victim_files(tmp_path)
    storage, _ = make_storage(tmp_path)
    conf = storage / "conf"
    _write(conf / "authorized_keys", b"backed up\n", mode=0o600)
    sources = [Source("bind:storage", storage), Source("bind:keys", conf / "authorized_keys")]
    store = BackupStore(tmp_path / "backups")
    store.start("b1", sources).finish()
    plant_symlink(conf, tmp_path / "victim")

    with pytest.raises(OperatorError, match=r"symlink"):
        store.restore("b1")

    assert snapshot(tmp_path / "victim") == victim
    assert rollhook_leftovers(tmp_path) == []


def test_backup_refuses_a_nested_source_that_is_a_symlink(tmp_path: Path) -> None:
    # Planted before the backup: pass 1 must not copy the host file it points to, and the
    # backup (so the deployment, with the old version still serving) stops there.
    victim_files(tmp_path)
    _, env, sources = nested_layout(tmp_path)
    plant_symlink(env, tmp_path / "victim" / "authorized_keys")
    store = BackupStore(tmp_path / "backups")

    with pytest.raises(OperatorError, match=r"symlink"):
        store.estimate(sources)
    with pytest.raises(OperatorError, match=r"symlink") as caught:
        store.start("b1", sources)

    assert str(env) in str(caught.value)
    assert not store.root.exists()  # refused before anything was written


def test_a_refusal_names_the_planted_symlink_even_when_it_points_at_the_root(
    tmp_path: Path,
) -> None:
    # storage/.env -> / puts every path "inside" the app's data, so the operator's own
    # link (work/storage -> mnt/storage) looks refused too: the culprit must be named.
    (tmp_path / "mnt").mkdir()
    real_storage, _ = make_storage(tmp_path / "mnt")
    (tmp_path / "work").mkdir()
    os.symlink(real_storage, tmp_path / "work" / "storage")
    env = real_storage / ".env"
    os.symlink("/", env)
    storage = tmp_path / "work" / "storage"
    sources = [Source("bind:storage", storage), Source("bind:env", storage / ".env")]

    with pytest.raises(OperatorError, match=r"symlink") as caught:
        BackupStore(tmp_path / "backups").start("b1", sources)

    assert f"{env} is a symlink inside {real_storage}" in str(caught.value)


def test_prune_never_follows_a_planted_symlink_to_find_leftovers(tmp_path: Path) -> None:
    _, env, sources = nested_layout(tmp_path)
    store = BackupStore(tmp_path / "backups")
    store.start("b1", sources).finish()
    store.start("b2", sources).finish()
    victim = tmp_path / "victim"
    _write(victim / "authorized_keys.rollhook-aside-b1", b"not rollhook's", owner=(0, 0))
    plant_symlink(env, victim / "authorized_keys")

    assert store.prune(keep=1) == ["b1"]

    assert (victim / "authorized_keys.rollhook-aside-b1").read_bytes() == b"not rollhook's"


def test_a_symlink_the_operator_set_up_at_the_top_is_followed_while_unchanged(
    tmp_path: Path,
) -> None:
    # work/storage -> /mnt/data/storage: set up on the host, where the app cannot write.
    (tmp_path / "mnt").mkdir()
    real_storage, _ = make_storage(tmp_path / "mnt")
    work = tmp_path / "work"
    work.mkdir()
    os.symlink(real_storage, work / "storage")
    env = work / "storage" / ".env"
    _write(env, f"{SECRET}\n".encode(), mode=0o600)
    sources = [Source("bind:storage", work / "storage"), Source("bind:env", env)]
    store = BackupStore(tmp_path / "backups")
    info = store.start("b1", sources).finish()
    assert info.sources[0].resolved == str(real_storage)
    assert info.sources[1].resolved == str(real_storage / ".env")
    mutate(real_storage, env)

    result = store.restore("b1")

    assert [s.action for s in result.sources] == ["replaced", "included"]
    assert os.path.islink(work / "storage")  # the operator's link is kept ...
    assert snapshot(real_storage) == snapshot(data_dir(store, "b1", 0))  # ... and followed
    assert (tmp_path / "mnt" / "storage.rollhook-aside-b1").is_dir()

    # Pointed elsewhere since the backup: not the place that was backed up any more.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.unlink(work / "storage")
    os.symlink(elsewhere, work / "storage")
    with pytest.raises(OperatorError, match=r"symlink"):
        store.restore("b1")
    assert os.listdir(elsewhere) == []


def test_pass_1_never_follows_a_directory_swapped_for_a_symlink_after_it_was_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = tmp_path / "storage"
    _write(storage / "first.json", b"{}")
    _write(storage / "a" / "own.json", b"the app's")
    secret = tmp_path / "host"
    _write(secret / "shadow", b"root:$6$hash", mode=0o600, owner=(0, 0))
    real = files.copy_data
    swapped = []

    def swap_then_copy(src: int, dst: int) -> int:
        # first.json is copied after storage/ was listed and before a/ is entered
        if not swapped:
            os.rename(storage / "a", storage / "a.old")
            os.symlink(secret, storage / "a")
            swapped.append(True)
        return real(src, dst)

    monkeypatch.setattr(files, "copy_data", swap_then_copy)
    store = BackupStore(tmp_path / "backups")
    running = store.start("b1", [Source("volume:storage", storage)])
    monkeypatch.undo()

    assert swapped
    partial = data_dir(store, "b1.partial", 0)
    copied = [os.path.basename(p) for p, _, names in os.walk(partial) for p in names]
    assert "shadow" not in copied
    running.finish()
    assert snapshot(data_dir(store, "b1", 0)) == snapshot(storage)
    assert os.readlink(data_dir(store, "b1", 0) / "a") == str(secret)  # kept as a link


def test_files_are_read_through_the_directory_that_was_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Swapping a directory for a symlink once rollhook is inside it redirects nothing.
    storage = tmp_path / "storage"
    _write(storage / "a" / "1.json", b"one")
    _write(storage / "a" / "2.json", b"two")
    secret = tmp_path / "host"
    _write(secret / "1.json", b"host secret 1", owner=(0, 0))
    _write(secret / "2.json", b"host secret 2", owner=(0, 0))
    real = files.copy_data
    swapped = []

    def swap_then_copy(src: int, dst: int) -> int:
        if not swapped:
            os.rename(storage / "a", storage / "a.old")
            os.symlink(secret, storage / "a")
            swapped.append(True)
        return real(src, dst)

    monkeypatch.setattr(files, "copy_data", swap_then_copy)
    store = BackupStore(tmp_path / "backups")
    running = store.start("b1", [Source("volume:storage", storage)])
    monkeypatch.undo()

    partial = data_dir(store, "b1.partial", 0) / "a"
    assert sorted(p.read_bytes() for p in partial.iterdir()) == [b"one", b"two"]
    running.abort()


def test_the_walk_does_not_cross_into_other_mounts(tmp_path: Path) -> None:
    storage, env = make_storage(tmp_path)
    host = tmp_path / "host"
    _write(host / "secret", b"host data", owner=(0, 0))
    (storage / "tmpfs").mkdir()
    (storage / "bound").mkdir()
    mounted: list[Path] = []
    try:
        for args, where in [
            (["-t", "tmpfs", "none"], storage / "tmpfs"),
            (["--bind", str(host)], storage / "bound"),  # the same filesystem: same st_dev
        ]:
            if subprocess.run(["mount", *args, str(where)], check=False).returncode != 0:
                pytest.skip("cannot mount here")
            mounted.append(where)
        (storage / "tmpfs" / "other-fs").write_text("another filesystem")
        store = BackupStore(tmp_path / "backups")
        info = store.start("b1", sources_of(storage, env)).finish()
        estimate = store.estimate(sources_of(storage, env))
    finally:
        for where in reversed(mounted):
            subprocess.run(["umount", str(where)], check=True)
    copy = data_dir(store, "b1", 0)
    assert not (copy / "tmpfs").exists()
    assert not (copy / "bound").exists()
    notes = " ".join(info.sources[0].notes)
    assert "tmpfs" in notes and "bound" in notes and "mount" in notes
    assert estimate < 500_000


def test_the_final_pass_refuses_a_symlink_planted_after_pass_1(tmp_path: Path) -> None:
    victim = victim_files(tmp_path)
    _, env, sources = nested_layout(tmp_path)
    store = BackupStore(tmp_path / "backups")
    running = store.start("b1", sources)
    plant_symlink(env, tmp_path / "victim" / "authorized_keys")

    with pytest.raises(OperatorError, match=r"symlink"):
        running.finish()

    assert store.list() == []
    assert sorted(os.listdir(store.root)) == [".lock"]
    assert snapshot(tmp_path / "victim") == victim


def test_a_backup_made_before_real_paths_were_recorded_is_restored_by_the_same_rule(
    tmp_path: Path,
) -> None:
    victim = victim_files(tmp_path)
    storage, env, sources = nested_layout(tmp_path)
    store = BackupStore(tmp_path / "backups")
    store.start("b1", sources).finish()
    manifest = store.root / "b1" / "manifest.json"
    data = json.loads(manifest.read_text())
    for source in data["sources"]:
        del source["resolved"]
    manifest.write_text(json.dumps(data))
    assert store.get("b1").sources[0].resolved is None
    mutate(storage, env)

    result = store.restore("b1")

    assert [s.action for s in result.sources] == ["replaced", "included"]
    assert snapshot(storage) == snapshot(data_dir(store, "b1", 0))
    plant_symlink(env, tmp_path / "victim" / "authorized_keys")
    with pytest.raises(OperatorError, match=r"symlink"):
        store.restore("b1")
    assert snapshot(tmp_path / "victim") == victim


@pytest.mark.parametrize("swap_for", ["symlink", "directory"])
def test_scan_never_enters_a_directory_swapped_after_it_was_listed(
    tmp_path: Path, swap_for: str
) -> None:
    root = tmp_path / "data"
    _write(root / "first", b"x")
    _write(root / "a" / "own", b"the app's")
    host = tmp_path / "host"
    _write(host / "secret", b"host data", owner=(0, 0))

    def scan(strict: bool) -> list[str]:
        found = []
        for entry in files.scan(str(root), strict=strict):
            found.append(entry.rel)
            if entry.rel == "first" and not os.path.islink(root / "a"):
                os.rename(root / "a", tmp_path / "a.old")
                if swap_for == "symlink":
                    os.symlink(host, root / "a")
                else:  # another directory, with the name that was listed
                    shutil.copytree(host, root / "a")
        return found

    found = scan(strict=False)
    assert "a" in found and "a/secret" not in found and "a/own" not in found
    shutil.rmtree(tmp_path / "a.old")
    files.remove(str(root / "a"))
    _write(root / "a" / "own", b"the app's")
    with pytest.raises(FileNotFoundError):
        scan(strict=True)


def test_scan_of_a_deep_chain_holds_few_descriptors(tmp_path: Path) -> None:
    root = tmp_path / "deep"
    os.makedirs(root)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(300):  # one directory in the next, 300 deep
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)
    before = len(os.listdir("/proc/self/fd"))
    most = 0
    for entry in files.scan(str(root)):
        most = max(most, len(os.listdir("/proc/self/fd")) - before)
        assert entry.rel.count("/") < 300
    assert most <= 4
