"""The API for people and CI: deploy, rollback, sync, pause and resume (reads:
``service.views``).

Every endpoint needs ``Authorization: Bearer <ROLLHOOK_API_TOKEN>``; with no token
configured the API does not exist (404). Deploys and rollbacks go through the same
recorder as webhooks: stored with their job before the 202, deduplicated by the
``Idempotency-Key`` header when one is given.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from rollhook import events
from rollhook.events import JobFields
from rollhook.images import ImageRef, ReferenceError, parse_reference
from rollhook.jobs import ImageHint
from rollhook.records import deployments
from rollhook.records import sync as sync_records
from rollhook.records import targets as target_records
from rollhook.records.deployments import DeploymentRecord
from rollhook.targets import Target
from service import answers, signatures
from service.hooks import read_capped
from service.logs import printable, request_log
from service.recorder import Duplicate, Paused, StoreFailed
from service.runtime import Runtime, runtime
from service.sources import dedup_key

log = logging.getLogger("rollhook.api")

Action = Literal["deploy", "rollback", "sync"]
Handler = Callable[[Runtime, Request], Awaitable[Response]]
_SHA = re.compile(r"^[0-9a-f]{7,64}$")
# A branch name as git check-ref-format allows it, simplified and strict.
_BRANCH = re.compile(r"^(?!-)(?!.*\.\.)(?!.*//)(?!.*@\{)(?!.*\.lock$)[\w./-]{1,200}(?<![/.])$")
ROLLBACK_TO = ("succeeded", "no_op")  # states known to have served
# Set in the scope of the dashboard's in-process calls (service/ui/calls.py): counted as
# source "ui", so that a page left open is not API traffic in the metrics.
FROM_DASHBOARD = "rollhook.from_dashboard"


class BadRequest(Exception):
    """Answered 400 with the message as the reason."""


class NotFound(Exception):
    """Answered 404 with the message as the reason."""


def guarded(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """404 without an API token, 429 for clients that keep failing, 401 without the token."""

    async def endpoint(request: Request) -> Response:
        rt = runtime(request)
        response = await _guard(rt, request, handler)
        source = "ui" if request.scope.get(FROM_DASHBOARD) else "api"
        rt.metrics.requests.labels(source, str(response.status_code)).inc()
        return response

    return endpoint


async def _guard(rt: Runtime, request: Request, handler: Handler) -> Response:
    token = rt.settings.api_token
    if token is None:
        return answers.not_found()
    if not signatures.verify_bearer(request.headers.get("authorization"), token.get_secret_value()):
        client = rt.client(request)
        log.warning("[api] refused from %s: missing or bad token", printable(client))
        return rt.auth_failed(client)
    try:
        return await handler(rt, request)
    except BadRequest as exc:
        return answers.bad_request(str(exc))
    except NotFound as exc:
        return answers.not_found(str(exc))


async def read_json(rt: Runtime, request: Request) -> dict[str, Any]:
    try:
        body = await read_capped(request, rt.settings.max_body_bytes)
    except ClientDisconnect:
        raise BadRequest("client went away") from None
    if body is None:
        raise BadRequest(f"body over {rt.settings.max_body_bytes} bytes")
    if not body.strip():
        return {}
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise BadRequest("body is not valid JSON") from None
    if not isinstance(document, dict):
        raise BadRequest("body is not a JSON object")
    return document


def _string(document: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = document.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{key!r} must be a non-empty string")
    return value.strip()


async def _requested(rt: Runtime, request: Request) -> tuple[dict[str, Any], Target]:
    """The request's JSON body and the configured target it names."""
    document = await read_json(rt, request)
    name = _string(document, "target", required=True)
    target = rt.targets.get(name) if name else None
    if target is None:
        raise NotFound(f"unknown target {name!r}")
    return document, target


async def deploy(rt: Runtime, request: Request) -> Response:
    document, target = await _requested(rt, request)
    ref = _string(document, "ref")
    if ref is not None:
        ref = ref.removeprefix("refs/heads/")
        if not (_SHA.match(ref) or _BRANCH.match(ref)):
            raise BadRequest("'ref' must be a branch name or a commit sha")
    image_text = _string(document, "image")
    image = None if image_text is None else _image_hint(target, image_text)
    fields: JobFields = {"ref": ref, "image": image, **_force(document)}
    return await _submit(rt, request, target, action="deploy", fields=fields, document=document)


def _force(document: dict[str, Any]) -> JobFields:
    """``"force": true``: a person deploys outside the deploy window on purpose (a person's
    request is never held by a window; the record says it was forced)."""
    force = document.get("force", False)
    if not isinstance(force, bool):
        raise BadRequest("'force' must be true or false")
    return {"force": True} if force else {}


