"""The dashboard's static files: htmx and its SSE extension (vendored, see
``static/VENDORED.md``), one stylesheet and an icon. A fixed list, read once: a name
that is not on it is 404, whatever path it spells."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

from service import answers
from service.ui import render
from service.ui.access import key_of

STATIC = Path(__file__).parent / "static"
TYPES = {
    "htmx.min.js": "text/javascript; charset=utf-8",
    "sse.min.js": "text/javascript; charset=utf-8",
    "rollhook.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
_FILES = {name: (STATIC / name).read_bytes() for name in TYPES}


async def static_file(request: Request) -> Response:
    name = request.path_params["name"]
    if key_of(request) is None or name not in _FILES:
        return answers.not_found()
    headers = render.HEADERS | {"Cache-Control": "public, max-age=3600"}
    return Response(_FILES[name], media_type=TYPES[name], headers=headers)
