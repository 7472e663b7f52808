"""A refused Slack press is told to the presser alone: an ephemeral message POSTed to the
payload's response_url (after the HTTP answer, which stays as it was). Only Slack's own
response URLs are followed (a loopback stand-in only when the Web API points at one):
a URL anywhere else, even in a request Slack signed, is never requested (SSRF)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rollhook.records import deployments
from service.slack_replies import SLACK_HOOKS, allowed_base, may_follow
from tests.service.support import Served
from tests.service.test_slack import (
    SIGNING_SECRET,
    STRANGER,
    TARGETS,
    press_body,
    send,
    slack_headers,
    stored_job,
    waiting,
)
from tests.workers.notify.standins import SlackStandIn


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    with SlackStandIn() as stand_in:
        yield stand_in


@pytest.fixture
def app(serve: Callable[..., Served], tmp_path: Path, slack: SlackStandIn) -> Served:
    config = tmp_path / "rollhook.yml"
    config.write_text(TARGETS)
    return serve(slack_signing_secret=SIGNING_SECRET, config=config, slack_api_url=slack.api_url)


def replies(slack: SlackStandIn, count: int, timeout: float = 5.0) -> list[dict[str, object]]:
    """The bodies POSTed to response URLs, once ``count`` arrived (they leave after the answer)."""
    deadline = time.monotonic() + timeout
    while len(slack.responses) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return [body for _path, body in slack.responses]


def test_a_non_approvers_press_is_answered_and_told_to_them_alone(
    app: Served, slack: SlackStandIn
) -> None:
    url = slack.response_url()
    body = press_body("approve", waiting(app), user=STRANGER, response_url=url)
    answer = send(app, body)
    assert answer.status_code == 403 and "approvers" in answer.json()["reason"]
    [reply] = replies(slack, 1)
    assert reply["response_type"] == "ephemeral" and reply["replace_original"] is False
    assert f"{STRANGER} is not one of gated's approvers" in str(reply["text"])
    assert slack.responses[0][0] == "/actions/T0ROLLHOOK/1234/abcd"


def test_a_press_on_what_no_longer_waits_and_a_replay_are_told_why(
    app: Served, slack: SlackStandIn
) -> None:
    decided = waiting(app)
    with app.records.begin() as conn:
        deployments.finish_unstarted(conn, decided, "superseded", "rejected by slack:U1")
    late = send(app, press_body("approve", decided, response_url=slack.response_url("1/late")))
    assert late.status_code == 409

    body = press_body("reject", waiting(app), response_url=slack.response_url("2/twice"))
    headers = slack_headers(body)
    stored_job(app, send(app, body, headers))  # acted on: nothing to tell
    assert send(app, body, headers).status_code == 409
    texts = sorted(str(r["text"]) for r in replies(slack, 2))
    assert len(texts) == 2
    assert "no longer waits (superseded)" in texts[0]
    assert "acted on already" in texts[1]
    time.sleep(0.2)
    assert len(slack.responses) == 2, "an accepted press gets no ephemeral reply"


def test_a_response_url_that_is_not_slacks_is_never_followed(
    app: Served, slack: SlackStandIn
) -> None:
    with SlackStandIn() as elsewhere:  # another loopback server: not the configured base
        for url in (
            elsewhere.response_url(),
            f"{slack.url}/api/chat.postMessage",
            slack.url.replace("127.0.0.1", "localhost") + "/actions/T0/1/a",
        ):
            body = press_body("approve", waiting(app), user=STRANGER, response_url=url)
            assert send(app, body).status_code == 403, "the answer is the same"
        time.sleep(0.5)
        assert elsewhere.requests == [] and slack.requests == []


@pytest.mark.parametrize(
    ("url", "followed"),
    [
        ("https://hooks.slack.com/actions/T0123/456/abcDEF", True),
        ("http://hooks.slack.com/actions/T0123/456/abc", False),
        ("https://hooks.slack.com.evil.example/actions/T0/1/a", False),
        ("https://evil.example/actions/T0/1/a?x=https://hooks.slack.com/", False),
        ("https://user@hooks.slack.com/actions/T0/1/a", False),
        ("https://hooks.slack.com@evil.example/actions/T0/1/a", False),
        ("https://hooks.slack.com:8443/actions/T0/1/a", False),
        ("https://hooks.slack.com/services/T0/B0/x", False),
        ("https://hooks.slack.com/actions/T0/1/a#frag", False),
        ("https://hooks.slack.com/actions/T0/1/a\nHost: evil", False),
        ("https://hooks.slack.com\\@evil.example/actions/", False),
        ("//hooks.slack.com/actions/T0/1/a", False),
        (None, False),
        (["https://hooks.slack.com/actions/T0/1/a"], False),
    ],
)
def test_only_slacks_response_urls_are_followed(url: object, followed: bool) -> None:
    assert may_follow(url, SLACK_HOOKS) is followed


@pytest.mark.parametrize(
    ("api_url", "base"),
    [
        ("https://slack.com/api/", SLACK_HOOKS),
        ("https://slack-proxy.example.com/api/", SLACK_HOOKS),  # not a stand-in: Slack's own
        ("http://10.0.0.5:8080/api/", SLACK_HOOKS),
        ("http://127.0.0.1:45123/api/", "http://127.0.0.1:45123/"),
        ("http://localhost:45123/api/", "http://localhost:45123/"),
    ],
)
def test_the_allowed_base_is_slacks_unless_the_web_api_is_a_loopback_stand_in(
    api_url: str, base: str
) -> None:
    assert allowed_base(api_url) == base
