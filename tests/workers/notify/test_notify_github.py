"""Commit statuses: pending when the deployment starts, success or failure when it ends."""

from __future__ import annotations

import json

from sqlalchemy import Engine

from rollhook.targets import Target
from tests.workers.notify import records as rec
from tests.workers.notify.flow import Flow, notifiers_for
from tests.workers.notify.standins import GitHubStandIn
from workers.notify import RetryLater


def _flow(records: Engine, github: GitHubStandIn, target: Target, token: str | None = None) -> Flow:
    notifiers = notifiers_for(github_token=token or github.token, github_api_url=github.url)
    return Flow(records, notifiers, target)


def test_pending_then_success_on_the_deployed_commit(
    records: Engine, github: GitHubStandIn, target: Target
) -> None:
    flow = _flow(records, github, target)
    record = rec.insert_running(records)
    flow.deliver(flow.announce(record))
    final = rec.finish(records, record, "succeeded")
    ids = flow.report(final)
    flow.deliver(ids)
    flow.deliver(ids)  # a second run of the task sets nothing again
    assert [(s.state, s.context) for s in github.statuses] == [
        ("pending", "rollhook/anythingllm"),
        ("success", "rollhook/anythingllm"),
    ]
    assert {(s.owner, s.repo, s.sha) for s in github.statuses} == {
        ("acme", "llm-infra", final.commit)
    }
    assert github.statuses[0].description == "anythingllm: deploying 1.16.2"
    assert github.statuses[1].description == "anythingllm: 1.16.2 deployed"


def test_a_rolled_back_deployment_is_a_failure(
    records: Engine, github: GitHubStandIn, target: Target
) -> None:
    flow = _flow(records, github, target)
    record = rec.insert_running(records)
    flow.deliver(flow.announce(record))
    flow.deliver(flow.report(rec.finish(records, record, "rolled_back")))
    assert [s.state for s in github.statuses] == ["pending", "failure"]
    assert github.statuses[1].description == "anythingllm: 1.16.2 FAILED, rolled back to 1.16.1"


def test_only_for_github_sourced_deployments_of_targets_that_ask(
    records: Engine, github: GitHubStandIn, target: Target
) -> None:
    flow = _flow(records, github, target)
    from_registry = rec.insert_running(records, source="dockerhub")
    assert flow.announce(from_registry) == []
    assert flow.report(rec.finish(records, from_registry, "succeeded")) == []
    silent = target.model_copy(
        update={"notify": target.notify.model_copy(update={"commit_status": False})}
    )
    record = rec.insert_running(records)
    assert _flow(records, github, silent).announce(record) == []
    assert github.statuses == []


def test_bad_credentials_fail_for_good_without_the_token_in_the_record(
    records: Engine, github: GitHubStandIn, target: Target
) -> None:
    flow = _flow(records, github, target, token="ghp_notTheRightOne")
    record = rec.insert_running(records)
    assert flow.statuses(flow.announce(record)) == ["failed"]
    row = flow.rows(record.id)["github"]
    assert row["history"][-1]["detail"] == "github status: HTTP 401 Bad credentials"
    assert "ghp_notTheRightOne" not in json.dumps(row, default=str)


def test_github_trouble_is_retried(records: Engine, github: GitHubStandIn, target: Target) -> None:
    flow = _flow(records, github, target)
    record = rec.insert_running(records)
    ids = flow.announce(record)
    github.fail_next(502, {"message": "Server Error"})
    [retry] = flow.deliver(ids)
    assert isinstance(retry, RetryLater)
    github.fail_next(
        403,
        {"message": "API rate limit exceeded"},
        headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": "0"},
    )
    [retry] = flow.deliver(ids)
    assert isinstance(retry, RetryLater)
    assert flow.statuses(ids) == ["delivered"]
    assert [s.state for s in github.statuses] == ["pending"]
