"""``rollhook check-config`` explains each problem in the targets file in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.rollhook.test_config import GOOD


def run_check_config(tmp_path: Path, config: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "rollhook.yml").write_text(config)
    env = {"PATH": "/usr/bin:/bin", "ROLLHOOK_CONFIG": str(tmp_path / "rollhook.yml")}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "check-config"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_check_config_explains_each_problem(tmp_path: Path) -> None:
    bad = yaml.safe_dump({"targets": {"llm": {**GOOD, "tags": "semver:??", "surprise": 1}}})
    result = run_check_config(tmp_path, bad)
    assert result.returncode == 1
    assert sorted(result.stdout.splitlines()) == [
        "targets.llm.surprise: unknown key",
        "targets.llm.tags: invalid semver range '??'",
    ]
    good = run_check_config(tmp_path, yaml.safe_dump({"targets": {"llm": GOOD}}))
    assert good.returncode == 0, good.stdout
    assert good.stdout.splitlines()[-1].endswith("OK, 1 target(s): llm")
