"""The rollback's copy made from a backup's pass 1 (``workers.backup.early``): once the
backup is sealed only the final pass's changes are copied into it, and what a restore
then swaps in equals the sealed backup."""

from __future__ import annotations

import os
from pathlib import Path

from tests.workers.backup.tree import (
    ROOT_ONLY,
    data_dir,
    make_storage,
    mutate,
    snapshot,
    sources_of,
)
from workers.backup import BackupStore
from workers.backup.restore import STAGED

pytestmark = ROOT_ONLY


def test_the_copy_from_pass_1_gets_only_the_final_pass_delta(tmp_path: Path) -> None:
    storage, env = make_storage(tmp_path)
    store = BackupStore(tmp_path / "backups")
    running = store.start("b1", sources_of(storage, env))
    early = store.stage_early(running)
    first = tmp_path / f"storage{STAGED}b1.pass1"
    assert snapshot(first) == snapshot(storage)
    model = first / "models" / "downloaded" / "model.gguf"
    model_inode = os.stat(model).st_ino
    mutate(storage, env)  # between the passes, while the app still runs
    running.finish()

    assert store.stage_restore("b1", early=early) == 2
    staged = tmp_path / f"storage{STAGED}b1"
    assert not first.exists()  # renamed once it equals the backup
    assert snapshot(staged) == snapshot(data_dir(store, "b1", 0))
    assert os.stat(staged / "models" / "downloaded" / "model.gguf").st_ino == model_inode
    assert (tmp_path / f".env{STAGED}b1").read_bytes() == env.read_bytes()

    store.restore("b1")
    assert snapshot(storage) == snapshot(data_dir(store, "b1", 0))
    assert not list(tmp_path.glob(f"*{STAGED}*"))


def test_a_copy_from_pass_1_is_not_trusted_by_another_process(tmp_path: Path) -> None:
    """Without the memory of what was copied (a worker that died), the restore copies
    the backup whole; the stale .pass1 goes with the gate's discard."""
    storage, env = make_storage(tmp_path)
    store = BackupStore(tmp_path / "backups")
    running = store.start("b1", sources_of(storage, env))
    store.stage_early(running)
    mutate(storage, env)
    running.finish()

    store.stage_restore("b1")  # no early: as a worker that took over would
    staged = tmp_path / f"storage{STAGED}b1"
    assert snapshot(staged) == snapshot(data_dir(store, "b1", 0))
    assert (tmp_path / f"storage{STAGED}b1.pass1").exists()
    removed = store.discard_staged("b1")
    assert len(removed) == 4
    assert not list(tmp_path.glob(f"*{STAGED}*"))


def test_a_stale_copy_from_pass_1_is_removed_by_the_next_one(tmp_path: Path) -> None:
    storage, env = make_storage(tmp_path)
    store = BackupStore(tmp_path / "backups")
    dead = store.start("b1", sources_of(storage, env))
    store.stage_early(dead)
    dead.abort()  # the worker died; its attempt's backup is never sealed
    running = store.start("b2", sources_of(storage, env))
    store.stage_early(running)
    assert sorted(p.name for p in tmp_path.glob(f"*{STAGED}*")) == [
        f".env{STAGED}b2.pass1",
        f"storage{STAGED}b2.pass1",
    ]
