"""A change that waited for approval, decided on: the Slack message with the buttons is
updated in place (the same channel and ts, ``chat.update``): the buttons go, it says who
decided and when, then how the approved deployment goes, through Slack's rate limits."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from sqlalchemy import Engine

from rollhook.buttons import button_value
from rollhook.targets import Target
from tests.workers.notify import records as rec
from tests.workers.notify.flow import Flow, notifiers_for
from tests.workers.notify.standins import SlackMessage, SlackStandIn
from workers.notify import (
    Notifiers,
    RetryLater,
    schedule_approval_progress,
    schedule_decision,
    schedule_target_notice,
)

WAITING = "d-waiting-0001"
SYNC = "d-approval-0001"
APPROVER = "U024BE7LH"


@pytest.fixture
def notifiers(slack: SlackStandIn) -> Notifiers:
    return notifiers_for(
        slack_token=slack.token,
        slack_channel="deploys",
        slack_api_url=slack.api_url,
        notify_console=True,
    )


def ask(records: Engine, target: Target, notifiers: Notifiers, flow: Flow) -> SlackMessage:
    """The wait is told (as workers/approval.py tells it): one message with the buttons."""
    spec = {
        "headline": f"{target.name}: 1.16.2 waiting for approval",
        "details": ["commits: 1a2b3c4..5d6e7f8 on main"],
        "approval": button_value(target.name, WAITING),
    }
    with records.begin() as conn:
        ids = schedule_target_notice(
            conn, target, notifiers, event="pending", since=WAITING, spec=spec
        )
    assert flow.statuses(ids) == ["delivered", "delivered"]  # slack, console
    [message] = flow_slack(flow)
    assert _actions(message.current_blocks) and not message.updates
    return message


def flow_slack(flow: Flow) -> list[SlackMessage]:
    slack = flow.slack  # type: ignore[attr-defined]
    return list(slack.messages)


def _actions(blocks: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [b for b in blocks or [] if b["type"] == "actions"]


def decide(records: Engine, target: Target, decision: str, **more: Any) -> list[str]:
    with records.begin() as conn:
        return schedule_decision(
            conn, target.name, [WAITING], decision=decision, by=f"slack:{APPROVER}", **more
        )


def progress(records: Engine, status: str, **more: Any) -> list[str]:
    record = rec.record(
        id=SYNC, kind="sync", status=status, requested={"coalesced": [WAITING]}, **more
    )
    with records.begin() as conn:
        return schedule_approval_progress(conn, record)


def make_flow(records: Engine, notifiers: Notifiers, target: Target, slack: SlackStandIn) -> Flow:
    flow = Flow(records, notifiers, target)
    flow.slack = slack  # type: ignore[attr-defined]
    return flow


def test_an_approval_updates_the_message_in_place_then_tells_the_deployment(
    records: Engine, slack: SlackStandIn, target: Target, notifiers: Notifiers
) -> None:
    flow = make_flow(records, notifiers, target, slack)
    message = ask(records, target, notifiers, flow)

    [row] = decide(records, target, "approve", deployment=SYNC)
    assert flow.statuses([row]) == ["delivered"]
    assert len(slack.messages) == 1, "the decision is an update, never a new message"
    assert not _actions(message.current_blocks), "the buttons are gone"
    said = json.dumps(message.current_blocks)
    assert f"Approved by <@{APPROVER}> at " in said and "UTC" in said
    assert f"Approved by <@{APPROVER}>" in message.current_text

    # The approved deployment starts, then ends: the same message says so each time.
    assert progress(records, "running") == [row]
    assert flow.statuses([row]) == ["delivered"]
    assert "deploying" in json.dumps(message.current_blocks)
    assert SYNC in json.dumps(message.current_blocks)
    assert progress(records, "succeeded") == [row]
    assert flow.statuses([row]) == ["delivered"]
    assert "deployed" in json.dumps(message.current_blocks)
    assert f"Approved by <@{APPROVER}>" in json.dumps(message.current_blocks)
    assert [u["text"].splitlines()[-1] for u in message.updates] == [
        f":hourglass: queued: it deploys as soon as the worker gets to it (deployment `{SYNC}`)",
        f":rocket: deploying (deployment `{SYNC}`)",
        f":white_check_mark: deployed (deployment `{SYNC}`)",
    ]
    # An end is final: a late "deploying" and a second decision change nothing.
    assert progress(records, "running") == []
    assert decide(records, target, "reject") == []
    assert len(message.updates) == 3 and len(slack.messages) == 1
    # Other channels told the wait once; they are not told the decision.
    [console] = [r for r in flow.all_rows() if r["channel"] == "console"]
    assert len(console["history"]) == 1


def test_a_rolled_back_approval_says_so(
    records: Engine, slack: SlackStandIn, target: Target, notifiers: Notifiers
) -> None:
    flow = make_flow(records, notifiers, target, slack)
    message = ask(records, target, notifiers, flow)
    [row] = decide(records, target, "approve", deployment=SYNC)
    progress(records, "rolled_back")
    assert flow.statuses([row]) == ["delivered"]
    # The delivery tells what the row says now: straight to the end.
    [update] = message.updates
    assert "rolled back" in update["text"] and not _actions(update["blocks"])


def test_progress_of_another_deployment_is_not_told_on_the_message(
    records: Engine, slack: SlackStandIn, target: Target, notifiers: Notifiers
) -> None:
    flow = make_flow(records, notifiers, target, slack)
    ask(records, target, notifiers, flow)
    decide(records, target, "approve", deployment="d-someone-else")
    assert progress(records, "running") == []


def test_a_wait_that_goes_ahead_without_a_press_says_so(
    records: Engine, slack: SlackStandIn, target: Target, notifiers: Notifiers
) -> None:
    """The deploy window opened: the change that waited starts by itself (it is the wait's
    own deployment); its message loses the buttons and tells how it goes."""
    flow = make_flow(records, notifiers, target, slack)
    message = ask(records, target, notifiers, flow)
    started = rec.record(id=WAITING, kind="deploy", status="running",
                         requested={"manual": False, "coalesced": []})  # fmt: skip
    with records.begin() as conn:  # a heal never speaks for the wait
        assert schedule_approval_progress(conn, dataclasses.replace(started, kind="heal")) == []
        [row] = schedule_approval_progress(conn, started)
    assert flow.statuses([row]) == ["delivered"]
    [update] = message.updates
    assert "Went ahead without a press at " in update["text"]
    assert "the deploy window opened" in update["text"] and "deploying" in update["text"]
    assert not _actions(update["blocks"])
    with records.begin() as conn:
        ended = dataclasses.replace(started, status="succeeded")
        assert schedule_approval_progress(conn, ended) == [row]
    flow.statuses([row])
    assert ":white_check_mark: deployed" in message.updates[-1]["text"]


def test_a_rollback_that_replaces_a_wait_says_it_rolled_back(
    records: Engine, slack: SlackStandIn, target: Target, notifiers: Notifiers
) -> None:
    """A person rolls back while a change waits for its press: the wait's message says
    the rollback replaced it, and its end in a rollback's words (not "deployed")."""
    flow = make_flow(records, notifiers, target, slack)
    message = ask(records, target, notifiers, flow)
    rollback = rec.record(id="d-rollback", kind="rollback", status="running",
                          requested={"manual": True, "coalesced": [WAITING]},
                          trigger={"actor": "alice"})  # fmt: skip
    with records.begin() as conn:
        [row] = schedule_approval_progress(conn, rollback)
    flow.statuses([row])
    [update] = message.updates
    assert "Replaced by a rollback at " in update["text"] and "alice" in update["text"]
    assert "rolling back (deployment `d-rollback`)" in update["text"]
    assert not _actions(update["blocks"])
    with records.begin() as conn:
        assert schedule_approval_progress(conn, dataclasses.replace(rollback, status="succeeded"))
    flow.statuses([row])
    last = message.updates[-1]["text"]
    assert "rolled back: the previous version serves" in last and "deployed" not in last


