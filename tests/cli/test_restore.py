"""``rollhook backups`` and ``rollhook restore``: an operator puts older data back."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from rollhook.records import deployments
from tests.workers.deployer import Deployer

pytestmark = pytest.mark.engine


def cli(deployer: Deployer, *args: str) -> subprocess.CompletedProcess[str]:
    config = deployer.root / "rollhook.yml"
    body = deployer.target.model_dump(mode="json", exclude={"name"})
    config.write_text(yaml.safe_dump({"targets": {deployer.name: body}}))
    env = {
        "PATH": os.environ["PATH"],
        "HOME": "/root",
        "ROLLHOOK_CONFIG": str(config),
        "ROLLHOOK_DATA_DIR": str(deployer.ctx.data_dir),
        "ROLLHOOK_DATABASE_URL": f"sqlite:///{deployer.root / 'records.sqlite'}",
        "DOCKER_HOST": deployer.docker_host,
    }
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_backups_are_listed_and_one_is_restored_under_the_running_version(
    deployer: Deployer,
) -> None:
    deployer.commit("2.0.0")
    assert deployer.deploy().status == "succeeded"
    (deployer.storage / "documents" / "kept.json").write_text("before")
    deployer.commit("2.0.0-slow")
    second = deployer.deploy()
    assert second.status == "succeeded", second.log
    (deployer.storage / "documents" / "kept.json").write_text("after: lost by the restore")
    (deployer.storage / "documents" / "new.json").write_text("written after the backup")

    listed = cli(deployer, "backups", deployer.name)
    assert listed.returncode == 0, listed.stderr
    assert second.backup_id in listed.stdout

    refused = cli(deployer, "restore", deployer.name, second.backup_id)
    assert refused.returncode == 3 and "--yes" in refused.stderr  # usage

    restored = cli(deployer, "restore", deployer.name, second.backup_id, "--yes")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "restore" in restored.stdout and "succeeded" in restored.stdout
    assert (deployer.storage / "documents" / "kept.json").read_text() == "before"
    assert not (deployer.storage / "documents" / "new.json").exists()
    assert deployer.app_version() == "2.0.0-slow"  # the running version stays
    state = deployer.state()
    assert state.held is False  # a data restore does not hold the target
    with deployer.records.begin() as conn:
        record = deployments.get(conn, state.current_deployment_id)
    assert record is not None and record.trigger["actor"] == "rollhook restore (cli)"

    unknown = cli(deployer, "restore", deployer.name, "no-such-backup", "--yes")
    assert unknown.returncode == 3 and "no complete backup" in unknown.stdout  # usage
