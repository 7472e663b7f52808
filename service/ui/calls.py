"""The HTTP API, called in-process: what the dashboard reads and does is the API's own code.

A call is one ASGI request through the whole app (its routes, the API's guard with the
configured token, the handler), answered in memory. So the dashboard shows exactly what
``GET /targets`` or ``GET /deployments/{id}`` answer (and whatever fields they come to
hold), and a button press is exactly ``POST /deploy`` or ``POST /targets/{name}/sync``,
with the session named as the actor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.types import Message

from service.api import FROM_DASHBOARD
from service.runtime import runtime


@dataclass(frozen=True)
class Answer:
    code: int
    document: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300


def segment(value: str) -> str:
    """A path segment, quoted (a target name or an id from a URL goes back into one)."""
    return quote(value, safe="")


async def call(
    request: Request,
    method: str,
    path: str,
    *,
    params: dict[str, str] | None = None,
    document: dict[str, Any] | None = None,
) -> Answer:
    """Answer ``method path`` as the API would answer the configured token's holder."""
    token = runtime(request).settings.api_token
    if token is None:  # the dashboard is not served without it; nor is the API
        return Answer(404, {"status": "not_found"})
    body = b"" if document is None else json.dumps(document).encode()
    headers = [
        (b"authorization", b"Bearer " + token.get_secret_value().encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    root = request.scope.get("root_path", "")
    scope = {
        "type": "http",
        "asgi": request.scope.get("asgi", {"version": "3.0"}),
        "http_version": "1.1",
        "method": method,
        "scheme": request.url.scheme,
        "path": root + path,
        "raw_path": (root + path).encode(),
        "root_path": root,
        "query_string": urlencode(params or {}).encode(),
        "headers": headers,
        "client": request.scope.get("client"),
        "server": request.scope.get("server"),
        "state": dict(request.scope.get("state", {})),
        FROM_DASHBOARD: True,
    }
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    code = 500
    chunks: list[bytes] = []

    async def send(message: Message) -> None:
        nonlocal code
        if message["type"] == "http.response.start":
            code = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await request.app(scope, receive, send)
    try:
        answered = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        answered = {}
    return Answer(code, answered if isinstance(answered, dict) else {})
