"""The webhook endpoints: one pipeline, one answer per stage.

configured? -> blocked? -> size -> auth (raw bytes) -> content type -> parse -> match
-> dedup + store + outbox (one commit) -> 202. A sender whose event is merely not ours
gets a 200 with the reason: registries retry anything else, and GitLab disables hooks
that keep failing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from rollhook.ids import new_id
from rollhook.jobs import ImageHint, Job, Trigger
from rollhook.records.events import NewEvent
from rollhook.settings import Settings
from service import answers, signatures
from service.logs import request_log
from service.recorder import Duplicate, Paused, StoreFailed
from service.runtime import Runtime, runtime
from service.sources import (
    GitPush,
    Hints,
    Ignored,
    Malformed,
    Parsed,
    Push,
    dockerhub,
    github,
    gitlab,
    harbor,
    registry,
)

log = logging.getLogger("rollhook.hooks")

Authenticate = Callable[[Settings, Request, bytes], bool]
Parse = Callable[[Mapping[str, str], bytes, str], Parsed]


@dataclass(frozen=True)
class Endpoint:
    source: str
    configured: Callable[[Settings], bool]
    authenticate: Authenticate
    content_types: frozenset[str]
    parse: Parse


def _secret(value: Any) -> str:
    return str(value.get_secret_value())


ENDPOINTS = {
    "github": Endpoint(
        "github",
        lambda s: s.github_secret is not None,
        lambda s, r, body: signatures.verify_hub_signature(
            body, r.headers.get("x-hub-signature-256"), s.github_secrets()
        ),
        github.CONTENT_TYPES,
        github.parse,
    ),
    "gitlab": Endpoint(
        "gitlab",
        lambda s: s.gitlab_token is not None,
        lambda s, r, _: signatures.verify_token(
            r.headers.get("x-gitlab-token"), _secret(s.gitlab_token)
        ),
        gitlab.CONTENT_TYPES,
        lambda h, body, _: gitlab.parse(h, body),
    ),
    "registry": Endpoint(
        "registry",
        lambda s: s.registry_token is not None,
        lambda s, r, _: signatures.verify_bearer(
            r.headers.get("authorization"), _secret(s.registry_token)
        ),
        registry.CONTENT_TYPES,
        lambda h, body, _: registry.parse(h, body),
    ),
    "dockerhub": Endpoint(
        "dockerhub",
        lambda s: s.dockerhub_token is not None,
        lambda s, r, _: signatures.verify_token(
            r.path_params.get("token"), _secret(s.dockerhub_token)
        ),
        dockerhub.CONTENT_TYPES,
        lambda h, body, _: dockerhub.parse(h, body),
    ),
    "harbor": Endpoint(
        "harbor",
        lambda s: s.harbor_token is not None,
        lambda s, r, _: signatures.verify_harbor(
            r.headers.get("authorization"), _secret(s.harbor_token)
        ),
        harbor.CONTENT_TYPES,
        harbor.parse,
    ),
}


async def read_capped(request: Request, cap: int) -> bytes | None:
    """The body, or None when it is (or announces to be) over the cap; chunked included."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def route(endpoint: Endpoint, path: str) -> Route:
    async def handle(request: Request) -> Response:
        rt = runtime(request)
        response = await _receive(rt, endpoint, request)
        rt.metrics.requests.labels(endpoint.source, str(response.status_code)).inc()
        return response

    return Route(path, handle, methods=["POST"], name=f"hook_{endpoint.source}")


async def _receive(rt: Runtime, endpoint: Endpoint, request: Request) -> Response:
    admitted = await _admit(rt, endpoint, request)
    if isinstance(admitted, Response):
        return admitted
    content_type = answers.content_type(request)
    if content_type not in endpoint.content_types:
        return answers.unsupported(content_type)
    rlog = request_log(log, endpoint.source, _delivery_header(request))
    try:
        parsed = endpoint.parse(request.headers, admitted, content_type)
    except Malformed as exc:
        rlog.info("400: %s", exc)
        return answers.bad_request(str(exc))
    if isinstance(parsed, Ignored):
        rlog.info("200 ignored: %s", parsed.reason)
        return answers.ignored(parsed.reason, parsed.detail)
    return await _accept(rt, parsed)


