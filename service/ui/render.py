"""Templates and the headers every dashboard answer carries.

The Content-Security-Policy allows scripts and styles from our own origin only: no
inline script, no inline style, no eval (htmx is configured not to need them), and no
framing. Templates are autoescaped; record fields are shown as text, never as markup.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from rollhook.images import ReferenceError, parse_reference
from rollhook.records.schema import TERMINAL_STATUSES

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
PAGE_HEADERS = HEADERS | {"Cache-Control": "no-store"}


def when(text: str | None) -> str:
    """An ISO 8601 time from the records, as a person reads it (UTC)."""
    if not text:
        return ""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def duration(start: str | None, end: str | None) -> str:
    if not start or not end:
        return ""
    try:
        seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    except ValueError:
        return ""
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def version(reference: str | None) -> dict[str, str]:
    """An image reference's tag, short digest and full text (the text as the tag if it
    does not parse)."""
    if not reference:
        return {"tag": "", "digest": "", "full": ""}
    try:
        ref = parse_reference(reference)
    except ReferenceError:
        return {"tag": reference, "digest": "", "full": reference}
    digest = ref.digest or ""
    algorithm, _, hexdigits = digest.partition(":")
    return {
        "tag": ref.tag or "",
        "digest": f"{algorithm}:{hexdigits[:12]}" if hexdigits else digest,
        "full": str(ref),
    }


def headline(message: str | None) -> str:
    """A commit message's first line."""
    return (message or "").strip().split("\n", 1)[0]


def plain(value: Any) -> str:
    """A field of unknown shape as text: JSON for lists and mappings."""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def final(status: str | None) -> bool:
    return status in TERMINAL_STATUSES


_env = jinja2.Environment(
    loader=jinja2.PackageLoader("service.ui", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters.update(when=when, version=version, headline=headline, plain=plain)
_env.globals.update(duration=duration, final=final, final_statuses=sorted(TERMINAL_STATUSES))


def text(name: str, **context: Any) -> str:
    return _env.get_template(name).render(**context)


def prefix(request: Request) -> str:
    """Where the dashboard lives, behind a proxy's path prefix if there is one."""
    return str(request.scope.get("root_path", "")) + "/ui"


def page(
    request: Request,
    name: str,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Response:
    context.setdefault("session", None)
    html = text(name, ui=prefix(request), **context)
    return HTMLResponse(html, status, headers=PAGE_HEADERS | (headers or {}))


def with_headers(response: Response) -> Response:
    """The security headers on an answer made elsewhere (a redirect, a 404)."""
    for name, value in PAGE_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
