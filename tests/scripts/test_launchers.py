"""`make run`'s script and the `rollhook` on PATH: which targets file, which secrets.

The scripts run for real, in a copy of the checkout's layout whose `.venv/bin/rollhook`
is a stand-in that prints what it was given (the real one would start servers); the
last test runs the real chain: the installed link, scripts/rollhook, the venv's rollhook.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[2]
SCRIPTS = ("run-embedded.sh", "rollhook", "install-cli.sh")
STAND_IN = """#!/bin/sh
echo "rollhook $* | config=$ROLLHOOK_CONFIG | data=$ROLLHOOK_DATA_DIR \\
| token=$ROLLHOOK_API_TOKEN_FILE"
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "rollhook"
    (root / "scripts").mkdir(parents=True)
    for name in SCRIPTS:
        shutil.copy2(CHECKOUT / "scripts" / name, root / "scripts" / name)
    (root / "deploy").mkdir()
    shutil.copy2(CHECKOUT / "deploy" / "rollhook.example.yml", root / "deploy")
    venv = root / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").symlink_to(sys.executable)
    (venv / "rollhook").write_text(STAND_IN)
    (venv / "rollhook").chmod(0o755)
    return root


def run(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "HOME": str(cwd)}
    return subprocess.run(
        argv, cwd=cwd, env=base | env, capture_output=True, text=True, timeout=60, check=False
    )


def said(done: subprocess.CompletedProcess[str], command: str) -> str:
    return next(line for line in done.stdout.splitlines() if line.startswith(f"rollhook {command}"))


def test_make_run_takes_rollhook_yml_when_it_exists(checkout: Path, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    first = run(["scripts/run-embedded.sh"], checkout, ROLLHOOK_BIN_DIR=str(bin_dir))
    assert first.returncode == 0, first.stderr
    example = checkout / "deploy" / "rollhook.example.yml"
    assert f"no ./rollhook.yml: using {example}" in first.stdout
    assert f"config={example}" in said(first, "up")
    assert "generated secrets" in first.stdout
    secret = checkout / "data" / "secrets" / "api_token"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert f"token={secret}" in said(first, "up")

    (checkout / "rollhook.yml").write_text("targets: {}\n")
    second = run(["scripts/run-embedded.sh"], checkout, ROLLHOOK_BIN_DIR=str(bin_dir))
    assert f"config={checkout / 'rollhook.yml'}" in said(second, "up")
    assert "no ./rollhook.yml" not in second.stdout
    assert "generated secrets" not in second.stdout  # shown once

    chosen = tmp_path / "mine.yml"
    third = run(["scripts/run-embedded.sh"], checkout, ROLLHOOK_CONFIG=str(chosen))
    assert f"config={chosen}" in said(third, "up")


def test_the_rollhook_on_path_uses_the_checkout_from_anywhere(
    checkout: Path, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    done = run(["scripts/run-embedded.sh"], checkout, ROLLHOOK_BIN_DIR=str(bin_dir))
    assert f"{bin_dir / 'rollhook'} -> {checkout / 'scripts' / 'rollhook'}" in done.stdout
    (checkout / "rollhook.yml").write_text("targets: {}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    status = run(["rollhook", "status"], elsewhere, PATH=f"{bin_dir}:{os.environ['PATH']}")
    assert said(status, "status") == (
        f"rollhook status | config={checkout / 'rollhook.yml'} | data={checkout / 'data'} "
        f"| token={checkout / 'data' / 'secrets' / 'api_token'}"
    )
    (elsewhere / "rollhook.yml").write_text("targets: {}\n")  # ./rollhook.yml comes first
    here = run([str(bin_dir / "rollhook"), "status"], elsewhere)
    assert f"config={elsewhere / 'rollhook.yml'}" in said(here, "status")


def test_a_rollhook_that_is_not_ours_is_left_alone(checkout: Path, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "rollhook").write_text("#!/bin/sh\necho someone else's\n")
    refused = run(["scripts/install-cli.sh"], checkout, ROLLHOOK_BIN_DIR=str(bin_dir))
    assert refused.returncode == 1 and "left alone" in refused.stderr
    soft = run(["scripts/install-cli.sh", "--if-possible"], checkout, ROLLHOOK_BIN_DIR=str(bin_dir))
    assert soft.returncode == 0
    assert "someone else's" in (bin_dir / "rollhook").read_text()


def test_the_installed_rollhook_runs_this_checkout(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    done = run(
        [str(CHECKOUT / "scripts" / "install-cli.sh")], tmp_path, ROLLHOOK_BIN_DIR=str(bin_dir)
    )
    assert done.returncode == 0, done.stderr
    config = tmp_path / "rollhook.yml"
    config.write_text(
        "targets:\n  blog: {repo: 'git://git.lan/blog.git', project: blog, service: web}\n"
    )
    checked = run(["rollhook", "check-config"], tmp_path, PATH=f"{bin_dir}:{os.environ['PATH']}")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{config}: OK, 1 target(s): blog" in checked.stdout
