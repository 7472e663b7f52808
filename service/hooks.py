"""The webhook endpoints: one pipeline, one answer per stage.

configured? -> credentials in headers or the URL (a blocked client that sends the right
ones is still heard) -> for a signed body: blocked? (429, the body never read), a
signature-shaped header -> body (size, deadline) -> signature on the raw bytes -> content
type -> parse -> match -> dedup + store + outbox (one commit) -> 202. A sender whose event
is merely not ours gets a 200 with the reason: registries retry anything else, and GitLab
disables hooks that keep failing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from rollhook import events
from rollhook.events import JobFields, NewEvent
from rollhook.jobs import ImageHint
from rollhook.settings import Settings
from service import answers, signatures
from service.logs import printable
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

# (settings, the request's headers, the request, its raw body) -> authentic?
Authenticate = Callable[[Settings, Mapping[str, str], Request, bytes], bool]
Parse = Callable[[Mapping[str, str], bytes, str], Parsed]


@dataclass(frozen=True)
class Endpoint:
    source: str
    configured: Callable[[Settings], bool]
    authenticate: Authenticate
    content_types: frozenset[str]
    parse: Parse


BODY_DEADLINE = 10.0  # GitHub itself gives up after 10 s; a slower body is not a sender


def _secret(value: Any) -> str:
    return str(value.get_secret_value())


ENDPOINTS = {
    "github": Endpoint(
        "github",
        lambda s: s.github_secret is not None,
        lambda s, h, _, body: signatures.verify_hub_signature(
            body, h.get("x-hub-signature-256"), s.github_secrets()
        ),
        github.CONTENT_TYPES,
        github.parse,
    ),
    "gitlab": Endpoint(
        "gitlab",
        lambda s: s.gitlab_token is not None,
        lambda s, h, _, __: signatures.verify_token(
            h.get("x-gitlab-token"), _secret(s.gitlab_token)
        ),
        gitlab.CONTENT_TYPES,
        lambda h, body, _: gitlab.parse(h, body),
    ),
    "registry": Endpoint(
        "registry",
        lambda s: s.registry_token is not None,
        lambda s, h, _, __: signatures.verify_bearer(
            h.get("authorization"), _secret(s.registry_token)
        ),
        registry.CONTENT_TYPES,
        lambda h, body, _: registry.parse(h, body),
    ),
    "dockerhub": Endpoint(
        "dockerhub",
        lambda s: s.dockerhub_token is not None,
        lambda s, _, r, __: signatures.verify_token(
            r.path_params.get("token"), _secret(s.dockerhub_token)
        ),
        dockerhub.CONTENT_TYPES,
        lambda h, body, _: dockerhub.parse(h, body),
    ),
    "harbor": Endpoint(
        "harbor",
        lambda s: s.harbor_token is not None,
        lambda s, h, _, __: signatures.verify_harbor(
            h.get("authorization"), _secret(s.harbor_token)
        ),
        harbor.CONTENT_TYPES,
        harbor.parse,
    ),
}


async def read_capped(request: Request, cap: int) -> bytes | None:
    """The body, or None when it is (or announces to be) over the cap; chunked included."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > cap:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def header_map(request: Request) -> dict[str, str]:
    """The request's headers as a plain dict, read once.

    ASGI names are lowercase already; of a repeated header the first wins, as with
    Starlette's ``Headers.get``. A webhook looks up a dozen headers, most of them
    absent, and a missing name costs Starlette a scan and an exception each time.
    """
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in reversed(request.scope["headers"])
    }


@dataclass
class Line:
    """The one log line a webhook gets (uvicorn's access line is left out for it).

    It names the source and the sender's delivery id (the parsed ones once known), the
    client, the answer's code and what happened.
    """

    source: str
    delivery_id: str | None
    client: str = "-"
    level: int = logging.INFO
    note: str = ""

    def says(self, note: str, level: int = logging.INFO) -> None:
        self.note, self.level = note, level

    def write(self, code: int) -> None:
        # The delivery id, the content type in a note, an address: a client chose them.
        delivery_id = printable(self.delivery_id) if self.delivery_id else None
        log.log(
            self.level,
            "[%s delivery=%s] %d from %s: %s",
            self.source,
            delivery_id or "-",
            code,
            printable(self.client),
            printable(self.note),
            extra={"source": self.source, "delivery_id": delivery_id},
        )


def route(endpoint: Endpoint, path: str) -> Route:
    async def handle(request: Request) -> Response:
        rt = runtime(request)
        headers = header_map(request)
        line = Line(endpoint.source, _delivery_header(headers))
        response = await _receive(rt, endpoint, request, headers, line)
        line.write(response.status_code)
        rt.metrics.count_request(endpoint.source, response.status_code)
        return response

    return Route(path, handle, methods=["POST"], name=f"hook_{endpoint.source}")


