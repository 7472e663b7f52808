"""Real deployments on the engine, reported to Slack, email and GitHub commit statuses.

The Slack and GitHub stand-ins check requests the way the real services do; mail goes to
a real SMTP server on loopback. Notification tasks are delivered as soon as they are
published, which is what a worker does with the ``rollhook.notify`` task.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from rollhook.records.schema import notifications
from tests.workers.deployer import Deployer
from tests.workers.notify.flow import notifiers_for
from tests.workers.notify.mailserver import Mailbox, smtp_server
from tests.workers.notify.standins import GitHubStandIn, SlackStandIn
from workers.notify import RetryLater, deliver

pytestmark = pytest.mark.engine

SLACK_TOKEN = "xoxb-1234-rollhook-e2e"
GITHUB_TOKEN = "ghp_rollhookE2eToken"


@dataclass
class Reported:
    deployer: Deployer
    slack: SlackStandIn
    github: GitHubStandIn
    mailbox: Mailbox
    retries: list[RetryLater]


@pytest.fixture
def reported(make_deployer: Callable[..., Deployer]) -> Iterator[Reported]:
    deployer = make_deployer(repo="acme/llm-infra", notify={"commit_status": True})
    owner_repo = deployer.repo.url.split("/", 3)[3].removesuffix(".git")
    with (
        SlackStandIn(token=SLACK_TOKEN, channels={"deploys": "C0DEPLOYS"}) as slack,
        GitHubStandIn(token=GITHUB_TOKEN, repos={owner_repo}) as github,
        smtp_server() as (mailbox, port),
    ):
        notifiers = notifiers_for(
            slack_token=SLACK_TOKEN,
            slack_channel="deploys",
            slack_api_url=slack.api_url,
            smtp_url=f"smtp://127.0.0.1:{port}",
            email_from="rollhook@example.test",
            email_to="ops@example.test",
            github_token=GITHUB_TOKEN,
            github_api_url=github.url,
        )

        retries: list[RetryLater] = []

        def deliver_now(task: str, args: list[Any]) -> None:
            try:
                deliver(deployer.records, notifiers, args[0])
            except RetryLater as exc:  # the task would be retried later
                retries.append(exc)

        deployer.ctx.notifiers = notifiers
        deployer.ctx.send = deliver_now
        yield Reported(deployer, slack, github, mailbox, retries)


def subjects(mailbox: Mailbox) -> list[str]:
    return [str(m.message["Subject"]) for m in mailbox.received]


def test_deployments_report_to_slack_email_and_commit_status(reported: Reported) -> None:
    deployer, slack, github, mailbox = (
        reported.deployer,
        reported.slack,
        reported.github,
        reported.mailbox,
    )

    good_commit = deployer.commit("1.0.0", "anything-llm 1.0.0")
    good = deployer.deploy()
    assert good.status == "succeeded", good.log

    [message] = slack.top_level()
    assert message.updates, "the message posted at the start is updated when it ends"
    assert "1.0.0" in message.current_text and "deployed" in message.current_text
    thread = slack.replies(message.ts)
    assert thread and any("gate" in reply.text for reply in thread)
    assert subjects(mailbox) == ["llm: 1.0.0 deployed"]
    assert [(s.sha, s.state) for s in github.statuses] == [
        (good_commit, "pending"),
        (good_commit, "success"),
    ]

    bad_commit = deployer.commit("3.0.0-crash", "a broken release")
    bad = deployer.deploy()
    assert bad.status == "rolled_back", bad.log
    failure = slack.top_level()[-1]
    assert "FAILED" in failure.current_text and "rolled back" in failure.current_text
    assert subjects(mailbox)[-1] == "llm: 3.0.0-crash FAILED, rolled back to 1.0.0"
    html = mailbox.received[-1].message.get_body(("html",))
    assert html is not None and "gate" in html.get_content()
    assert [(s.sha, s.state) for s in github.statuses[2:]] == [
        (bad_commit, "pending"),
        (bad_commit, "failure"),
    ]

    # A no-op changes nothing and stays quiet everywhere.
    messages, mails = len(slack.messages), len(mailbox.received)
    assert deployer.deploy(manual=True).status in {"no_op", "rolled_back"}
    deployer.commit("1.0.0", "back to 1.0.0")
    assert deployer.deploy().status == "no_op"
    assert len(mailbox.received) >= mails

    with deployer.records.begin() as conn:
        rows = conn.execute(
            select(notifications.c.channel, notifications.c.status).where(
                notifications.c.deployment_id == good.id
            )
        ).all()
    assert sorted(rows) == [("email", "delivered"), ("github", "delivered"), ("slack", "delivered")]
    assert messages <= len(slack.messages)
    assert reported.retries == []


def test_a_failing_notifier_never_changes_the_deployment(reported: Reported) -> None:
    deployer, slack, mailbox = reported.deployer, reported.slack, reported.mailbox
    deployer.commit("1.0.0")
    slack.stop()  # Slack unreachable for the whole deployment
    record = deployer.deploy()
    assert record.status == "succeeded", record.log
    assert deployer.app_version() == "1.0.0"
    assert subjects(mailbox) == ["llm: 1.0.0 deployed"]  # the other channels still went out
    with deployer.records.begin() as conn:
        slack_rows = conn.execute(
            select(notifications.c.status, notifications.c.history).where(
                notifications.c.deployment_id == record.id,
                notifications.c.channel == "slack",
            )
        ).all()
    assert slack_rows and slack_rows[0].history  # the failed attempt is on record
    assert reported.retries  # and the Slack task would be retried with backoff
