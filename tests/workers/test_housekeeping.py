"""Retention on the real engine: what a rollback may need stays, everything older goes."""

from __future__ import annotations

from typing import Any

import pytest

from rollhook.records import targets as target_records
from tests.workers.deployer import Deployer
from workers import housekeeping
from workers.backup import BackupStore
from workers.engine import DockerEngine

pytestmark = [
    pytest.mark.engine,
    pytest.mark.parametrize("deployer", [{"backup": {"keep": 2}}], indirect=True, ids=["keep-2"]),
]


def test_old_releases_backups_and_images_are_pruned(deployer: Deployer, standin: Any) -> None:
    tags = [standin.build(f"keep-{n}", n + 1).rsplit(":", 1)[1] for n in range(4)]
    records = []
    for tag in tags:
        deployer.commit(tag, f"release {tag}")
        records.append(deployer.deploy())
        assert records[-1].status == "succeeded", records[-1].log
    images = [r.images["anything-llm"]["new"] for r in records]
    with DockerEngine(deployer.docker_host) as engine:
        assert all(engine.image_id(image) for image in images)

    housekeeping.tidy_target(deployer.ctx, deployer.target)

    with DockerEngine(deployer.docker_host) as engine:
        present = [engine.image_id(image) is not None for image in images]
    # The last two good deployments can be rolled back to; the older images are gone.
    assert present == [False, False, True, True]
    releases = sorted(p.name for p in (deployer.dirs.root / "releases").iterdir())
    assert releases == sorted({records[2].commit, records[3].commit})
    overrides = sorted(p.name for p in (deployer.dirs.root / "deployments").iterdir())
    assert overrides == sorted([records[2].id, records[3].id])
    # The backup holding the data as records[2] left it is records[3]'s: kept.
    kept = {b.id for b in BackupStore(deployer.dirs.backups).list()}
    assert records[3].backup_id in kept
    assert len(kept) <= 2
    assert deployer.app_version() == tags[-1]  # nothing running was touched
    assert deployer.state().lease_owner is None


def test_housekeeping_leaves_a_busy_target_alone(deployer: Deployer) -> None:
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"
    releases = sorted((deployer.dirs.root / "releases").iterdir())
    with deployer.records.begin() as conn:
        token = target_records.acquire_lease(conn, deployer.name, "another-worker", 60)
    assert token is not None
    deployer.repo.commit({"x": "y"})  # nothing about the target changes
    housekeeping.tidy_target(deployer.ctx, deployer.target)
    assert sorted((deployer.dirs.root / "releases").iterdir()) == releases
    with deployer.records.begin() as conn:
        assert target_records.get(conn, deployer.name).lease_owner == "another-worker"
