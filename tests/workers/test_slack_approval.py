"""Slack approvals end to end on the real engine, git server and registry: in manual mode a
change found by polling waits; an approver's Reject press (signed as Slack signs, through
the real web process) ends it unrun with who rejected it, and an approver's Approve press
deploys the next one, recorded as approved by them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from rollhook.buttons import read_button_value
from rollhook.jobs import Job
from rollhook.records.schema import notifications
from rollhook.settings import Settings
from tests.service.support import API_TOKEN, Served
from tests.service.test_slack import APPROVER, SIGNING_SECRET, STRANGER, press_body, send
from tests.workers.deployer import Deployer
from tests.workers.loop import Loop
from tests.workers.notify.flow import notifiers_for
from tests.workers.notify.standins import SlackStandIn
from workers.intake import take_job
from workers.notify import Notifiers, deliver

pytestmark = pytest.mark.engine
GATED = [{"sync": {"auto": False}, "approve": {"slack": True, "approvers": [APPROVER]}}]


@pytest.fixture
def web(deployer: Deployer, tmp_path: Path) -> Iterator[Served]:
    """The web process on the deployer's records, with the deployer's target."""
    config = tmp_path / "web.yml"
    target = deployer.target.model_dump(mode="json", exclude={"name"}, exclude_none=True)
    config.write_text(yaml.safe_dump({"targets": {deployer.name: target}}))
    settings = Settings(
        config=config,
        data_dir=tmp_path / "web",
        database_url=deployer.records.url.render_as_string(hide_password=False),
        api_token=API_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
    )
    app = Served(settings).start()
    yield app
    app.stop()


def press(deployer: Deployer, web: Served, action: str, deployment: str) -> Job:
    """Press a button in Slack; the worker takes the stored job and runs the target."""
    answer = send(web, press_body(action, deployment, target=deployer.name))
    assert answer.status_code == 200, answer.text
    [row] = web.jobs_of(answer.json()["id"])
    take_job(deployer.ctx, row["payload"])
    deployer.run()
    return Job.from_json(row["payload"])


def pending_specs(deployer: Deployer) -> list[dict[str, Any]]:
    query = select(notifications.c.subject, notifications.c.external).where(
        notifications.c.kind == "target", notifications.c.channel == "console"
    )
    with deployer.records.connect() as conn:
        rows = conn.execute(query).all()
    return [external["spec"] for subject, external in rows if ":pending:" in subject]


def waiting(loop: Loop) -> list[str]:
    return [r.id for r in loop.history() if r.status == "queued"]


@pytest.mark.parametrize("deployer", GATED, indirect=True)
def test_approvers_reject_and_approve_what_waits_from_slack(
    deployer: Deployer, web: Served
) -> None:
    deployer.ctx.notifiers = notifiers_for(notify_console=True)
    loop = Loop(deployer)
    first_sha = deployer.commit("1.0.0")
    assert deployer.deploy(manual=True, source="api").status == "succeeded"

    deployer.commit("2.0.0-slow", "anything-llm 2.0.0-slow")
    loop.poll()
    loop.work()
    [first] = waiting(loop)
    [spec] = pending_specs(deployer)  # the waiting message: the change and its buttons
    assert read_button_value(spec["approval"]) == (deployer.name, first)
    assert any(line.startswith(f"commits: {first_sha[:7]}..") for line in spec["details"])

    # Somebody who is not an approver: refused, nothing changes.
    refused = send(web, press_body("approve", first, target=deployer.name, user=STRANGER))
    assert refused.status_code == 403
    loop.work()
    assert waiting(loop) == [first] and deployer.app_version() == "1.0.0"

    # Reject: the waiting deployment ends unrun, with who rejected it.
    press(deployer, web, "reject", first)
    record = deployer.record(first)
    assert record.status == "superseded" and record.started_at is None
    assert (record.reason or "").startswith(f"rejected by slack:{APPROVER} at ")
    assert deployer.app_version() == "1.0.0"

    # The next change waits again; Approve deploys it, recorded as approved by the approver.
    third = deployer.commit("2.0.0", "anything-llm 2.0.0")
    loop.poll()
    loop.work()
    [second] = waiting(loop)
    job = press(deployer, web, "approve", second)
    [approval] = [r for r in loop.history() if r.requested.get("job_id") == job.id]
    assert (approval.kind, approval.status, approval.commit) == ("sync", "succeeded", third), (
        approval.log
    )
    assert approval.requested["approved_by"] == f"slack:{APPROVER}"
    assert approval.trigger["source"] == "slack"
    assert deployer.record(second).status == "superseded"
    assert deployer.app_version() == "2.0.0"


def deliver_owed(deployer: Deployer, notifiers: Notifiers) -> None:
    """Deliver every notification still owed, as the rollhook.notify tasks would."""
    query = select(notifications.c.id).where(notifications.c.status == "pending")
    with deployer.records.connect() as conn:
        owed = list(conn.execute(query).scalars())
    for notification_id in owed:
        deliver(deployer.records, notifiers, notification_id)


@pytest.mark.parametrize("deployer", GATED, indirect=True)
def test_the_message_with_the_buttons_tells_who_approved_and_how_the_deployment_went(
    deployer: Deployer, web: Served
) -> None:
    with SlackStandIn(token="xoxb-1234-rollhook-test") as slack:
        notifiers = notifiers_for(
            slack_token=slack.token, slack_channel="deploys", slack_api_url=slack.api_url
        )
        deployer.ctx.notifiers = notifiers
        loop = Loop(deployer)
        deployer.commit("1.0.0")
        assert deployer.deploy(manual=True, source="api").status == "succeeded"
        deployer.commit("2.0.0", "anything-llm 2.0.0")
        loop.poll()
        loop.work()
        deliver_owed(deployer, notifiers)
        [asking] = [m for m in slack.top_level() if "waiting for approval" in m.text]
        assert any(b["type"] == "actions" for b in asking.blocks or [])
        [first] = waiting(loop)

        answer = send(web, press_body("approve", first, target=deployer.name))
        assert answer.status_code == 200, answer.text
        [row] = web.jobs_of(answer.json()["id"])
        take_job(deployer.ctx, row["payload"])
        deliver_owed(deployer, notifiers)
        [approved] = asking.updates
        assert approved["text"].startswith(asking.text)
        assert f"Approved by <@{APPROVER}> at " in approved["text"]
        assert "queued" in approved["text"]
        assert not [b for b in approved["blocks"] if b["type"] == "actions"]

        deployer.run()
        deliver_owed(deployer, notifiers)
        assert deployer.app_version() == "2.0.0"
        last = asking.updates[-1]["text"]
        assert f"Approved by <@{APPROVER}>" in last and ":white_check_mark: deployed" in last
        # Still one message about the wait: every change to it was an update.
        assert [m for m in slack.top_level() if "waiting for approval" in m.text] == [asking]
