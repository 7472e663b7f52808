"""Off-host snapshot benchmark: what a scheduled snapshot costs, and a restore of it.

    make bench-offsite        (or: uv run --frozen python bench/offsite.py [--sizes 10mb,1gb])

Needs root (staging keeps owners), restic and openssh-server (scripts/install-test-deps.sh).
The repository is reached over SFTP on loopback (a private sshd, key auth, as in the
tests): the path an off-host repository takes, without a network's bandwidth. The data
is an anything-llm storage folder of that size: incompressible files (documents and
vectors, 64 KiB to 1 MiB), a SQLite database of 5% of it, and the runtime ``.env``.

For each size it runs what ``workers/offsite/snapshots.py`` runs, timed per step:
1. the first snapshot: the stage's first pass (while the app would run) and the upload;
2. the final pass alone, on unchanged data: what ``final_pass: stop`` adds to the
   downtime besides the service's own stop and start (``final_pass: none``: no downtime);
3. 1% of the data changed (files rewritten, rows written into the database), then the
   second snapshot: first pass and upload, and what restic added to the repository;
4. a restore of the latest snapshot into an empty directory (what ``restore --from-remote``
   and the drill read back before they copy it into place or start the app on it).
It prints figures; it is not a pass/fail test.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from bench.offsite_app import with_app
from tests.harness.sshd import SftpServer
from workers.backup import Source
from workers.backup.remote import RemoteConfig, Repository
from workers.backup.staging import Stage

SIZES = {"10mb": ("10 MB", 10 << 20), "1gb": ("1 GB", 1 << 30)}
TAGS = ["rollhook", "target=bench"]


def say(text: str) -> None:
    print(text, flush=True)


def seed(storage: Path, size: int, rng: random.Random) -> list[Path]:
    """An anything-llm storage folder of about ``size`` bytes; its data files."""
    made: list[Path] = []
    left = size - size // 20
    n = 0
    while left > 0:
        length = min(left, rng.randint(64 << 10, 1 << 20))
        folder = storage / ("documents" if n % 3 else "lancedb") / f"{n % 16:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"item-{n:05d}.bin"
        path.write_bytes(rng.randbytes(length))
        made.append(path)
        left -= length
        n += 1
    db = sqlite3.connect(storage / "anythingllm.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE chats (id INTEGER PRIMARY KEY, body BLOB)")
    rows = max(1, (size // 20) // 4096)
    db.executemany(
        "INSERT INTO chats (body) VALUES (?)", ((rng.randbytes(4000),) for _ in range(rows))
    )
    db.commit()
    db.close()
    (storage / ".env").write_text("JWT_SECRET=bench\nSIG_KEY=bench\nSIG_SALT=bench\n")
    return made


def change(files: list[Path], size: int, rng: random.Random, storage: Path) -> int:
    """Rewrite about 1% of the data: whole files (picked at random), and rows in the database."""
    target, changed = size // 100, 0
    for path in rng.sample(files, len(files)):
        length = path.stat().st_size
        if changed + length > target * 0.8:
            continue
        path.write_bytes(rng.randbytes(length))
        changed += length
    db = sqlite3.connect(storage / "anythingllm.db")
    rows = max(1, (target - changed) // 4096)
    db.executemany(
        "INSERT INTO chats (body) VALUES (?)", ((rng.randbytes(4000),) for _ in range(rows))
    )
    db.commit()
    db.close()
    return changed + rows * 4000


def snapshot(stage: Stage, repo: Repository, sources: list[Source]) -> tuple[float, float, int]:
    """(first pass seconds, upload seconds, bytes added to the repository)."""
    began = time.monotonic()
    with stage.build("bench", sources, {}) as staged:
        staging = time.monotonic() - began
        began = time.monotonic()
        snap = repo.snapshot(
            staged.paths, cwd=staged.tree, tags=[*staged.contents.tags()], host="bench"
        )
        upload = time.monotonic() - began
    return staging, upload, snap.data_added or 0


def one_size(label: str, size: int, root: Path, server: SftpServer) -> list[str]:
    rng = random.Random(size)
    work = root / label.replace(" ", "")
    storage = work / "srv" / "anythingllm" / "storage"
    storage.mkdir(parents=True)
    say(f"{label}: writing the data...")
    files = seed(storage, size, rng)
    password = work / "password"
    password.write_text("bench-password\n")
    config = RemoteConfig(
        server.repository(work / "repository"),
        password,
        options=server.options(),
        cache_dir=work / "cache",
    )
    repo = Repository(config)
    repo.init_if_missing()
    stage = Stage(work / "stage")
    sources = [Source("volume:anythingllm_storage", storage)]

    say(f"{label}: first snapshot...")
    first = snapshot(stage, repo, sources)
    began = time.monotonic()
    with stage.build("bench", sources, {}):
        final_pass = time.monotonic() - began
    changed = change(files, size, rng, storage)
    say(f"{label}: {changed >> 20} MiB changed; second snapshot...")
    second = snapshot(stage, repo, sources)
    say(f"{label}: restoring the latest snapshot...")
    began = time.monotonic()
    repo.restore("latest", into=work / "restored", tags=TAGS)
    restore = time.monotonic() - began
    shutil.rmtree(work)
    return [
        f"| {label} | first | {first[0]:.2f} s | {first[1]:.2f} s | {sum(first[:2]):.2f} s "
        f"| {first[2] / (1 << 20):.1f} MiB | {final_pass:.2f} s | |",
        f"| {label} | second, 1% changed | {second[0]:.2f} s | {second[1]:.2f} s "
        f"| {sum(second[:2]):.2f} s ({sum(second[:2]) / sum(first[:2]):.0%} of the first) "
        f"| {second[2] / (1 << 20):.1f} MiB | | {restore:.2f} s |",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10mb,1gb", help="of: " + ", ".join(SIZES))
    parser.add_argument(
        "--app", action="store_true", help="also with the app running (bench/offsite_app.py)"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/offsite.py: run as root (staging keeps owners)", file=sys.stderr)
        return 2
    if shutil.which("restic") is None:
        print("bench/offsite.py: restic is not installed", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="rh-bench-offsite-"))
    server = SftpServer(root / "sshd", root / "logs")
    server.start()
    rows = [
        "| data | snapshot | first pass | upload | total | added to the repository "
        "| final pass alone | restore |",
        "|---|---|---|---|---|---|---|---|",
    ]
    try:
        for key in args.sizes.split(","):
            label, size = SIZES[key.strip()]
            rows += one_size(label, size, root, server)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    if args.app:
        rows += ["", *with_app([SIZES[k.strip()] for k in args.sizes.split(",")], say)]
    say("")
    for row in rows:
        say(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
