"""A change held by a closed deploy window is told like a change waiting for approval:
once per wait, with the reason and Approve/Reject in Slack. Approving it deploys it now,
recorded as forced by the approver, and the message says who approved it and that it is
deploying. The worker's clock is injected; nothing here needs the engine (the runner holds
the change before it would touch Docker, and the pick is the runner's own)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from rollhook.buttons import read_button_value
from rollhook.events import NewEvent
from rollhook.ids import new_id
from rollhook.jobs import Job, Trigger
from rollhook.records import deployments, events
from rollhook.records import targets as target_records
from rollhook.targets import parse_targets
from tests.workers.notify.flow import Flow, notifiers_for
from tests.workers.notify.standins import SlackStandIn
from workers.context import WorkerContext
from workers.intake import take_job
from workers.runner import _coalesce, closed_window, notify, run_target

APPROVER = "U024BE7LH"
TARGETS = f"""
targets:
  llm:
    repo: https://github.com/acme/llm.git
    project: llm
    service: web
    windows: [{{deny: "Mon-Fri 08:00-18:00", tz: Europe/Berlin}}]
    approve: {{slack: true, approvers: [{APPROVER}]}}
"""
WEDNESDAY_NOON = datetime(2026, 12, 2, 11, 0, tzinfo=UTC)  # 12:00 in Berlin: closed
REASON = (
    "deploy window closed (deny Mon-Fri 08:00-18:00 Europe/Berlin); opens Wed 2026-12-02 18:00 CET"
)


def arrive(ctx: WorkerContext, *, ref: str | None = None, **job: Any) -> None:
    """A job stored with its event, taken by the worker, its target run (as the task does)."""
    now = datetime.now(UTC)
    event_id = new_id("e")
    source = job.pop("source", "poll")
    actor = job.pop("actor", None)
    stored = Job(
        id=new_id("j"),
        target="llm",
        trigger=Trigger(source=source, event_id=event_id, actor=actor),
        received_at=now,
        ref=ref,
        **job,
    )
    with ctx.records.begin() as conn:
        events.store_batch(
            conn, [NewEvent(event_id, source, new_id("k"), "push", {}, now, jobs=[stored])]
        )
    assert take_job(ctx, stored.to_json()) == "llm" or job.get("action") == "reject"


def test_a_change_held_by_the_window_is_told_once_and_approving_deploys_it_now(
    records: Engine, tmp_path: Path
) -> None:
    sent: list[str] = []
    with SlackStandIn(token="xoxb-1234-rollhook-test") as slack:
        notifiers = notifiers_for(
            slack_token=slack.token, slack_channel="deploys", slack_api_url=slack.api_url
        )
        found, problems = parse_targets(TARGETS)
        assert problems == []
        ctx = WorkerContext(
            records=records, data_dir=tmp_path, targets=found, docker_host=None,
            lease_seconds=30, send=lambda _task, args: sent.extend(args),
            notifiers=notifiers, clock=lambda: WEDNESDAY_NOON,
        )  # fmt: skip
        flow = Flow(records, notifiers, found["llm"])
        with records.begin() as conn:
            target_records.ensure(conn, ["llm"])

        arrive(ctx, ref="a" * 40)
        run_target(ctx, "llm")  # held: the window is closed
        assert flow.statuses(sent) == ["delivered"]
        [message] = slack.messages
        assert message.text == "llm: main@aaaaaaa waiting for its deploy window"
        said = json.dumps(message.blocks)
        assert f"pending: {REASON}" in said and "recorded as forced" in said
        [actions] = [b for b in message.blocks or [] if b["type"] == "actions"]
        with records.connect() as conn:
            [first] = deployments.queued(conn, "llm")
        assert first.reason == f"pending: {REASON}"
        assert read_button_value(actions["elements"][0]["value"]) == ("llm", first.id)

        # A second change in the same wait: held too, and not told again.
        sent.clear()
        arrive(ctx, ref="b" * 40)
        run_target(ctx, "llm")
        assert sent == [] and len(slack.messages) == 1

        # An approver approves (as service/slack.py stores the press): the message says
        # so, and the approval is picked past the closed window, recorded as forced.
        arrive(ctx, action="sync", manual=True, force=True, source="slack",
               actor=f"slack:{APPROVER}")  # fmt: skip
        assert flow.statuses(sent) == ["delivered"]
        assert f"Approved by <@{APPROVER}>" in message.current_text
        assert not [b for b in message.current_blocks or [] if b["type"] == "actions"]
        with records.begin() as conn:
            token = target_records.acquire_lease(conn, "llm", "test", 30)
            assert token is not None
            pick = _coalesce(conn, "llm", token, window=closed_window(ctx, "llm"))
        assert pick is not None and pick.kind == "sync"
        assert pick.requested["window"] == {"closed": REASON, "forced": True}
        assert pick.requested["approved_by"] == f"slack:{APPROVER}"
        assert first.id in pick.requested["coalesced"]
        sent.clear()
        notify(ctx, "announce", pick.id, found["llm"])
        assert "slack" in {row["channel"] for row in flow.all_rows()}
        flow.deliver(sent)
        assert "deploying" in message.current_text and pick.id in message.current_text
        # Besides the deployment's own message (its story and thread), nothing new.
        [_, own] = slack.messages
        assert pick.id in json.dumps(own.blocks) and own is not message


def test_when_the_window_opens_the_message_says_the_change_went_ahead(
    records: Engine, tmp_path: Path
) -> None:
    sent: list[str] = []
    now = [WEDNESDAY_NOON]
    with SlackStandIn(token="xoxb-1234-rollhook-test") as slack:
        notifiers = notifiers_for(
            slack_token=slack.token, slack_channel="deploys", slack_api_url=slack.api_url
        )
        found, _ = parse_targets(TARGETS)
        ctx = WorkerContext(
            records=records, data_dir=tmp_path, targets=found, docker_host=None,
            lease_seconds=30, send=lambda _task, args: sent.extend(args),
            notifiers=notifiers, clock=lambda: now[0],
        )  # fmt: skip
        flow = Flow(records, notifiers, found["llm"])
        with records.begin() as conn:
            target_records.ensure(conn, ["llm"])
        arrive(ctx, ref="a" * 40)
        arrive(ctx, ref="b" * 40)
        run_target(ctx, "llm")
        flow.deliver(sent)
        [message] = slack.messages

        now[0] = WEDNESDAY_NOON.replace(hour=17)  # 18:00 in Berlin: the window opens
        assert closed_window(ctx, "llm") is None
        with records.begin() as conn:
            token = target_records.acquire_lease(conn, "llm", "test", 30)
            assert token is not None
            pick = _coalesce(conn, "llm", token, window=None)
        assert pick is not None and pick.requested["ref"] == "b" * 40  # the newest
        sent.clear()
        notify(ctx, "announce", pick.id, found["llm"])
        flow.deliver(sent)
        said = message.current_text
        assert "Went ahead without a press" in said and "the deploy window opened" in said
        assert f"deploying (deployment `{pick.id}`)" in said
        assert not [b for b in message.current_blocks or [] if b["type"] == "actions"]
