"""A deployment as it runs: server-sent events from its record, until the record is final.

The stream reads the record (``GET /deployments/{id}``, in-process) every ``POLL``
seconds and sends the parts of the page that changed, as HTML for htmx's SSE extension
to swap in: ``summary``, ``steps`` and ``log``. When the record is final it sends them a
last time and ``end``, which closes the browser's EventSource; a stream that ends
without ``end`` (after ``MAX_SECONDS``) is reconnected by the browser.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from service.ui import render
from service.ui.access import Form, signed_in
from service.ui.pages import deployment_record, missing
from service.ui.session import Session

POLL = 0.5
# One stream lasts at most this long; the browser then reconnects within RETRY_MS and a
# new stream starts from the record as it is. A stopping web process waits for open
# responses to end, so an open page must not hold it up for long.
MAX_SECONDS = 8.0
RETRY_MS = 500
PARTS = {"summary": "_summary.html", "steps": "_steps.html", "log": "_log.html"}


def event(name: str, html: str) -> bytes:
    """One server-sent event; every line of ``html`` is a ``data:`` line."""
    lines = "".join(f"data: {line}\n" for line in html.splitlines() or [""])
    return f"event: {name}\n{lines}\n".encode()


async def _events(request: Request, deployment_id: str) -> AsyncIterator[bytes]:
    sent: dict[str, str] = {}
    deadline = time.monotonic() + MAX_SECONDS
    yield f"retry: {RETRY_MS}\n\n".encode()
    ui = render.prefix(request)
    while time.monotonic() < deadline:
        answer = await deployment_record(request, deployment_id)
        if not answer.ok:
            break
        record = answer.document
        for part, template in PARTS.items():
            html = render.text(template, d=record, ui=ui)
            if sent.get(part) != html:
                sent[part] = html
                yield event(part, html)
        if render.final(record.get("status")):
            break
        await asyncio.sleep(POLL)
    else:
        return  # the deadline: no "end", so the browser comes back for more
    yield event("end", "")


@signed_in
async def stream(request: Request, session: Session, form: Form) -> Response:
    deployment_id = request.path_params["deployment_id"]
    if not (await deployment_record(request, deployment_id)).ok:
        return missing(request, f"No deployment {deployment_id}.")
    headers = render.PAGE_HEADERS | {"X-Accel-Buffering": "no"}
    return StreamingResponse(
        _events(request, deployment_id), media_type="text/event-stream", headers=headers
    )