def _image_hint(target: Target, text: str) -> ImageHint:
    if text.startswith("sha256:"):
        if len(target.image_refs) != 1:
            raise BadRequest("a bare digest needs a target with exactly one image; name the image")
        text = f"{target.image_refs[0].name}@{text}"
    try:
        ref: ImageRef = parse_reference(text)
    except ReferenceError as exc:
        raise BadRequest(f"'image': {exc}") from None
    if not target.watches_image(ref):
        raise BadRequest(f"image {ref.name} is not one of target {target.name}'s images")
    if not ref.tag and not ref.digest:
        raise BadRequest("'image' needs a tag or a digest")
    return ImageHint(repository=ref.name, tag=ref.tag, digest=ref.digest)


async def rollback(rt: Runtime, request: Request) -> Response:
    document, target = await _requested(rt, request)
    to = _string(document, "to")
    restore = document.get("restore_data")
    if restore is not None and not isinstance(restore, bool):
        raise BadRequest("'restore_data' must be true or false")
    if to is not None:
        record = await run_in_threadpool(_deployment, rt, to)
        if record is None:
            return answers.not_found(f"no deployment {to!r}")
        if record.target != target.name:
            raise BadRequest(
                f"deployment {to} belongs to target {record.target}, not {target.name}"
            )
        if record.status not in ROLLBACK_TO:
            raise BadRequest(
                f"deployment {to} did not succeed ({record.status}); pick one that did"
            )
    fields: JobFields = {"rollback_to": to, "restore_data": restore, **_force(document)}
    return await _submit(rt, request, target, action="rollback", fields=fields, document=document)


def _deployment(rt: Runtime, deployment_id: str) -> DeploymentRecord | None:
    with rt.engine.connect() as conn:
        return deployments.get(conn, deployment_id)


async def _submit(
    rt: Runtime,
    request: Request,
    target: Target,
    *,
    action: Action,
    fields: JobFields,
    document: dict[str, Any],
) -> Response:
    key = request.headers.get("idempotency-key")
    summary = {"targets": [target.name], "action": action} | {
        k: (v.model_dump() if isinstance(v, ImageHint) else v)
        for k, v in fields.items()
        if v is not None
    }
    event = events.new_event(
        "api",
        action,
        dedup_key=dedup_key("api", key) if key else None,
        delivery_id=key,
        actor=_string(document, "actor") or "api",
        summary=summary,
        jobs={target.name: {"action": action, **fields}},
        manual=True,
    )
    rlog = request_log(log, "api", event.delivery_id or event.id)
    try:
        outcome = await rt.recorder.record(event)
    except StoreFailed as exc:
        rlog.error("503: %s", exc)
        return answers.unavailable("the request could not be stored; try again")
    if isinstance(outcome, Duplicate):
        return answers.ignored("duplicate delivery", id=outcome.event_id)
    if isinstance(outcome, Paused):
        return answers.ignored("target paused", target.name)
    rt.metrics.events_stored.labels("api").inc()
    rlog.info("202 %s of %s queued as event %s", action, target.name, outcome.event_id)
    return answers.queued(outcome.event_id)


async def sync(rt: Runtime, request: Request) -> Response:
    """Poll the target now and apply what is found: a new desired state (and whatever
    waits for approval in manual mode) as a deployment, else drift as a heal. The worker
    decides which; the event shows what it led to. Recorded with who asked (``actor``)."""
    name = request.path_params["name"]
    target = rt.targets.get(name)
    if target is None:
        return answers.not_found(f"unknown target {name!r}")
    document = await read_json(rt, request)
    return await _submit(rt, request, target, action="sync", fields={}, document=document)


async def pause(rt: Runtime, request: Request) -> Response:
    return await _set_paused(rt, request, paused=True)


async def resume(rt: Runtime, request: Request) -> Response:
    return await _set_paused(rt, request, paused=False)


async def _set_paused(rt: Runtime, request: Request, *, paused: bool) -> Response:
    name = request.path_params["name"]
    if name not in rt.targets:
        return answers.not_found(f"unknown target {name!r}")
    document = await read_json(rt, request)
    reason = _string(document, "reason") if paused else None
    if reason is not None:
        reason = reason[:200]
    actor = _string(document, "actor") or "api"

    def write() -> None:
        with rt.engine.begin() as conn:
            target_records.set_paused(conn, name, paused, reason)
            if not paused:  # a person's resume: healing may start over
                sync_records.forgive(conn, name)

    await run_in_threadpool(write)
    log.info(
        "[api] target %s %s by %s%s",
        name,
        "paused" if paused else "resumed",
        printable(actor),
        f": {printable(reason)}" if reason else "",
    )
    return answers.answer(200, "paused" if paused else "resumed", reason, target=name)
