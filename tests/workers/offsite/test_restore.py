"""A remote snapshot restored: onto the host that took it (under the running version, the
data it replaces backed up first), and onto a new host (a fresh data directory, empty
records and a Docker engine of its own, the old host's app gone) that then serves the
same data and runtime .env."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from rollhook.records import deployments
from rollhook.records.db import make_engine, migrate
from tests.harness.engine import PrivateEngine
from tests.harness.gitserver import InfraRepo
from tests.harness.reaper import claim
from tests.harness.registry import Registry
from tests.harness.standin import StandInImages
from tests.workers.deployer import Deployer
from tests.workers.offsite.conftest import Clock, Remote, needs_restic
from workers.backup import BackupStore
from workers.errors import OperatorError
from workers.offsite import snapshots
from workers.offsite.restore import restore_from_remote

pytestmark = [pytest.mark.engine, *needs_restic]


def test_a_remote_snapshot_comes_back_under_the_running_version(
    offsite_deployer: Callable[..., Deployer], local_remote: Remote, clock: Clock
) -> None:
    deployer = offsite_deployer(local_remote)
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"
    (deployer.storage / "documents" / "kept.json").write_text('{"pageContent": "kept"}')
    env = (deployer.dirs.work / ".env").read_text()
    taken = snapshots.take(deployer.ctx, deployer.target, clock=clock)
    assert taken.status == "taken", taken.detail
    assert taken.snapshot is not None
    # Later, something goes wrong with the data.
    (deployer.storage / "documents" / "kept.json").unlink()
    (deployer.storage / "documents" / "mistake.json").write_text("{}")
    (deployer.dirs.work / ".env").write_text("SIG_KEY='lost'\n")

    said: list[str] = []
    record = restore_from_remote(
        deployer.ctx, deployer.target, taken.snapshot.short_id, said.append
    )
    assert record.status == "succeeded", record.log
    assert record.kind == "rollback" and record.requested["restore_backup"].startswith("remote-")
    assert [s["name"] for s in record.steps][-5:] == [
        "stop",
        "snapshot",
        "restore",
        "start",
        "gate",
    ]
    assert (deployer.storage / "documents" / "kept.json").exists()
    assert not (deployer.storage / "documents" / "mistake.json").exists()
    assert (deployer.dirs.work / ".env").read_text().startswith(env.strip())
    assert deployer.app_version() == "1.0.0"
    # The data it replaced was backed up first: the undo is one `rollhook restore` away.
    store = BackupStore(deployer.dirs.backups)
    replaced = store.get(record.backup_id)
    [storage] = [s for s in replaced.sources if s.path.endswith("/storage")]
    assert (
        deployer.dirs.backups / replaced.id / storage.dir / "documents" / "mistake.json"
    ).exists()
    assert any("restoring it" in line for line in said)

    with pytest.raises(OperatorError, match="no snapshot 'deadbeef'"):
        restore_from_remote(deployer.ctx, deployer.target, "deadbeef", said.append)


def test_a_new_host_restored_from_the_remote_snapshot_serves_the_same_data(  # noqa: PLR0917
    offsite_deployer: Callable[..., Deployer],
    remote: Remote,
    clock: Clock,
    tmp_path: Path,
    new_engine: PrivateEngine,
    standin: StandInImages,
    registry: Registry,
) -> None:
    old = offsite_deployer(remote)
    old.commit("1.0.0")
    assert old.deploy().status == "succeeded"
    document = '{"pageContent": "the quarterly report"}'
    (old.storage / "documents" / "report.json").write_text(document)
    (old.storage / "lancedb").mkdir(exist_ok=True)
    (old.storage / "lancedb" / "vectors.lance").write_bytes(os.urandom(300_000))
    env = (old.dirs.work / ".env").read_text()
    assert "SIG_KEY=" in env
    taken = snapshots.take(old.ctx, old.target, clock=clock)
    assert taken.status == "taken", taken.detail
    assert taken.snapshot is not None
    contents = remote.repo().contents(taken.snapshot.id)
    [storage] = [s for s in contents.sources if s.mount == "/app/server/storage"]
    db_then = remote.repo().dump(taken.snapshot.id, f"{storage.location}/anythingllm.db")
    old.down()  # the host is lost: the app is gone from the engine

    new = new_host(old, tmp_path / "new-host", new_engine.host, standin, registry)
    try:
        assert new.dirs.work != old.dirs.work  # another data directory: other host paths
        with closing(new_engine.client()) as client:
            assert client.images.list() == []  # nothing cached: every image is pulled
        said: list[str] = []
        record = restore_from_remote(new.ctx, new.target, "latest", said.append)
        assert record.status == "succeeded", record.log
        assert any("never deployed on this host" in line for line in said)
        assert any("matched by mount" in line for line in said)
        assert new.app_version() == "1.0.0"
        assert (new.dirs.work / ".env").read_text() == env  # the same keys: data decrypts
        assert (new.storage / "documents" / "report.json").read_text() == document
        vectors = old.storage / "lancedb" / "vectors.lance"
        assert (new.storage / "lancedb" / "vectors.lance").read_bytes() == vectors.read_bytes()
        # The app goes on from the snapshot's database (its writes since come after).
        assert (new.storage / "anythingllm.db").read_bytes().startswith(db_then)
        history = [(r.kind, r.status) for r in new_history(new)]
        assert history == [("rollback", "succeeded"), ("deploy", "succeeded")]
    finally:
        new.down()


@pytest.fixture
def new_engine(tmp_path: Path) -> Iterator[PrivateEngine]:
    """The new host's own dockerd (images pulled from the registry, volumes of its own)."""
    root = Path(tempfile.mkdtemp(prefix="rh-", dir="/tmp"))  # short: unix socket paths
    claim(root)  # reaped by a later session should this one die before its teardown
    engine = PrivateEngine(root, tmp_path)
    try:
        engine.start()
        yield engine
    finally:
        engine.stop()
        shutil.rmtree(engine.root, ignore_errors=True)


def new_host(
    old: Deployer, root: Path, docker_host: str, standin: StandInImages, registry: Registry
) -> Deployer:
    """The same target on a new machine: its own data directory and records."""
    root.mkdir()
    records = make_engine(f"sqlite:///{root / 'records.sqlite'}")
    migrate(records, root)
    repo: InfraRepo = old.repo
    backup: dict[str, Any] = old.target.backup.model_dump(mode="json")
    new = Deployer(
        root,
        records,
        repo=repo,
        docker_host=docker_host,
        standin=standin,
        registry_host=registry.host,
        health={"url": old.target.health.url},
        backup=backup,
    )
    new.port = old.port  # the port is in Git's compose .env
    new.ctx.notifiers = old.ctx.notifiers
    return new


def new_history(deployer: Deployer) -> list[Any]:
    with deployer.records.begin() as conn:
        return deployments.history(conn, deployer.name, 10)
