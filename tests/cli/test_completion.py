"""`rollhook completion bash`: a script generated from the parser, tried in a real bash."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli.main import parser

BIN = Path(sys.executable).parent


def complete(script: str, line: str, tmp_path: Path, env: dict[str, str] | None = None) -> set[str]:
    """What bash offers for ``line`` (the word under the cursor is the last one)."""
    words = line.split(" ")
    (tmp_path / "completion.bash").write_text(script)
    program = (
        f"source {tmp_path / 'completion.bash'}\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
        "_rollhook; printf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    path = f"{BIN}:{os.environ['PATH']}"  # `rollhook completion --targets` is on PATH
    done = subprocess.run(
        ["bash", "--norc", "-c", program],
        capture_output=True, text=True, check=True, env={"PATH": path, **(env or {})},
    )  # fmt: skip
    return set(done.stdout.split())


@pytest.fixture(scope="module")
def bash() -> str:
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "completion", "bash"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout


def test_it_lists_every_subcommand(bash: str, tmp_path: Path) -> None:
    offered = complete(bash, "rollhook ", tmp_path)
    names = set(parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert names <= offered
    assert {"deploy", "status", "init", "demo", "send-test-hook", "completion"} <= offered
    assert complete(bash, "rollhook de", tmp_path) == {"deploy", "demo"}


def test_it_completes_options_and_target_names(bash: str, tmp_path: Path) -> None:
    assert complete(bash, "rollhook --url http://x deploy --w", tmp_path) == {"--wait"}
    assert "--json" in complete(bash, "rollhook status --", tmp_path)
    assert complete(bash, "rollhook completion ", tmp_path) >= {"bash", "zsh"}
    config = tmp_path / "rollhook.yml"
    config.write_text(
        "targets:\n"
        "  anythingllm: {repo: 'https://g.test/a/i.git', project: a, service: s}\n"
        "  blog: {repo: 'https://g.test/a/i.git', project: b, service: s}\n"
    )
    env = {"ROLLHOOK_CONFIG": str(config), "HOME": str(tmp_path)}
    assert complete(bash, "rollhook deploy ", tmp_path, env) >= {"anythingllm", "blog"}
    assert complete(bash, "rollhook pause an", tmp_path, env) == {"anythingllm"}


def test_zsh_uses_the_same_completion_through_bashcompinit(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "completion", "zsh"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert done.stdout.startswith("#compdef rollhook\n")
    assert "bashcompinit" in done.stdout and "complete -F _rollhook rollhook" in done.stdout
