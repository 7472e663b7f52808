"""Consistent copies of a live SQLite database with the online backup API (workers.backup.sqlite).

The app (``sqlite_app.Writer``) is another process committing transactions whose
invariants a torn copy breaks: a byte copy of its database taken the same way fails them
in most attempts on this machine.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.workers.sqlite_app import Writer, check_copy, make_database
from workers.backup import sqlite


@pytest.fixture
def writer_factory() -> Iterator[list[Writer]]:
    writers: list[Writer] = []
    yield writers
    for writer in writers:
        writer.stop()


def copy(live: Path, dest: Path, timeout: float = 30.0) -> sqlite.DatabaseCopy:
    fd = os.open(live.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return sqlite.copy_database(
            fd, live.name, dir_path=str(live.parent), dest=str(dest), timeout=timeout
        )
    finally:
        os.close(fd)


@pytest.mark.parametrize("mode", ["WAL", "DELETE"])
def test_copies_taken_while_a_process_keeps_writing_are_consistent(
    tmp_path: Path, writer_factory: list[Writer], mode: str
) -> None:
    live = tmp_path / "data" / "anythingllm.db"
    live.parent.mkdir()
    make_database(live, mode)
    writer = Writer(live, mode)
    writer_factory.append(writer)
    seen = writer.commits(at_least=200)
    lasts = []
    for n in range(5):
        dest = tmp_path / f"copy-{n}.db"
        result = copy(live, dest)
        # Complete on its own: nothing beside it that a restore would have to carry.
        assert sorted(p.name for p in tmp_path.glob(f"{dest.name}*")) == [dest.name]
        assert result.wal == (mode == "WAL")
        assert result.pages > 0
        lasts.append(check_copy(dest))
        seen = writer.commits(at_least=seen + 50)  # the app went on writing meanwhile
    # Each copy is a later state than the one before: the writes between them are in it.
    assert lasts == sorted(lasts)
    assert lasts[0] >= 200
    assert lasts[-1] > lasts[0]


def test_committed_transactions_still_in_the_wal_are_in_the_copy(tmp_path: Path) -> None:
    live = tmp_path / "app.db"
    make_database(live, "WAL")
    app = sqlite3.connect(live, isolation_level=None)
    app.execute("PRAGMA wal_autocheckpoint=0")  # everything stays in -wal
    for seq in range(1, 51):
        app.execute("INSERT INTO ledger VALUES (?, 'x')", (seq,))
    assert Path(f"{live}-wal").stat().st_size > 0
    dest = tmp_path / "copy.db"
    copy(live, dest)
    app.close()
    assert check_copy(dest) == 50


@pytest.mark.parametrize("mode", ["WAL", "DELETE"])
def test_a_database_nobody_has_open_is_copied_without_touching_its_directory(
    tmp_path: Path, mode: str
) -> None:
    live = tmp_path / "data" / "app.db"
    live.parent.mkdir()
    make_database(live, mode, filler_rows=10)
    os.chown(live, 1000, 1000)
    before = {p.name: p.stat() for p in live.parent.iterdir()}
    result = copy(live, tmp_path / "copy.db")
    after = {p.name: p.stat() for p in live.parent.iterdir()}
    assert sorted(after) == ["app.db"]  # no -wal or -shm made for the copy
    assert after["app.db"].st_ctime_ns == before["app.db"].st_ctime_ns
    if mode == "WAL":  # copied by descriptor, as it was
        assert (tmp_path / "copy.db").read_bytes() == live.read_bytes()
    assert result.bytes == live.stat().st_size
    assert check_copy(tmp_path / "copy.db") == 0


def test_the_copy_keeps_owner_mode_and_mtime(tmp_path: Path) -> None:
    live = tmp_path / "app.db"
    make_database(live, "DELETE")
    os.chown(live, 1000, 1000)
    os.chmod(live, 0o640)
    os.utime(live, ns=(1_600_000_000_000_000_000, 1_600_000_000_123_456_789))
    dest = tmp_path / "copy.db"
    copy(live, dest)
    st = dest.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1000, 1000, 0o640)
    assert st.st_mtime_ns == 1_600_000_000_123_456_789


def test_a_database_is_found_by_its_header_not_its_name(tmp_path: Path) -> None:
    make_database(tmp_path / "store.bin", "DELETE")
    (tmp_path / "fake.db").write_bytes(b"not a database at all, just bytes")
    (tmp_path / "link.db").symlink_to(tmp_path / "store.bin")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert sqlite.is_database(fd, "store.bin")
        assert not sqlite.is_database(fd, "fake.db")
        assert not sqlite.is_database(fd, "link.db")  # never followed
        with pytest.raises(sqlite.NotCopied, match="not an SQLite database"):
            sqlite.copy_database(fd, "fake.db", dir_path=str(tmp_path), dest=str(tmp_path / "c"))
    finally:
        os.close(fd)
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    ("name", "base"),
    [
        ("a.db-wal", "a.db"),
        ("a.db-shm", "a.db"),
        ("x-journal", "x"),
        ("a.db", None),
        ("-wal", None),
    ],
)
def test_companion_names(name: str, base: str | None) -> None:
    assert sqlite.base_of_companion(name) == base


def test_a_companion_planted_as_a_symlink_is_never_opened(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    make_database(outside / "secret.db", "WAL")
    data = tmp_path / "data"
    data.mkdir()
    make_database(data / "app.db", "WAL")
    (data / "app.db-wal").symlink_to(outside / "secret.db-wal")
    with pytest.raises(sqlite.NotCopied, match=r"app\.db-wal is not a regular file"):
        copy(data / "app.db", tmp_path / "copy.db")
    assert not (tmp_path / "copy.db").exists()


def test_a_directory_swapped_for_a_symlink_after_the_walk_is_caught(tmp_path: Path) -> None:
    """SQLite opens by path: had it followed a swapped directory, the copy is thrown away."""
    outside = tmp_path / "outside"
    outside.mkdir()
    make_database(outside / "app.db", "DELETE")
    data = tmp_path / "data" / "sub"
    data.mkdir(parents=True)
    make_database(data / "app.db", "DELETE")
    fd = os.open(data, os.O_RDONLY | os.O_DIRECTORY)  # the walk holds the real directory
    try:
        data.rename(tmp_path / "data" / "sub.real")
        data.symlink_to(outside)  # ...and the app swaps the path for a symlink
        with pytest.raises(sqlite.NotCopied, match="did not open the file that was checked"):
            sqlite.copy_database(fd, "app.db", dir_path=str(data), dest=str(tmp_path / "c.db"))
    finally:
        os.close(fd)
    assert not (tmp_path / "c.db").exists()


def test_a_database_locked_past_the_deadline_is_not_copied_and_the_app_keeps_its_lock(
    tmp_path: Path,
) -> None:
    live = tmp_path / "app.db"
    make_database(live, "DELETE")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "c.execute('BEGIN EXCLUSIVE')\n"
            "c.execute('INSERT INTO ledger VALUES (1, 1)')\n"
            "print('locked', flush=True)\n"
            "sys.stdin.readline()\n"
            "c.execute('COMMIT')\n"
            "print('committed', flush=True)\n",
            str(live),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(sqlite.NotCopied, match="locked"):
            copy(live, tmp_path / "copy.db", timeout=1.0)
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline() == "committed\n"
    finally:
        holder.kill()
        holder.communicate()
    assert not (tmp_path / "copy.db").exists()
