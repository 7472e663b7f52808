"""Fixtures that make the backup's races and crashes happen on cue."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.workers.backup.tree import App
from workers.backup import files
from workers.backup import restore as restore_module


@pytest.fixture
def racing_copies(monkeypatch: pytest.MonkeyPatch) -> Callable[[App], None]:
    """Make every pass-1 file copy wait for an app commit after its stat was taken.

    That is the window where a backup that trusted the pass-1 stat would keep a stale
    or torn copy; without this, whether the thread hits it is luck.
    """

    def install(app: App) -> None:
        real = files.copy_data

        def racing(src: int, dst: int) -> int:
            app.wait_for_commits()
            return real(src, dst)

        monkeypatch.setattr(files, "copy_data", racing)

    return install


@pytest.fixture
def crash_once(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, int], None]:
    """Make the n-th call of a restore step raise, as if the worker died right there."""

    def install(name: str, n: int) -> None:
        real = getattr(restore_module, name)
        calls = {"n": 0}

        def crashing(*args: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == n:
                monkeypatch.undo()
                raise RuntimeError("worker died")
            return real(*args)

        monkeypatch.setattr(restore_module, name, crashing)

    return install
