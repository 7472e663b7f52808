"""Scheduling: announce/report are idempotent, move forward only, and follow the wiring."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from rollhook.settings import ConfigError
from rollhook.targets import Target
from tests.workers.notify import records as rec
from tests.workers.notify.flow import Flow, notifiers_for
from tests.workers.notify.standins import GitHubStandIn, SlackStandIn


def _flow(records: Engine, slack: SlackStandIn, github: GitHubStandIn, target: Target) -> Flow:
    notifiers = notifiers_for(
        slack_token=slack.token,
        slack_channel="deploys",
        slack_api_url=slack.api_url,
        slack_webhook_url=slack.webhook_url,
        github_token=github.token,
        github_api_url=github.url,
    )
    return Flow(records, notifiers, target)


def test_calling_twice_schedules_once_and_never_goes_back_a_phase(
    records: Engine, slack: SlackStandIn, github: GitHubStandIn, target: Target
) -> None:
    flow = _flow(records, slack, github, target)
    record = rec.insert_running(records)
    ids = flow.announce(record)
    assert flow.announce(record) == ids and len(ids) == 2
    final = rec.finish(records, record, "succeeded")
    assert sorted(flow.report(final)) == sorted(ids)
    assert sorted(flow.report(final)) == sorted(ids)
    flow.announce(record)  # a late, repeated announce must not reopen "deploying"
    assert {r["external"]["spec"]["phase"] for r in flow.all_rows()} == {"final"}
    flow.deliver(ids)
    assert len(slack.top_level()) == 1 and slack.top_level()[0].updates == []
    assert [s.state for s in github.statuses] == ["success"]


def test_the_webhook_stays_unused_when_the_bot_is_configured(
    records: Engine, slack: SlackStandIn, github: GitHubStandIn, target: Target
) -> None:
    flow = _flow(records, slack, github, target)
    record = rec.insert_running(records)
    flow.report(rec.finish(records, record, "failed"))
    assert set(flow.rows(record.id)) == {"slack", "github"}


def test_a_delivered_announcement_is_sent_again_only_as_its_final_form(
    records: Engine, slack: SlackStandIn, github: GitHubStandIn, target: Target
) -> None:
    flow = _flow(records, slack, github, target)
    record = rec.insert_running(records)
    ids = flow.announce(record)
    flow.deliver(ids)
    flow.deliver(ids)
    assert len(slack.messages) == 1 and len(github.statuses) == 1
    flow.deliver(flow.report(rec.finish(records, record, "succeeded")))
    assert [len(m.updates) for m in slack.top_level()] == [1]
    assert [s.state for s in github.statuses] == ["pending", "success"]


def test_a_slack_token_without_a_channel_stops_start_up() -> None:
    with pytest.raises(ConfigError, match="ROLLHOOK_SLACK_CHANNEL"):
        notifiers_for(slack_token="xoxb-1")
    assert notifiers_for().configured() == []
