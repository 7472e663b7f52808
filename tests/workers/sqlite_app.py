"""An app that keeps writing an SQLite database, and the checks a consistent copy passes.

The app is another process committing transactions that keep two invariants: the
accounts' balances always sum to zero, and every transaction appends one row to a ledger
numbered without gaps. A copy holding half a transaction, or pages from two, breaks one
of them (or SQLite's integrity_check).
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

WRITER = r"""
import random, sqlite3, sys, time
path, mode, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])
conn = sqlite3.connect(path, isolation_level=None, timeout=30)
conn.execute(f"PRAGMA journal_mode={mode}")
conn.execute("PRAGMA synchronous=OFF")  # speed: durability is not what is tested
if mode == "WAL":
    conn.execute("PRAGMA wal_autocheckpoint=50")
rng = random.Random(7)
seq = conn.execute("SELECT coalesce(max(seq), 0) FROM ledger").fetchone()[0]
while True:
    a, b = rng.sample(range(100), 2)
    amount = rng.randint(1, 1000)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?", (amount, a))
    conn.execute("UPDATE accounts SET balance = balance + ? WHERE id = ?", (amount, b))
    seq += 1
    note = rng.randint(10, 4000)
    conn.execute("INSERT INTO ledger (seq, note) VALUES (?, randomblob(?))", (seq, note))
    conn.execute("COMMIT")
    if pause:
        time.sleep(pause)
"""


def make_database(path: Path, mode: str, *, filler_rows: int = 2000) -> None:
    """The app's database; ``filler_rows`` of 4 kB put megabytes between its tables."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode={mode}")
    # One account per page or so: a transfer touches pages far apart, which a byte copy
    # read while it commits can catch half-written.
    conn.execute(
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, pad BLOB)"
    )
    conn.execute("CREATE TABLE ledger (seq INTEGER PRIMARY KEY, note BLOB)")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO accounts VALUES (?, 0, zeroblob(3000))", [(i,) for i in range(100)]
    )
    conn.execute("CREATE TABLE filler (data BLOB)")
    conn.executemany("INSERT INTO filler VALUES (randomblob(4000))", [()] * filler_rows)
    conn.execute("COMMIT")
    conn.close()


class Writer:
    """The app: a process that commits until stopped (``pause``: seconds between commits)."""

    def __init__(self, path: Path, mode: str, *, pause: float = 0.0) -> None:
        self.path = path
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), mode, str(pause)],
            stdout=subprocess.DEVNULL,
        )

    def commits(self, at_least: int, timeout: float = 60.0) -> int:
        """Wait until ``at_least`` transactions are committed; the count then."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, "the writer died"
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
            try:
                seq = int(conn.execute("SELECT coalesce(max(seq), 0) FROM ledger").fetchone()[0])
            finally:
                conn.close()
            if seq >= at_least:
                return seq
            assert time.monotonic() < deadline, f"the writer made {seq} of {at_least} commits"
            time.sleep(0.01)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def check_copy(path: Path) -> int:
    """The copy is a sound database whose invariants hold; returns its last ledger row."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT sum(balance) FROM accounts").fetchone()[0] == 0
        count, last = conn.execute("SELECT count(*), coalesce(max(seq), 0) FROM ledger").fetchone()
    finally:
        conn.close()
    assert count == last, "the ledger has a gap: the copy holds part of a transaction"
    return int(last)
