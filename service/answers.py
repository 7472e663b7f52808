"""The answers rollhook gives: JSON with a ``status`` and, where useful, a ``reason``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from starlette.responses import Response

JSON = "application/json"


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, set | frozenset | tuple):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(document: Any) -> bytes:
    return json.dumps(document, default=_default, separators=(",", ":")).encode()


def reply(code: int, document: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(document), code, headers=headers, media_type=JSON)


def answer(code: int, status: str, reason: str | None = None, **fields: Any) -> Response:
    document: dict[str, Any] = {"status": status}
    if reason is not None:
        document["reason"] = reason
    document.update({k: v for k, v in fields.items() if v is not None})
    return reply(code, document)


def queued(event_id: str) -> Response:
    # The answer to nearly every webhook: written out, as dumps() would, without a dumps().
    return Response(
        b'{"status":"queued","id":' + json.dumps(event_id).encode() + b"}", 202, media_type=JSON
    )


def ignored(reason: str, detail: str | None = None, **fields: Any) -> Response:
    return answer(200, "ignored", reason, detail=detail, **fields)


def bad_request(reason: str) -> Response:
    return answer(400, "bad_request", reason)


def unauthorized(reason: str = "missing or bad credentials") -> Response:
    return answer(401, "unauthorized", reason)


def not_found(reason: str = "not found") -> Response:
    return answer(404, "not_found", reason)


def too_large(limit: int) -> Response:
    return answer(413, "too_large", f"body over {limit} bytes")


def unsupported(content_type: str) -> Response:
    return answer(
        415, "unsupported_media_type", f"content type {content_type or '(none)'} not accepted"
    )


def too_many(retry_after: int) -> Response:
    return Response(
        dumps({"status": "too_many_requests", "reason": "too many failed authentications"}),
        429,
        headers={"Retry-After": str(retry_after)},
        media_type=JSON,
    )


def unavailable(reason: str) -> Response:
    return answer(503, "unavailable", reason)


def media_type(header: str) -> str:
    """A Content-Type header's media type without parameters, lowercased."""
    return header.split(";", 1)[0].strip().lower()
