"""Slack's button presses through the real web process, signed with Slack's own algorithm
(v0 HMAC-SHA256 over ``v0:{timestamp}:{raw body}``): an approver's press is stored as a
sync (or a rejection) for the worker; a bad signature, an old timestamp, a replay, a
non-approver, an unknown target and a malformed payload are refused with nothing stored."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from rollhook.buttons import button_value
from rollhook.ids import new_id
from rollhook.jobs import Job, Trigger
from rollhook.records import deployments
from service.slack import check_signature
from tests.service.support import API_TOKEN, TARGETS_YAML, Served

SIGNING_SECRET = "slack-signing-8f742231b10e8888"
APPROVER, STRANGER = "U024BE7LH", "U0STRANGER"
TARGETS = (
    TARGETS_YAML
    + f"""
  gated:
    repo: https://github.com/acme/gated.git
    project: gated
    service: web
    sync: {{auto: false}}
    approve: {{slack: true, approvers: [{APPROVER}]}}
"""
)


@pytest.fixture
def app(serve: Callable[..., Served], tmp_path: Path) -> Served:
    config = tmp_path / "rollhook.yml"
    config.write_text(TARGETS)
    return serve(slack_signing_secret=SIGNING_SECRET, config=config)


def waiting(app: Served, target: str = "gated", *, manual: bool = False) -> str:
    """An automatic deployment that waits for approval, as a poll would leave it."""
    trigger = Trigger(source="poll", event_id=new_id("e"))
    job = Job(
        id=new_id("j"), target=target, trigger=trigger, received_at=datetime.now(UTC), manual=manual
    )
    with app.records.begin() as conn:
        return deployments.create_queued(conn, job)


def press_body(
    action: str,
    deployment: str,
    *,
    target: str = "gated",
    user: str = APPROVER,
    response_url: str | None = None,
) -> bytes:
    payload: dict[str, object] = {
        "type": "block_actions",
        "user": {"id": user, "username": "alice"},
        "actions": [
            {"action_id": action, "type": "button", "value": button_value(target, deployment)}
        ],
    }
    if response_url is not None:
        payload["response_url"] = response_url
    return urlencode({"payload": json.dumps(payload)}).encode()


def slack_headers(
    body: bytes, *, at: float | None = None, secret: str = SIGNING_SECRET
) -> dict[str, str]:
    timestamp = str(int(time.time() if at is None else at))
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256)
    return {
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": timestamp,
        "x-slack-signature": "v0=" + digest.hexdigest(),
    }


def send(app: Served, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return app.client.post(
        "/hooks/slack/interactions", content=body, headers=headers or slack_headers(body)
    )


def stored_job(app: Served, answer: httpx.Response) -> Job:
    assert answer.status_code == 200, answer.text
    [row] = app.jobs_of(answer.json()["id"])
    return Job.from_json(row["payload"])


def test_an_approvers_press_is_queued_as_a_sync_recorded_with_who(app: Served) -> None:
    job = stored_job(app, send(app, press_body("approve", waiting(app))))
    assert (job.target, job.action, job.manual) == ("gated", "sync", True)
    assert (job.trigger.source, job.trigger.actor) == ("slack", f"slack:{APPROVER}")


def test_a_reject_press_is_queued_as_a_rejection(app: Served) -> None:
    job = stored_job(app, send(app, press_body("reject", waiting(app))))
    assert (job.action, job.trigger.actor) == ("reject", f"slack:{APPROVER}")


def test_the_same_request_twice_is_acted_on_once(app: Served) -> None:
    body = press_body("approve", waiting(app))
    headers = slack_headers(body)
    stored_job(app, send(app, body, headers))
    before = app.event_count()
    replay = send(app, body, headers)
    assert replay.status_code == 409 and "acted on already" in replay.json()["reason"]
    assert app.event_count() == before


def _refused(app: Served, answer: httpx.Response, code: int, reason: str, before: int) -> None:
    assert answer.status_code == code, answer.text
    assert reason in answer.json()["reason"]
    assert app.event_count() == before  # nothing stored, nothing acted on


@pytest.mark.parametrize(
    ("case", "code", "reason"),
    [
        ("bad signature", 401, "bad X-Slack-Signature"),
        ("other secret", 401, "bad X-Slack-Signature"),
        ("old timestamp", 401, "more than 5 minutes"),
        ("future timestamp", 401, "more than 5 minutes"),
        ("no signature", 401, "missing X-Slack-Signature"),
        ("body changed", 401, "bad X-Slack-Signature"),
    ],
)
def test_what_slack_did_not_sign_just_now_is_refused(
    app: Served, case: str, code: int, reason: str
) -> None:
    body = press_body("approve", waiting(app))
    headers = slack_headers(body)
    if case == "bad signature":
        headers["x-slack-signature"] = "v0=" + "0" * 64
    elif case == "other secret":
        headers = slack_headers(body, secret="another-secret-of-16+")
    elif case == "old timestamp":
        headers = slack_headers(body, at=time.time() - 301)
    elif case == "future timestamp":
        headers = slack_headers(body, at=time.time() + 301)
    elif case == "no signature":
        del headers["x-slack-signature"]
    elif case == "body changed":
        body = press_body("reject", waiting(app))
    before = app.event_count()
    _refused(app, send(app, body, headers), code, reason, before)


def test_presses_that_do_not_count_are_refused(app: Served) -> None:
    deployment = waiting(app)
    before = app.event_count()
    cases: list[tuple[bytes, int, str]] = [
        (press_body("approve", deployment, user=STRANGER), 403, "not one of gated's approvers"),
        (press_body("approve", waiting(app, "hello"), target="hello"), 403, "approvers"),
        (press_body("approve", deployment, target="nowhere"), 404, "unknown target"),
        (press_body("approve", "d_nothing"), 404, "no deployment"),
        (press_body("deploy", deployment), 400, "neither approve nor reject"),
        (b"payload=not-json", 400, "one JSON field 'payload'"),
        (
            urlencode({"payload": json.dumps({"type": "view_submission"})}).encode(),
            400,
            "block_actions",
        ),
        (press_body("approve", waiting(app, manual=True)), 409, "no longer waits"),
    ]
    for body, code, reason in cases:
        _refused(app, send(app, body), code, reason, before)


def test_a_press_on_a_message_whose_change_was_handled_already_is_refused(app: Served) -> None:
    deployment = waiting(app)
    stored_job(app, send(app, press_body("reject", deployment)))
    with app.records.begin() as conn:
        deployments.finish_unstarted(conn, deployment, "superseded", "rejected by slack:U1")
    before = app.event_count()
    _refused(app, send(app, press_body("approve", deployment)), 409, "no longer waits", before)


def test_without_a_signing_secret_the_endpoint_does_not_exist(serve: Callable[..., Served]) -> None:
    app = serve()
    body = press_body("approve", "d_x")
    assert send(app, body).status_code == 404


def test_reject_over_the_api_queues_a_rejection_when_something_waits(app: Served) -> None:
    auth = {"authorization": f"Bearer {API_TOKEN}"}
    nothing = app.client.post("/targets/gated/reject", json={"actor": "bob"}, headers=auth)
    assert nothing.status_code == 409 and "waits for approval" in nothing.json()["reason"]
    waiting(app)
    answer = app.client.post("/targets/gated/reject", json={"actor": "bob"}, headers=auth)
    assert answer.status_code == 202, answer.text
    [row] = app.jobs_of(answer.json()["id"])
    job = Job.from_json(row["payload"])
    assert (job.action, job.manual, job.trigger.actor) == ("reject", True, "bob")
    assert app.client.post("/targets/nowhere/reject", headers=auth).status_code == 404
    assert app.client.post("/targets/gated/reject").status_code == 401


NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("timestamp", "body", "signed", "why"),
    [
        ("1700000000", b"a=b", "good", None),
        ("1699999700", b"a=b", "good", None),  # exactly 5 minutes old
        ("1699999699", b"a=b", "good", "more than 5 minutes"),
        ("1700000301", b"a=b", "good", "more than 5 minutes"),
        ("-1", b"a=b", "good", "not a Unix time"),
        ("1700000000", b"a=c", "good", "bad X-Slack-Signature"),
        ("1700000000", b"a=b", "v1=abc", "bad X-Slack-Signature"),
        ("1700000000", b"a=b", "", "missing"),
        (None, b"a=b", "good", "missing"),
    ],
)
def test_check_signature(timestamp: str | None, body: bytes, signed: str, why: str | None) -> None:
    secret = b"a-secret-of-enough-length"
    good = "v0=" + hmac.new(secret, f"v0:{timestamp}:a=b".encode(), hashlib.sha256).hexdigest()
    found = check_signature(secret, timestamp, body, good if signed == "good" else signed, NOW)
    assert (found is None) if why is None else (why in (found or ""))
