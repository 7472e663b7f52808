"""The bind-mounted runtime .env that a deployment creates when it is missing.

rollhook runs as root; the app can leave symlinks in its data. Creating the file must
never follow one, or the app chooses where root creates a file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from workers.backup import Source
from workers.plan import Plan
from workers.rollout import Rollout

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs as root, as rollhook does")


class Journal:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, line: str) -> None:
        self.lines.append(line)


def prepare(*sources: Source) -> list[str]:
    rollout = Rollout.__new__(Rollout)  # only the journal is used
    journal = Journal()
    rollout.journal = journal  # type: ignore[assignment]
    plan = Plan(
        commit="c" * 40,
        images={},
        pins={},
        config_hash="h",
        fingerprint="f",
        sources=list(sources),
    )
    rollout._prepare_bind_files(plan)
    return journal.lines


def bind(path: Path) -> Source:
    return Source(f"bind:{path}", path)


def test_a_missing_env_is_created_empty_and_private(tmp_path: Path) -> None:
    env = tmp_path / "work" / ".env"
    lines = prepare(bind(env), bind(tmp_path / "work" / "storage"))
    st = os.lstat(env)
    assert stat.S_ISREG(st.st_mode) and st.st_size == 0
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert lines and "created empty" in lines[0]
    assert prepare(bind(env)) == []  # there now: left alone
    env.write_text("KEY=1\n")
    prepare(bind(env))
    assert env.read_text() == "KEY=1\n"


def test_a_dangling_env_symlink_is_never_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    os.symlink(victim / "ld.so.preload", work / ".env")

    lines = prepare(bind(work / ".env"))

    assert os.listdir(victim) == []
    assert os.path.islink(work / ".env")
    assert len(lines) == 1 and "symlink" in lines[0]


def test_a_symlink_planted_in_the_storage_dir_is_never_followed(tmp_path: Path) -> None:
    # The documented layout: storage/ and storage/.env, both bind-mounted. The app owns
    # what is inside storage/.
    victim = tmp_path / "victim"
    victim.mkdir()
    storage = tmp_path / "storage"
    storage.mkdir()
    os.symlink(victim / "created-by-root", storage / ".env")
    os.symlink(victim, storage / "conf")

    lines = prepare(bind(storage), bind(storage / ".env"), bind(storage / "conf" / "x.env"))

    assert os.listdir(victim) == []
    assert len(lines) == 2 and all("symlink" in line for line in lines)


def test_the_operators_symlinks_outside_the_data_are_followed(tmp_path: Path) -> None:
    real = tmp_path / "srv" / "work"
    real.mkdir(parents=True)
    os.symlink(real, tmp_path / "work")

    prepare(bind(tmp_path / "work" / ".env"))

    assert (real / ".env").is_file()
