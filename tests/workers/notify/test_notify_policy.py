"""Policy: which results notify, repeating failures told once, recovery told."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from rollhook.targets import Target, parse_targets
from tests.workers.notify import records as rec
from tests.workers.notify.flow import Flow, notifiers_for
from tests.workers.notify.mailserver import Mailbox, smtp_server
from tests.workers.notify.standins import SlackStandIn


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    with smtp_server("plain") as server:
        yield server


def _flow(records: Engine, slack: SlackStandIn, port: int, target: Target) -> Flow:
    notifiers = notifiers_for(
        slack_token=slack.token,
        slack_channel="deploys",
        slack_api_url=slack.api_url,
        smtp_url=f"smtp://127.0.0.1:{port}",
        email_from="rollhook@example.test",
        email_to="ops@example.test",
    )
    return Flow(records, notifiers, target)


def _deploy(flow: Flow, status: str, new: str = "1.16.2", **kwargs: Any) -> dict[str, Any]:
    record = rec.insert_running(flow.engine, new=new)
    flow.deliver(flow.announce(record))
    final = rec.finish(flow.engine, record, status, **kwargs)
    flow.deliver(flow.report(final))
    return final


def test_the_same_failure_again_updates_the_first_message_and_emails_once(
    records: Engine, slack: SlackStandIn, mailbox: tuple[Mailbox, int], target: Target
) -> None:
    flow = _flow(records, slack, mailbox[1], target)
    first = _deploy(flow, "rolled_back")
    second = _deploy(flow, "rolled_back")
    third = _deploy(flow, "rolled_back")

    [top] = slack.top_level()  # one message for three failures
    assert top.current_text.startswith("anythingllm: 1.16.2 still failing (3 times)")
    assert [u["text"].split("\n")[0] for u in top.updates] == [
        "anythingllm: 1.16.2 FAILED, rolled back to 1.16.1",
        "anythingllm: 1.16.2 still failing (2 times)",
        "anythingllm: 1.16.2 still failing (3 times)",
    ]
    assert first.id in str(top.current_blocks)  # "first failure <id>"
    # Each failure's steps land in the first message's thread.
    assert len(slack.replies(top.ts)) == 3
    assert [m.message["Subject"] for m in mailbox[0].received] == [
        "anythingllm: 1.16.2 FAILED, rolled back to 1.16.1"
    ]
    for later in (second, third):
        rows = flow.rows(later.id)
        assert rows["email"]["status"] == "skipped"
        assert "only the first one" in rows["email"]["history"][0]["detail"]
        assert rows["slack"]["status"] == "delivered"

    recovered = _deploy(flow, "succeeded", new="1.16.3")
    assert len(slack.top_level()) == 2
    assert slack.top_level()[1].text.startswith(
        "anythingllm: 1.16.3 deployed, recovered after 3 failures"
    )
    assert mailbox[0].received[-1].message["Subject"] == (
        "anythingllm: 1.16.3 deployed, recovered after 3 failures"
    )
    assert flow.rows(recovered.id)["email"]["status"] == "delivered"

    # Back to normal: the next success announces at the start again.
    _deploy(flow, "succeeded", new="1.16.4")
    assert slack.top_level()[2].text.startswith("anythingllm: deploying 1.16.4")
    assert slack.top_level()[2].current_text.startswith("anythingllm: 1.16.4 deployed\n")


def test_a_different_failure_is_news(
    records: Engine, slack: SlackStandIn, mailbox: tuple[Mailbox, int], target: Target
) -> None:
    flow = _flow(records, slack, mailbox[1], target)
    _deploy(flow, "rolled_back")
    _deploy(flow, "rolled_back", new="1.16.3")  # another version failing
    _deploy(flow, "failed", new="1.16.3", step="apply")  # failing somewhere else
    assert len(slack.top_level()) == 3
    assert len(mailbox[0].received) == 3


def test_reporting_twice_counts_and_sends_once(
    records: Engine, slack: SlackStandIn, mailbox: tuple[Mailbox, int], target: Target
) -> None:
    flow = _flow(records, slack, mailbox[1], target)
    first = _deploy(flow, "rolled_back")
    flow.deliver(flow.report(first))
    second = _deploy(flow, "rolled_back")
    again = flow.report(second)
    flow.deliver(again)
    [top] = slack.top_level()
    assert top.current_text.startswith("anythingllm: 1.16.2 still failing (2 times)")
    assert len(mailbox[0].received) == 1


def test_a_target_hearing_only_about_failures(
    records: Engine, slack: SlackStandIn, mailbox: tuple[Mailbox, int], target: Target
) -> None:
    notify = target.notify.model_copy(update={"on": ["failed", "rolled_back"]})
    flow = _flow(records, slack, mailbox[1], target.model_copy(update={"notify": notify}))
    record = rec.insert_running(records)
    assert flow.announce(record) == []  # not announced: a success would stay quiet
    flow.deliver(flow.report(rec.finish(records, record, "succeeded")))
    assert slack.messages == [] and mailbox[0].received == []

    failing = _deploy(flow, "rolled_back", new="1.16.3")
    [top] = slack.top_level()  # posted once, at the end
    assert top.updates == [] and top.text.startswith("anythingllm: 1.16.3 FAILED")
    assert flow.rows(failing.id)["email"]["status"] == "delivered"


def test_no_ops_and_superseded_deployments_stay_quiet(
    records: Engine, slack: SlackStandIn, mailbox: tuple[Mailbox, int], target: Target
) -> None:
    flow = _flow(records, slack, mailbox[1], target)
    for status in ("no_op", "superseded"):
        record = rec.insert_running(records)
        rec.set_status(records, record.id, status=status)
        assert flow.report(rec.get(records, record.id)) == []
    assert flow.all_rows() == []


def test_a_message_posted_at_the_start_is_always_finished(
    records: Engine, slack: SlackStandIn, mailbox: tuple[Mailbox, int], target: Target
) -> None:
    """Even when the policy would not tell the result, "deploying" must not stay up."""
    flow = _flow(records, slack, mailbox[1], target)
    record = rec.insert_running(records)
    flow.deliver(flow.announce(record))
    flow.target = target.model_copy(
        update={"notify": target.notify.model_copy(update={"on": ["succeeded"]})}
    )
    flow.deliver(flow.report(rec.finish(records, record, "rolled_back")))
    [top] = slack.top_level()
    assert "FAILED" in top.current_text
    assert mailbox[0].received == []


def test_a_channel_can_have_its_own_list_of_results(
    records: Engine, slack: SlackStandIn, mailbox: tuple[Mailbox, int], target: Target
) -> None:
    notify = target.notify.model_copy(update={"channels": {"email": ["failed", "rolled_back"]}})
    flow = _flow(records, slack, mailbox[1], target.model_copy(update={"notify": notify}))
    _deploy(flow, "succeeded")
    assert len(slack.top_level()) == 1 and mailbox[0].received == []  # email: failures only
    _deploy(flow, "rolled_back", new="1.16.3")
    assert [m.message["Subject"] for m in mailbox[0].received] == [
        "anythingllm: 1.16.3 FAILED, rolled back to 1.16.1"
    ]


def test_the_targets_file_accepts_per_channel_lists() -> None:
    targets, problems = parse_targets(
        "targets:\n  app:\n    repo: https://github.com/acme/infra.git\n    project: app\n"
        "    service: web\n    notify:\n"
        "      channels: {email: [failed], slack: [failed, succeeded]}\n"
    )
    assert problems == []
    assert targets["app"].notify.channels == {"email": ["failed"], "slack": ["failed", "succeeded"]}
    _, problems = parse_targets(
        "targets:\n  app:\n    repo: https://github.com/acme/infra.git\n    project: app\n"
        "    service: web\n    notify:\n      channels: {email: [exploded]}\n"
    )
    assert len(problems) == 1 and problems[0].startswith("targets.app.notify.channels.email")