async def _receive(
    rt: Runtime, endpoint: Endpoint, request: Request, headers: dict[str, str], line: Line
) -> Response:
    admitted = await _admit(rt, endpoint, request, headers, line)
    if isinstance(admitted, Response):
        return admitted
    content_type = answers.media_type(headers.get("content-type", ""))
    if content_type not in endpoint.content_types:
        line.says(f"content type {content_type or '(none)'} not accepted")
        return answers.unsupported(content_type)
    try:
        parsed = endpoint.parse(headers, admitted, content_type)
    except Malformed as exc:
        line.says(str(exc))
        return answers.bad_request(str(exc))
    if isinstance(parsed, Ignored):
        line.says(f"ignored: {parsed.reason}")
        return answers.ignored(parsed.reason, parsed.detail)
    line.source, line.delivery_id = parsed.source, parsed.delivery_id[:200]
    return await _accept(rt, parsed, line)


async def _admit(
    rt: Runtime, endpoint: Endpoint, request: Request, headers: dict[str, str], line: Line
) -> bytes | Response:
    """The raw body of an authenticated request, or the answer that stops it."""
    settings = rt.settings
    line.client = rt.client(request)
    if not endpoint.configured(settings):
        line.says("source not configured")
        return answers.not_found()
    # Credentials in headers or the URL are checked before the body is read; a signed
    # body at least needs a signature-shaped header first. Either way an unauthenticated
    # client gets no megabytes buffered.
    signed_body = endpoint.source == "github"
    if signed_body and (retry_after := rt.auth_failures.retry_after(line.client)) is not None:
        # A signed body can only be checked once read, and reading it is what a client
        # that keeps failing must not get: a blocked client's body is never read.
        line.says("too many failures; body not read", logging.WARNING)
        return answers.too_many(retry_after)
    if not (
        signatures.hub_signature_shaped(headers.get("x-hub-signature-256"))
        if signed_body
        else endpoint.authenticate(settings, headers, request, b"")
    ):
        return _refuse(rt, endpoint, headers, line)
    body = await _read_body(request, settings.max_body_bytes, line)
    if signed_body and isinstance(body, bytes):
        return (
            body
            if endpoint.authenticate(settings, headers, request, body)
            else _refuse(rt, endpoint, headers, line)
        )
    return body


async def _read_body(request: Request, cap: int, line: Line) -> bytes | Response:
    """The body within the cap and the deadline, or the answer that says why not."""
    try:
        async with asyncio.timeout(BODY_DEADLINE):
            body = await read_capped(request, cap)
    except ClientDisconnect:
        line.says("client went away")
        return answers.bad_request("client went away")
    except TimeoutError:
        line.says(f"body not received within {BODY_DEADLINE:g}s", logging.WARNING)
        return answers.answer(408, "error", f"body not received within {BODY_DEADLINE:g}s")
    if body is None:
        line.says(f"body over {cap} bytes")
        return answers.too_large(cap)
    return body


def _refuse(rt: Runtime, endpoint: Endpoint, headers: Mapping[str, str], line: Line) -> Response:
    answer = rt.auth_failed(line.client, _unauthorized(endpoint, headers))
    line.says(
        "missing or bad credentials" + ("; too many failures" if answer.status_code == 429 else ""),
        logging.WARNING,
    )
    return answer


def _unauthorized(endpoint: Endpoint, headers: Mapping[str, str]) -> Response:
    if (
        endpoint.source == "github"
        and "x-hub-signature-256" not in headers
        and "x-hub-signature" in headers
    ):
        return answers.unauthorized("X-Hub-Signature-256 required; SHA-1 signatures are refused")
    return answers.unauthorized()


def _delivery_header(headers: Mapping[str, str]) -> str | None:
    """The sender's delivery id for log lines, before the body is parsed."""
    for name in ("x-github-delivery", "x-gitea-delivery", "idempotency-key", "x-gitlab-event-uuid"):
        if value := headers.get(name):
            return value[:200]
    return None


async def _accept(rt: Runtime, hints: Hints, line: Line) -> Response:
    matched = rt.matcher.match(hints)
    if isinstance(matched, Ignored):
        line.says(f"ignored: {matched.reason}")
        return answers.ignored(matched.reason, matched.detail)
    event = new_event(hints, matched)
    try:
        outcome = await rt.recorder.record(event)
    except StoreFailed as exc:
        line.says(str(exc), logging.ERROR)
        return answers.unavailable("the event could not be stored; deliver it again")
    if isinstance(outcome, Duplicate):
        line.says(f"duplicate of event {outcome.event_id}")
        return answers.ignored("duplicate delivery", id=outcome.event_id)
    if isinstance(outcome, Paused):
        line.says(f"ignored: target paused ({', '.join(outcome.targets)})")
        return answers.ignored("target paused", ", ".join(outcome.targets))
    rt.metrics.count_stored(hints.source)
    line.says(f"event {outcome.event_id} queued for {', '.join(j.target for j in outcome.jobs)}")
    return answers.queued(outcome.event_id)


def new_event(hints: Hints, matched: Mapping[str, Push]) -> NewEvent:
    pushes = list(dict.fromkeys(matched.values()))
    return events.new_event(
        hints.source,
        hints.kind,
        dedup_key=hints.dedup_key,
        delivery_id=hints.delivery_id,
        actor=hints.actor,
        summary={"targets": sorted(matched), "pushes": [summarize(p) for p in pushes]},
        jobs={name: _hint(push) for name, push in matched.items()},
        body_key=hints.body_key,
    )


def _hint(push: Push) -> JobFields:
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
