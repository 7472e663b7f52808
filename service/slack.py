"""Slack's button presses: ``POST /hooks/slack/interactions`` (Approve and Reject).

Slack signs every request with the app's signing secret: ``X-Slack-Signature`` is
``v0=`` and the hex HMAC-SHA256 of ``v0:{X-Slack-Request-Timestamp}:{raw body}``. A request
is heard only when that matches (compared in constant time) and the timestamp is within
five minutes of now; the same body is acted on once (its hash is the event's second
dedup key, kept far longer than five minutes), so a captured request replayed is refused.
Only ``approve.approvers`` (Slack user ids) count, and only while the deployment the
button names still waits. The press is stored with its job and answered at once: Slack
wants an answer within 3 seconds, and the work is the worker's (service/approvals.py).
A refused press is also told to the presser alone, through the payload's ``response_url``
once the answer has left (service/slack_replies.py: only Slack's own URLs are followed).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from rollhook.buttons import DECISIONS, read_button_value
from rollhook.records import deployments
from rollhook.records.deployments import DeploymentRecord
from service import answers, approvals
from service.approvals import Decision
from service.hooks import read_capped
from service.logs import printable
from service.recorder import Queued, StoreFailed
from service.runtime import Runtime, runtime

log = logging.getLogger("rollhook.slack")

MAX_AGE = 300  # seconds: Slack's own advice for the timestamp's age
BODY_CAP = 256 * 1024  # a block_actions payload carries the message it came from: a few KB


class Refused(Exception):
    """The press is not acted on: ``code`` and the reason answered."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass(frozen=True)
class Press:
    """One button press, as Slack's block_actions payload tells it."""

    decision: Decision
    target: str
    deployment: str  # the waiting deployment the message was about
    user: str  # Slack user id
    user_name: str | None = None
    response_url: str | None = None  # where to tell the presser alone (service/slack_replies.py)


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """Slack's v0 signature of a request."""
    base = b"v0:" + timestamp.encode("ascii") + b":" + body
    return "v0=" + hmac.new(secret, base, hashlib.sha256).hexdigest()


def check_signature(
    secret: bytes, timestamp: str | None, body: bytes, signed: str | None, now: float
) -> str | None:
    """None when Slack signed ``body`` at ``timestamp``, within MAX_AGE of ``now``; else why not."""
    if not timestamp or not signed:
        return "missing X-Slack-Signature or X-Slack-Request-Timestamp"
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return "X-Slack-Request-Timestamp is not a Unix time"
    if abs(now - int(timestamp)) > MAX_AGE:
        return "X-Slack-Request-Timestamp is more than 5 minutes away from now"
    expected = signature(secret, timestamp, body).encode("ascii")
    if not hmac.compare_digest(expected, signed.encode("utf-8", "replace")):
        return "bad X-Slack-Signature"
    return None


def parse_press(body: bytes) -> Press:
    """The press in a form-encoded body (field ``payload``, JSON); raises Refused (400)."""
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=True, max_num_fields=8)
        [text] = form["payload"]
        payload = json.loads(text)
    except (UnicodeDecodeError, ValueError, KeyError, RecursionError):
        raise Refused(400, "the body is not a form with one JSON field 'payload'") from None
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        raise Refused(400, "not a block_actions payload")
    user = payload.get("user")
    actions = payload.get("actions")
    if not isinstance(user, dict) or not isinstance(user.get("id"), str):
        raise Refused(400, "the payload names no user")
    if not isinstance(actions, list) or len(actions) != 1 or not isinstance(actions[0], dict):
        raise Refused(400, "the payload carries no single action")
    action = cast(dict[str, Any], actions[0])
    decision = action.get("action_id")
    if decision not in DECISIONS:
        raise Refused(400, "the action is neither approve nor reject")
    named = read_button_value(action.get("value"))
    if named is None:
        raise Refused(400, "the button's value names no target and deployment")
    name = user.get("username") or user.get("name")
    response_url = payload.get("response_url")
    return Press(
        decision=decision,
        target=named[0],
        deployment=named[1],
        user=user["id"],
        user_name=name if isinstance(name, str) else None,
        response_url=response_url if isinstance(response_url, str) else None,
    )


