"""Write-back on the real git server, registry and engine: a tag that moved in the
registry is deployed by polling, then committed to the infra repository, after which the
next poll finds Git and the host in agreement."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from rollhook.records.schema import notifications
from tests.harness import INFRA_PATH
from tests.harness.standin import StandInImages
from tests.workers.deployer import Deployer
from tests.workers.loop import Loop
from tests.workers.notify.flow import notifiers_for

pytestmark = pytest.mark.engine


def test_a_moved_tag_is_committed_to_git_and_the_next_poll_agrees(
    make_deployer: Callable[..., Deployer], standin: StandInImages, tmp_path: Path
) -> None:
    repository = f"acme/wb-{uuid.uuid4().hex[:8]}"
    deployer = make_deployer(
        sync={"write_back": {"file": "docker-compose.yml", "service": "anything-llm"}}
    )
    loop = Loop(deployer)
    deployer.target.images = [f"{standin.registry_host}/{repository}"]
    stable = standin.build("stable", 1, repository=repository, app_version="stable-1")
    first = deployer.commit("stable", image=stable)
    record = deployer.deploy()  # a push: Git already says it, nothing is written back
    assert record.status == "succeeded" and "write-back" not in [s["name"] for s in record.steps]
    assert deployer.repo.head() == first

    standin.build("stable", 2, repository=repository, app_version="stable-2")
    digest = standin.digests[stable]
    [_] = loop.poll().raised["llm"]
    loop.work()
    record = loop.latest()
    assert record.status == "succeeded", record.log
    [step] = [s for s in record.steps if s["name"] == "write-back"]
    assert step["outcome"] == "ok" and step["detail"].startswith("pushed "), step
    head = deployer.repo.head()
    assert head != first and deployer.app_version() == "stable-2"

    clone = tmp_path / "check"
    subprocess.run(["git", "clone", "-q", deployer.repo.url, str(clone)], check=True)
    compose = (clone / INFRA_PATH / "docker-compose.yml").read_text()
    assert f"image: {stable}  # rollhook: {deployer.target.images[0]}:stable@{digest}" in compose
    said = subprocess.run(
        ["git", "-C", str(clone), "log", "-1", "--format=%an|%s"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    assert said == f"rollhook|rollhook: llm {deployer.target.images[0]}:stable ({digest})"

    # The next poll sees the new head; deploying it changes nothing: Git and host agree.
    [_] = loop.poll().raised["llm"]
    loop.work()
    record = loop.latest()
    assert (record.status, record.commit) == ("no_op", head), record.log
    assert deployer.app_version() == "stable-2"
    assert loop.poll().raised == {}
    assert loop.sync().synced_commit == head


def test_a_write_back_that_fails_is_told_and_the_deployment_stays_succeeded(
    make_deployer: Callable[..., Deployer], standin: StandInImages
) -> None:
    repository = f"acme/wb-{uuid.uuid4().hex[:8]}"
    deployer = make_deployer(sync={"write_back": {"file": ".env", "variable": "LLM_VERSION"}})
    deployer.ctx.notifiers = notifiers_for(notify_console=True)
    loop = Loop(deployer)
    deployer.target.images = [f"{standin.registry_host}/{repository}"]
    stable = standin.build("stable", 1, repository=repository, app_version="stable-1")
    deployer.commit("stable", image=stable)  # its .env has no LLM_VERSION
    assert deployer.deploy().status == "succeeded"
    head = deployer.repo.head()

    standin.build("stable", 2, repository=repository, app_version="stable-2")
    [_] = loop.poll().raised["llm"]
    loop.work()
    record = loop.latest()
    assert record.status == "succeeded", record.log
    [step] = [s for s in record.steps if s["name"] == "write-back"]
    assert step["outcome"] == "failed" and "has no variable LLM_VERSION" in step["detail"]
    assert deployer.repo.head() == head  # nothing pushed
    assert deployer.app_version() == "stable-2"
    query = select(notifications.c.subject).where(
        notifications.c.kind == "target", notifications.c.channel == "console"
    )
    with deployer.records.connect() as conn:
        assert [s for (s,) in conn.execute(query)] == [f"llm:write_back:{record.id}"]
