"""An anything-llm storage tree on the real filesystem, and an app thread that keeps
changing it, for the backup tests (run as root: owners are set to anything-llm's
1000:1000 and others). The "app" commits real SQLite transactions and rewrites
LanceDB-style metadata and the runtime .env in place, as anything-llm does.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from workers.backup import BackupStore, Source, files

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="owners can only be set by root")
SECRET = "SIG_KEY='do-not-log-this-7f3a9c1e5b'"
APP_UID, APP_GID = 1000, 1000
MANIFEST_SIZE = 512


# -- an anything-llm storage tree --------------------------------------------------------


def write_file(
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
    write_file(table / "_latest.manifest", b"m" * MANIFEST_SIZE)
    write_file(table / "_versions" / "1.manifest", b"v" * MANIFEST_SIZE)
    write_file(table / "data" / "0a1b.lance", rng.randbytes(300_000))
    write_file(storage / "documents" / "custom-documents" / "doc.json", b'{"pageContent": "hello"}')
    write_file(storage / "vector-cache" / "abc.json", rng.randbytes(20_000), mode=0o640)
    write_file(storage / "models" / "downloaded" / "model.gguf", rng.randbytes(2_000_000))
    (storage / "plugins" / "empty").mkdir(parents=True)
    for path in [*storage.rglob("*"), storage]:
        if path.is_dir():
            os.chown(path, APP_UID, APP_GID)
    os.chown(storage / "anythingllm.db", APP_UID, APP_GID)
    env = root / ".env"
    write_file(env, f"{SECRET}\nJWT_SECRET='0123456789abcdef'\n".encode(), mode=0o600)
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


def victim_files(root: Path) -> dict[str, tuple[Any, ...]]:
    """Host files the app must never get rollhook to touch."""
    victim = root / "victim"
    write_file(
        victim / "authorized_keys", b"ssh-ed25519 AAAA the-admin\n", mode=0o600, owner=(0, 0)
    )
    write_file(victim / "sshdir" / "id_ed25519", b"host key\n", mode=0o600, owner=(0, 0))
    return snapshot(victim)


def nested_layout(tmp_path: Path, *extra: str) -> tuple[Path, Path, list[Source]]:
    """anything-llm's documented layout: the storage dir, and its .env mounted as a file."""
    storage, _ = make_storage(tmp_path)
    env = storage / ".env"
    write_file(env, f"{SECRET}\n".encode(), mode=0o600)
    for rel in extra:
        (storage / rel).mkdir(parents=True, exist_ok=True)
        write_file(storage / rel / "conf.json", b"{}")
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
