"""``rollhook check-config`` on a target with an off-host repository: what on this host
keeps it from working is a warning, one line each (never the password itself)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.rollhook.test_config import GOOD

SECRET = "restic-password-7d3a0b"


def check(tmp_path: Path, backup: dict[str, object], path: str) -> list[str]:
    config = tmp_path / "rollhook.yml"
    config.write_text(yaml.safe_dump({"targets": {"llm": {**GOOD, "backup": backup}}}))
    env = {"PATH": path, "ROLLHOOK_CONFIG": str(config)}
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "check-config"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].endswith("OK, 1 target(s): llm")
    assert SECRET not in done.stdout + done.stderr
    return [line for line in done.stdout.splitlines() if line.startswith("warning: ")]


def test_check_config_warns_about_the_repository_on_this_host(tmp_path: Path) -> None:
    password = tmp_path / "restic-password"
    password.write_text(SECRET + "\n")
    password.chmod(0o600)
    remote = {"repository": "sftp:backup@127.0.0.1:/rollhook", "password_file": str(password)}
    backup = {"keep": 3, "remote": remote, "drill": "weekly"}
    where = "warning: targets.llm.backup.remote"

    assert check(tmp_path, backup, "/usr/bin:/bin") == []
    [missing] = check(tmp_path, backup, str(tmp_path / "no-bin"))
    assert missing.startswith(f"{where}: restic is not installed on this host")
    password.chmod(0o644)
    [everyone] = check(tmp_path, backup, "/usr/bin:/bin")
    assert everyone.startswith(f"{where}.password_file: {password} can be read by every user")
    password.unlink()
    [gone] = check(tmp_path, backup, "/usr/bin:/bin")
    assert gone.startswith(f"{where}.password_file: cannot read {password}")
