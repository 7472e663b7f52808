"""``rollhook web`` (service/serve.py): a web process that cannot start ends it, with the
web process's own exit code, instead of being started again forever."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.ports import free_port
from tests.stack import SECRETS


def _serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.serve", "--port", str(free_port())],
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "ROLLHOOK_DATA_DIR": str(tmp_path / "data"),
            **SECRETS,
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_web_process_that_cannot_start_ends_rollhook_web(tmp_path: Path) -> None:
    config = tmp_path / "rollhook.yml"
    config.write_text("targets:\n  app: {repo: 12}\n")
    done = _serve(tmp_path, ROLLHOOK_CONFIG=str(config))
    assert done.returncode == 2, done.stderr
    # Started once, said why once, not started again.
    assert done.stderr.count("rollhook: targets.app.repo: ") == 1, done.stderr
    assert "could not start; stopping" in done.stderr


@pytest.mark.parametrize("value", ["two", "0", "\u00b2", "257"])
def test_a_bad_web_concurrency_is_one_line(tmp_path: Path, value: str) -> None:
    # '²' passes str.isdigit and makes int() raise: once a traceback, not a line.
    done = _serve(tmp_path, WEB_CONCURRENCY=value)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"rollhook: WEB_CONCURRENCY: {value!r} is not a whole number from 1 to 256"
    )
