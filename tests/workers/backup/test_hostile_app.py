"""What the app may plant in its data (symlinks, swapped directories, mounts) never makes
rollhook, running as root, read or write outside the data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.workers.backup.tree import (
    ROOT_ONLY,
    SECRET,
    data_dir,
    make_storage,
    mutate,
    nested_layout,
    plant_symlink,
    rollhook_leftovers,
    snapshot,
    sources_of,
    victim_files,
    write_file,
)
from workers.backup import BackupStore, Source, files
from workers.errors import OperatorError

pytestmark = ROOT_ONLY


# -- what the app may plant: symlinks, swapped directories, mounts --------------------------
#
# The app container writes inside the directories mounted into it: it can make any entry
# there a symlink, or swap a directory for one while rollhook reads it. rollhook runs as
# root on the host: none of that may make it read or write outside the data.


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
    write_file(conf / "authorized_keys", b"backed up\n", mode=0o600)
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
    write_file(victim / "authorized_keys.rollhook-aside-b1", b"not rollhook's", owner=(0, 0))
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
    write_file(env, f"{SECRET}\n".encode(), mode=0o600)
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
    write_file(storage / "first.json", b"{}")
    write_file(storage / "a" / "own.json", b"the app's")
    secret = tmp_path / "host"
    write_file(secret / "shadow", b"root:$6$hash", mode=0o600, owner=(0, 0))
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
    write_file(storage / "a" / "1.json", b"one")
    write_file(storage / "a" / "2.json", b"two")
    secret = tmp_path / "host"
    write_file(secret / "1.json", b"host secret 1", owner=(0, 0))
    write_file(secret / "2.json", b"host secret 2", owner=(0, 0))
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
    write_file(host / "secret", b"host data", owner=(0, 0))
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
    write_file(root / "first", b"x")
    write_file(root / "a" / "own", b"the app's")
    host = tmp_path / "host"
    write_file(host / "secret", b"host data", owner=(0, 0))

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
    write_file(root / "a" / "own", b"the app's")
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
