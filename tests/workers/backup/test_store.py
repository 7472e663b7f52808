"""The backup store: what a backup preserves, completeness and crash safety, pruning,
errors, and secrets that never reach a log line."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import stat
from pathlib import Path

import pytest

from tests.workers.backup.tree import (
    ROOT_ONLY,
    SECRET,
    data_dir,
    make_storage,
    mutate,
    snapshot,
    sources_of,
    write_file,
)
from workers.backup import BackupStore, Source
from workers.backup.files import is_live_name
from workers.errors import DeployError, InfrastructureError, OperatorError

pytestmark = ROOT_ONLY


def test_owners_modes_times_symlinks_and_empty_dirs_are_preserved(tmp_path: Path) -> None:
    storage, env = make_storage(tmp_path)
    shared = storage / "shared"
    shared.mkdir(mode=0o750)
    os.chmod(shared, 0o2750)  # noqa: S103  (a setgid directory, to see it kept)
    os.chown(shared, 1234, 5678)
    write_file(shared / "script.sh", b"#!/bin/sh\n", mode=0o4755, owner=(0, 0))
    write_file(shared / "other-owner", b"x", mode=0o400, owner=(1234, 5678))
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
