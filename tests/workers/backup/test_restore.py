"""Restore by rename, as the rollback and ``rollhook restore`` use it: every source put
back, and a restore cut short by a crash finished by running it again."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.workers.backup.tree import (
    ROOT_ONLY,
    SECRET,
    data_dir,
    make_storage,
    mutate,
    rows_of_copy,
    snapshot,
    sources_of,
    write_file,
)
from workers.backup import BackupStore, Source, files
from workers.errors import InfrastructureError

pytestmark = ROOT_ONLY


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
    write_file(env, f"{SECRET}\n".encode(), mode=0o600)
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


@pytest.mark.parametrize(
    ("step", "nth"),
    [
        ("stage_copy", 2),  # one source staged, the next not
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
