"""Liveness, readiness and metrics: what orchestrators and Prometheus ask.

Readiness is the records database answering: an event can be stored, so a 202 can be
given. The broker's state is reported but not gated on, because the outbox absorbs
its outages.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from rollhook.records import db
from service import answers, signatures
from service.metrics import CONTENT_TYPE
from service.runtime import runtime

log = logging.getLogger("rollhook.probes")
READY_TIMEOUT = 3.0


async def healthz(request: Request) -> Response:
    return answers.reply(200, {"status": "ok"})


async def readyz(request: Request) -> Response:
    rt = runtime(request)
    broker = rt.recorder.broker_state
    try:
        await asyncio.wait_for(run_in_threadpool(db.ping, rt.engine), READY_TIMEOUT)
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        log.warning("readiness: records database not answering (%s)", type(exc).__name__)
        return answers.reply(503, {"status": "unavailable", "records": "error", "broker": broker})
    return answers.reply(200, {"status": "ready", "records": "ok", "broker": broker})


async def metrics(request: Request) -> Response:
    rt = runtime(request)
    token = rt.settings.metrics_token
    if token is not None and not signatures.verify_bearer(
        request.headers.get("authorization"), token.get_secret_value()
    ):
        return rt.auth_failed(rt.client(request))
    body = await run_in_threadpool(rt.metrics.render)
    return Response(body, 200, media_type=CONTENT_TYPE)
