"""Polling on the real git server, registry and engine: what webhooks missed is deployed,
moved and newer tags are followed, and an unreachable repo or registry never deploys."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from tests.harness.registry import Registry
from tests.harness.standin import StandInImages
from tests.workers.deployer import Deployer
from tests.workers.loop import Loop

pytestmark = pytest.mark.engine


def test_a_commit_whose_webhook_was_lost_is_deployed_by_polling(deployer: Deployer) -> None:
    loop = Loop(deployer)
    first = deployer.commit("1.0.0")
    # Nothing deployed yet: the first poll deploys the branch head by itself.
    report = loop.poll()
    assert report.polled == ["llm"] and list(report.raised) == ["llm"]
    assert dict(report.requests) == {"ls-remote": 1}  # nothing runs: no image to ask about
    loop.work()
    record = loop.latest()
    assert (record.status, record.commit, record.trigger["source"]) == ("succeeded", first, "poll")
    assert deployer.app_version() == "1.0.0"
    assert loop.sync().synced_commit == first

    # Polling again finds nothing new: one ls-remote, one HEAD of the tag in use.
    report = loop.poll()
    assert report.raised == {} and dict(report.requests) == {"ls-remote": 1, "head": 1}

    # A push whose webhook never arrived.
    second = deployer.commit("2.0.0", "anything-llm 2.0.0")
    [event_id] = loop.poll().raised["llm"]
    assert loop.poll().raised == {}  # raised once, not at every poll while it waits
    loop.work()
    record = loop.latest()
    assert (record.status, record.commit) == ("succeeded", second), record.log
    assert record.trigger == {**record.trigger, "source": "poll", "event_id": event_id}
    assert deployer.app_version() == "2.0.0"
    state = loop.sync()
    assert (state.observed_commit, state.synced_commit) == (second, second)
    assert state.last_error is None and state.last_poll_at is not None


def test_a_re_pushed_moving_tag_is_followed(
    make_deployer: Callable[..., Deployer], standin: StandInImages
) -> None:
    repository = f"acme/moving-{uuid.uuid4().hex[:8]}"
    deployer = make_deployer()
    loop = Loop(deployer)
    deployer.target.images = [f"{standin.registry_host}/{repository}"]
    stable = standin.build("stable", 1, repository=repository, app_version="stable-1")
    deployer.commit("stable", image=stable)
    assert deployer.deploy().status == "succeeded"
    assert deployer.app_version() == "stable-1"
    assert loop.poll().raised == {}

    # The same tag pushed again (no registry notification: the harness's sends none).
    standin.build("stable", 2, repository=repository, app_version="stable-2")
    [_] = loop.poll().raised["llm"]
    loop.work()
    record = loop.latest()
    assert record.status == "succeeded", record.log
    assert record.trigger["source"] == "poll"
    assert record.images["anything-llm"]["new"] == (
        f"{stable}@{standin.digests[stable]}"
    )  # the digest now behind `stable`
    assert deployer.app_version() == "stable-2"
    assert loop.poll().raised == {}


def test_a_newer_tag_the_policy_allows_is_followed(
    make_deployer: Callable[..., Deployer], standin: StandInImages
) -> None:
    repository = f"acme/semver-{uuid.uuid4().hex[:8]}"
    deployer = make_deployer(tags="semver:>=1,<3")
    deployer.target.images = [f"{standin.registry_host}/{repository}"]
    loop = Loop(deployer)
    old = standin.build("1.0.0", 1, repository=repository)
    deployer.commit("1.0.0", image=old)
    assert deployer.deploy().status == "succeeded"
    for tag in ("3.0.0", "1.5.0", "2.1.0", "2.1.0-rc1", "latest"):
        standin.build(tag, 2, repository=repository)
    report = loop.poll()
    assert dict(report.requests) == {"ls-remote": 1, "head": 1, "tags": 1}
    assert list(report.raised) == ["llm"]
    loop.work()
    record = loop.latest()
    assert record.status == "succeeded", record.log
    assert record.images["anything-llm"]["new"].startswith(
        f"{standin.registry_host}/{repository}:2.1.0@"
    )
    assert deployer.app_version() == "2.1.0"
    assert deployer.state().pins["anything-llm"]["ref"].endswith(":2.1.0")
    assert loop.poll().raised == {}  # 2.1.0 runs: nothing newer


def test_an_unreachable_repository_is_reported_and_never_deploys(deployer: Deployer) -> None:
    loop = Loop(deployer)
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"
    deployer.commit("2.0.0")
    deployer.ctx.targets["llm"] = deployer.target.model_copy(
        update={"repo": "http://127.0.0.1:9/nowhere.git"}
    )
    report = loop.poll()
    assert report.raised == {} and "llm" in report.errors
    state = loop.sync()
    assert state.last_error is not None and state.last_error["kind"] == "git"
    assert "127.0.0.1:9" in state.last_error["message"]
    assert (state.poll_errors, state.poll_error_counts) == (1, {"git": 1})
    assert state.last_poll_at is None  # the last poll that saw something: none yet
    assert state.next_poll_at is not None
    backoff = (state.next_poll_at - state.updated_at).total_seconds()  # type: ignore[operator]
    assert backoff == pytest.approx(2 * deployer.target.sync.interval, abs=2)
    loop.poll()
    assert loop.sync().poll_errors == 2
    assert deployer.sent == [] and len(loop.history()) == 1  # nothing was raised or run

    # Back again: the error clears and the missed commit is found.
    deployer.ctx.targets["llm"] = deployer.target
    assert list(loop.poll().raised) == ["llm"]
    state = loop.sync()
    assert (state.poll_errors, state.last_error) == (0, None)
    assert state.poll_error_counts == {"git": 2}  # the metrics' counter stays


def test_an_unreachable_registry_is_reported_and_never_deploys(
    make_deployer: Callable[..., Deployer], standin: StandInImages, registry: Registry
) -> None:
    repository = f"acme/gone-{uuid.uuid4().hex[:8]}"
    with registry.notifying("http://127.0.0.1:9/nowhere", "x" * 20) as host:
        deployer = make_deployer(images=[f"{host}/{repository}"])
        image = standin.build("1.0.0", 1, repository=repository, registry_host=host)
        deployer.commit("1.0.0", image=image)
        assert deployer.deploy().status == "succeeded"
    loop = Loop(deployer)
    deployer.commit("2.0.0", image=image.replace(":1.0.0", ":2.0.0"))  # Git moves on too
    report = loop.poll()
    assert report.raised == {}
    state = loop.sync()
    assert state.last_error is not None and state.last_error["kind"] == "registry"
    assert host in state.last_error["message"]
    assert state.poll_error_counts == {"registry": 1}
    assert deployer.sent == [] and len(loop.history()) == 1
