"""``rollhook backup``, ``backups --remote``, ``drill`` and ``restore --from-remote``, run as
an operator runs them, against a real restic repository on a local path."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from cli.offsite import size
from tests.cli.test_restore import cli
from tests.workers.deployer import Deployer

pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(shutil.which("restic") is None, reason="restic is not installed"),
]


def test_the_off_host_commands(make_deployer: Callable[..., Deployer], tmp_path: Path) -> None:
    password = tmp_path / "restic-password"
    password.write_text("cli-password-0b6e2d\n")
    remote = {"repository": str(tmp_path / "offsite"), "password_file": str(password)}
    deployer = make_deployer(
        backup={
            "keep": 3,
            "remote": remote,
            "drill": {"schedule": "weekly", "port_env": "SERVER_PORT"},
        }
    )
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"

    taken = cli(deployer, "backup", "llm", "--remote")
    assert taken.returncode == 0, taken.stdout + taken.stderr
    assert taken.stdout.startswith("llm: taken: snapshot ")
    short_id = taken.stdout.split("snapshot ", 1)[1].split()[0]

    as_json = json.loads(cli(deployer, "backups", "llm", "--remote", "--json").stdout)
    [snap] = as_json["snapshots"]
    assert snap["id"].startswith(short_id) and snap["size"] > 0
    assert as_json["state"]["failures"] == 0
    assert as_json["state"]["last_snapshot_id"] == snap["id"]
    listed = cli(deployer, "backups", "llm", "--remote")
    assert listed.returncode == 0, listed.stderr
    [row] = [line for line in listed.stdout.splitlines() if line.strip().startswith(short_id)]
    assert f" {size(snap['size'])}  snapshot on " in row and " 0m " in row
    assert "last good: 0m ago" in listed.stdout

    local = cli(deployer, "backup", "llm")
    assert local.returncode == 0, local.stdout + local.stderr
    backup_id = local.stdout.split("backup ", 1)[1].split(":")[0]
    assert backup_id.startswith("manual-")
    assert backup_id in cli(deployer, "backups", "llm").stdout

    drilled = cli(deployer, "drill", "llm")
    assert drilled.returncode == 0, drilled.stdout + drilled.stderr
    assert "drill PASSED" in drilled.stdout

    (deployer.storage / "documents" / "after.json").write_text("{}")
    both = cli(deployer, "restore", "llm", backup_id, "--from-remote", "latest", "--yes")
    assert both.returncode == 3  # usage
    unconfirmed = cli(deployer, "restore", "llm", "--from-remote", "latest")
    assert unconfirmed.returncode == 3 and "--yes" in unconfirmed.stderr
    restored = cli(deployer, "restore", "llm", "--from-remote", short_id, "--yes")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "llm: succeeded" in restored.stdout
    assert not (deployer.storage / "documents" / "after.json").exists()
    assert deployer.app_version() == "1.0.0"
