"""Unchanged files are hard links to the previous backup; nothing that links there ever
alters the older backup."""

from __future__ import annotations

import os
from pathlib import Path

from tests.workers.backup.tree import (
    ROOT_ONLY,
    data_dir,
    make_storage,
    snapshot,
    sources_of,
)
from workers.backup import BackupStore

pytestmark = ROOT_ONLY


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