async def _admit(rt: Runtime, endpoint: Endpoint, request: Request) -> bytes | Response:
    """The raw body of an authenticated request, or the answer that stops it."""
    settings = rt.settings
    if not endpoint.configured(settings):
        return answers.not_found()
    client = rt.client(request)
    if blocked := rt.refuse_if_blocked(client):
        return blocked
    try:
        body = await read_capped(request, settings.max_body_bytes)
    except ClientDisconnect:
        return answers.bad_request("client went away")
    if body is None:
        return answers.too_large(settings.max_body_bytes)
    if not endpoint.authenticate(settings, request, body):
        rt.auth_failures.failed(client)
        request_log(log, endpoint.source, _delivery_header(request)).warning(
            "401 from %s: missing or bad credentials", client
        )
        return _unauthorized(endpoint, request)
    return body


def _unauthorized(endpoint: Endpoint, request: Request) -> Response:
    headers = request.headers
    if (
        endpoint.source == "github"
        and "x-hub-signature-256" not in headers
        and "x-hub-signature" in headers
    ):
        return answers.unauthorized("X-Hub-Signature-256 required; SHA-1 signatures are refused")
    return answers.unauthorized()


def _delivery_header(request: Request) -> str | None:
    """The sender's delivery id for log lines, before the body is parsed."""
    for name in ("x-github-delivery", "x-gitea-delivery", "idempotency-key", "x-gitlab-event-uuid"):
        if value := request.headers.get(name):
            return value[:200]
    return None


async def _accept(rt: Runtime, hints: Hints) -> Response:
    matched = rt.matcher.match(hints)
    rlog = request_log(log, hints.source, hints.delivery_id)
    if isinstance(matched, Ignored):
        rlog.info("200 ignored: %s", matched.reason)
        return answers.ignored(matched.reason, matched.detail)
    event = new_event(hints, matched)
    try:
        outcome = await rt.recorder.record(event)
    except StoreFailed as exc:
        rlog.error("503: %s", exc)
        return answers.unavailable("the event could not be stored; deliver it again")
    if isinstance(outcome, Duplicate):
        rlog.info("200 duplicate of event %s", outcome.event_id)
        return answers.ignored("duplicate delivery", id=outcome.event_id)
    if isinstance(outcome, Paused):
        rlog.info("200 ignored: target paused (%s)", ", ".join(outcome.targets))
        return answers.ignored("target paused", ", ".join(outcome.targets))
    rt.metrics.events_stored.labels(hints.source).inc()
    rlog.info(
        "202 event %s queued for %s", outcome.event_id, ", ".join(j.target for j in outcome.jobs)
    )
    return answers.queued(outcome.event_id)


def new_event(hints: Hints, matched: Mapping[str, Push]) -> NewEvent:
    event_id = new_id("e")
    now = datetime.now(UTC)
    delivery_id = hints.delivery_id[:200]
    actor = hints.actor[:200] if hints.actor else None
    trigger = Trigger(source=hints.source, event_id=event_id, delivery_id=delivery_id, actor=actor)
    jobs = [
        Job(id=new_id("j"), target=name, trigger=trigger, received_at=now, **_hint(push))
        for name, push in sorted(matched.items())
    ]
    pushes = list(dict.fromkeys(matched.values()))
    return NewEvent(
        id=event_id,
        source=hints.source,
        dedup_key=hints.dedup_key,
        kind=hints.kind,
        summary={"targets": sorted(matched), "pushes": [summarize(p) for p in pushes]},
        received_at=now,
        delivery_id=delivery_id,
        actor=actor,
        jobs=jobs,
    )


def _hint(push: Push) -> dict[str, Any]:
    if isinstance(push, GitPush):
        return {"ref": push.after}
    return {"image": ImageHint(repository=push.image.name, tag=push.tag, digest=push.digest)}


def summarize(push: Push) -> dict[str, Any]:
    """What the event records about a push: enough to read it later, never the body."""
    if isinstance(push, GitPush):
        return {
            "repository": push.repository,
            "branch": push.branch,
            "after": push.after,
            "changed_paths": None if push.changed is None else len(push.changed),
        }
    return {"image": push.image.name, "tag": push.tag, "digest": push.digest}


ROUTES = [
    route(ENDPOINTS["github"], "/hooks/github"),
    route(ENDPOINTS["gitlab"], "/hooks/gitlab"),
    route(ENDPOINTS["registry"], "/hooks/registry"),
    route(ENDPOINTS["dockerhub"], "/hooks/dockerhub/{token}"),
    route(ENDPOINTS["harbor"], "/hooks/harbor"),
]
