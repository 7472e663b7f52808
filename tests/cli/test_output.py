"""What the CLI prints and the exit codes scripts rely on."""

from __future__ import annotations

import io
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from importlib.metadata import version

import pytest

from cli import output
from cli.output import Progress


@pytest.mark.parametrize(
    ("statuses", "code"),
    [
        (["succeeded"], 0),
        (["no_op"], 0),
        (["succeeded", "no_op"], 0),
        (["rolled_back"], 2),
        (["succeeded", "rolled_back"], 2),
        (["failed"], 1),
        (["rolled_back", "failed"], 1),  # the worst wins
        (["superseded"], 1),  # never final for a follower: it follows the successor
    ],
)
def test_exit_codes(statuses: list[str], code: int) -> None:
    assert output.exit_code(statuses) == code


@pytest.mark.parametrize(
    "argv",
    [[], ["deploy"], ["no-such-command"], ["status", "--bogus"], ["completion", "fish"]],
)
def test_a_usage_error_exits_3(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", *argv], capture_output=True, text=True, check=False
    )
    assert done.returncode == 3, done.stderr
    assert "usage: rollhook" in done.stderr


def test_settings_that_are_wrong_exit_3() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "status"],
        capture_output=True, text=True, check=False,
        env={"PATH": "/usr/bin:/bin", "ROLLHOOK_API_TOKEN": ""},
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "ROLLHOOK_API_TOKEN" in done.stderr


def test_help_documents_the_exit_codes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "--help"], capture_output=True, text=True, check=True
    )
    assert "2 rolled back" in done.stdout and "3 usage" in done.stdout


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def started(seconds_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat(timespec="milliseconds")


def steps() -> list[dict[str, str | None]]:
    return [
        {"name": "sync", "outcome": "ok", "detail": "main at 3f2a9c1", "started_at": started(20)},
        {"name": "gate", "outcome": "running", "detail": None, "started_at": started(12.4)},
    ]


def test_on_a_terminal_the_running_step_is_a_live_line() -> None:
    out = Tty()
    progress = Progress(out)
    now = steps()
    assert progress.steps(now, 0) == 1
    assert out.getvalue() == "  sync             ok - main at 3f2a9c1\n  running gate (12 s)"
    finished = [now[0], {**now[1], "outcome": "ok", "detail": "healthy"}]
    assert progress.steps(finished, 1) == 2
    progress.end("llm", "succeeded", None)
    # The live line is cleared before the finished step takes its place.
    assert out.getvalue().endswith(
        "  running gate (12 s)\r\x1b[2K  gate             ok - healthy\nllm: succeeded\n"
    )


def test_in_a_pipe_there_is_no_live_line() -> None:
    out = io.StringIO()
    Progress(out).steps(steps(), 0)
    assert out.getvalue() == "  sync             ok - main at 3f2a9c1\n"


def test_tables_align_their_columns() -> None:
    out = io.StringIO()
    output.table(("TARGET", "STATE"), [("anythingllm", "ready"), ("b", "paused (x)")], out)
    assert out.getvalue().splitlines() == [
        "TARGET       STATE",
        "anythingllm  ready",
        "b            paused (x)",
    ]


def test_version_names_the_installed_package() -> None:
    """What an operator (and the image test) asks a rollhook for: its version, exit 0."""
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "--version"], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == f"rollhook {version('rollhook')}"