async def interactions(request: Request) -> Response:
    rt = runtime(request)
    response = await _interactions(rt, request)
    rt.metrics.requests.labels("slack", str(response.status_code)).inc()
    return response


async def _interactions(rt: Runtime, request: Request) -> Response:
    body = await _signed_body(rt, request)
    if isinstance(body, Response):
        return body
    press: Press | None = None
    try:
        press = parse_press(body)
        await _admit(rt, press)
        outcome = await approvals.submit(
            rt,
            rt.targets[press.target],
            press.decision,
            source="slack",
            actor=f"slack:{press.user}",
            body_key="slack:" + hashlib.sha256(body).hexdigest(),
        )
    except Refused as exc:
        log.warning("[slack] press refused (%d): %s", exc.code, exc)
        return _told(rt, press, answers.answer(exc.code, "refused", str(exc)), str(exc))
    except StoreFailed as exc:
        log.warning("[slack] 503: %s", exc)
        return answers.unavailable("the press could not be stored; try again")
    if not isinstance(outcome, Queued):
        log.warning("[slack] a replayed request was refused")
        why = "this request was acted on already"
        return _told(rt, press, answers.answer(409, "refused", why), why)
    # Slack wants a 200 within 3 seconds; the deployment is the worker's.
    return answers.reply(200, {"status": "queued", "id": outcome.event_id})


def _told(rt: Runtime, press: Press | None, response: Response, why: str) -> Response:
    """The refusal, told to the presser alone once the answer has left (an ephemeral
    message through the payload's response_url, when it is Slack's)."""
    replies = rt.slack_replies
    if replies is not None and press is not None and press.response_url:
        text = f"rollhook did not act on your {press.decision} press: {why}."
        response.background = BackgroundTask(replies.tell, press.response_url, text)
    return response


async def _signed_body(rt: Runtime, request: Request) -> bytes | Response:
    """The body Slack signed, or the answer that refuses the request."""
    secret = rt.settings.slack_signing_secret
    if secret is None:
        return answers.not_found()
    client = rt.client(request)
    if (retry_after := rt.auth_failures.retry_after(client)) is not None:
        return answers.too_many(retry_after)  # a client that keeps failing is not heard
    cap = min(BODY_CAP, rt.settings.max_body_bytes)
    try:
        body = await read_capped(request, cap)
    except ClientDisconnect:
        return answers.bad_request("client went away")
    if body is None:
        return answers.too_large(cap)
    why = check_signature(
        secret.get_secret_value().encode(),
        request.headers.get("x-slack-request-timestamp"),
        body,
        request.headers.get("x-slack-signature"),
        time.time(),
    )
    if why is not None:
        log.warning("[slack] refused from %s: %s", printable(client), why)
        return rt.auth_failed(client, answers.unauthorized(why))
    return body


async def _admit(rt: Runtime, press: Press) -> None:
    """Raise Refused unless the target exists, the user approves it and the deployment waits."""
    target = rt.targets.get(press.target)
    if target is None:
        raise Refused(404, f"unknown target {press.target!r}")
    if press.user not in target.approve.approvers:
        raise Refused(403, f"{press.user} is not one of {target.name}'s approvers")
    record = await run_in_threadpool(_deployment, rt, press.deployment)
    if record is None or record.target != target.name:
        raise Refused(404, f"{target.name} has no deployment {press.deployment!r}")
    if record.status != "queued" or record.manual:
        raise Refused(409, f"deployment {record.id} no longer waits ({record.status})")


def _deployment(rt: Runtime, deployment_id: str) -> DeploymentRecord | None:
    with rt.engine.connect() as conn:
        return deployments.get(conn, deployment_id)


ROUTES = [Route("/hooks/slack/interactions", interactions, methods=["POST"])]
