"""Ceilings for bench/ingress.py --ceiling: what the stack costs when nothing is stored.

Both run on the Procfile's own uvicorn line, with only the app factory swapped:

- ``floor_app``: Starlette on uvicorn, the same signature check (service.signatures) and
  JSON parse, then a fixed 202. What any Python service on this stack pays per webhook.
- ``unstored_app``: rollhook's own app, whole request path included (parse, match, the
  event and its jobs, the log line), with a recorder that answers at once instead of
  waiting for the commit. The gap to rollhook is what storing costs.

Neither is a product: they answer 202 for events they never stored.
"""

from __future__ import annotations

import json
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rollhook.events import NewEvent
from service import app as service_app
from service import recorder
from service.signatures import verify_hub_signature

QUEUED = b'{"status":"queued","id":"e00000000000000000000000000"}'


def floor_app() -> Starlette:
    secrets = [os.environ["ROLLHOOK_GITHUB_SECRET"].encode()]

    async def hook(request: Request) -> Response:
        body = await request.body()
        if not verify_hub_signature(body, request.headers.get("x-hub-signature-256"), secrets):
            return Response(b'{"status":"unauthorized"}', 401, media_type="application/json")
        json.loads(body)
        return Response(QUEUED, 202, media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Starlette(
        routes=[Route("/hooks/github", hook, methods=["POST"]), Route("/healthz", healthz)]
    )


async def _answer_at_once(self: recorder.Recorder, event: NewEvent) -> recorder.Recorded:
    return recorder.Queued(event.id, tuple(event.jobs))


def unstored_app() -> Starlette:
    recorder.Recorder.record = _answer_at_once  # type: ignore[method-assign]
    return service_app.create_app()