def test_a_rejection_removes_the_buttons_and_says_who(
    records: Engine, slack: SlackStandIn, target: Target, notifiers: Notifiers
) -> None:
    flow = make_flow(records, notifiers, target, slack)
    message = ask(records, target, notifiers, flow)
    [row] = decide(records, target, "reject")
    assert flow.statuses([row]) == ["delivered"]
    [update] = message.updates
    assert not _actions(update["blocks"])
    assert f"Rejected by <@{APPROVER}> at " in json.dumps(update["blocks"])
    assert "ended unrun" in update["text"]


def test_the_update_waits_out_slacks_rate_limit_and_ok_false(
    records: Engine, slack: SlackStandIn, target: Target, notifiers: Notifiers
) -> None:
    flow = make_flow(records, notifiers, target, slack)
    message = ask(records, target, notifiers, flow)
    [row] = decide(records, target, "approve", deployment=SYNC)

    slack.rate_limit_next(retry_after=1, path="chat.update")
    [retry] = flow.deliver([row])
    assert isinstance(retry, RetryLater) and retry.seconds >= 1
    assert not message.updates
    slack.error_next("internal_error", path="chat.update")  # ok: false, Slack's trouble
    [retry] = flow.deliver([row])
    assert isinstance(retry, RetryLater)
    assert flow.statuses([row]) == ["delivered"]
    [update] = message.updates
    assert "Approved by" in update["text"]
    updates = [r for r in slack.requests if r[2].endswith("chat.update")]
    # The update after the 429 left no sooner than Retry-After said.
    assert updates[-1][0] - updates[0][0] >= 0.9


def test_a_message_that_cannot_be_edited_any_more_is_told_anew(
    records: Engine, slack: SlackStandIn, target: Target, notifiers: Notifiers
) -> None:
    flow = make_flow(records, notifiers, target, slack)
    first = ask(records, target, notifiers, flow)
    [row] = decide(records, target, "approve", deployment=SYNC)
    slack.error_next("message_not_found", path="chat.update")
    assert flow.statuses([row]) == ["delivered"]
    assert not first.updates
    [_, told] = slack.messages
    assert "Approved by" in told.text and not _actions(told.blocks)
