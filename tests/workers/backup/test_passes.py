"""A backup taken while the app runs equals its data once it stopped: pass 1 copies in
bulk, the final pass catches what changed, live files are compared by content."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.workers.backup.tree import (
    MANIFEST_SIZE,
    ROOT_ONLY,
    App,
    data_dir,
    make_storage,
    rows_of_copy,
    snapshot,
    sources_of,
)
from workers.backup import BackupStore, files

pytestmark = ROOT_ONLY


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
