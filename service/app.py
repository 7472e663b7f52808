"""The web process: receives webhooks and API calls, verifies, records, enqueues.

``uvicorn --factory service.app:create_app`` builds it from the environment; tests pass
settings in. Nothing is deployed in a request: the answer is given once the event is
committed, and the jobs reach the workers through the outbox.
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rollhook.records import db
from rollhook.records import sync as sync_records
from rollhook.records import targets as target_records
from rollhook.settings import INBOUND_SECRETS, ConfigError, Settings, load_settings
from rollhook.targets import Target, load_targets
from service import answers, api, approvals, hooks, logs, probes, slack, views
from service.matching import Matcher
from service.metrics import Metrics
from service.ratelimit import AuthFailures, ClientAddress, Network, parse_proxies
from service.recorder import Recorder
from service.runtime import Runtime
from service.slack_replies import SlackReplies, allowed_base
from service.ui.routes import ROUTES as UI_ROUTES
from service.writer import WriterSettings

log = logging.getLogger("rollhook.app")

ROUTES = [
    *hooks.ROUTES,
    *slack.ROUTES,
    Route("/deploy", api.guarded(api.deploy), methods=["POST"]),
    Route("/rollback", api.guarded(api.rollback), methods=["POST"]),
    Route("/targets/{name}/pause", api.guarded(api.pause), methods=["POST"]),
    Route("/targets/{name}/resume", api.guarded(api.resume), methods=["POST"]),
    Route("/targets/{name}/sync", api.guarded(api.sync), methods=["POST"]),
    Route("/targets/{name}/reject", api.guarded(approvals.reject), methods=["POST"]),
    Route("/targets", api.guarded(views.list_targets), methods=["GET"]),
    Route("/targets/{name}", api.guarded(views.show_target), methods=["GET"]),
    Route("/hosts", api.guarded(views.list_hosts), methods=["GET"]),
    Route("/events/{event_id}", api.guarded(views.show_event), methods=["GET"]),
    Route("/deployments", api.guarded(views.list_deployments), methods=["GET"]),
    Route("/deployments/{deployment_id}", api.guarded(views.show_deployment), methods=["GET"]),
    Route("/healthz", probes.healthz, methods=["GET"]),
    Route("/readyz", probes.readyz, methods=["GET"]),
    Route("/metrics", probes.metrics, methods=["GET"]),
    *UI_ROUTES,
]


def create_app(settings: Settings | None = None) -> Starlette:
    """The ASGI app. Without settings, reads the environment; a bad config stops here."""
    from_environment = settings is None
    try:
        settings = settings or load_settings()
        targets = load_targets(settings.config)
        proxies = parse_proxies(settings.trusted_proxies)
    except ConfigError as exc:
        if not from_environment:
            raise
        # Started by uvicorn: one line naming the setting, not a traceback.
        print(f"rollhook: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logs.configure()
    logs.install_redaction(_secret_values(settings))
    return Starlette(
        routes=ROUTES,
        lifespan=_lifespan(settings, targets, proxies),
        exception_handlers={HTTPException: _http_error},
    )


def _secret_values(settings: Settings) -> list[str]:
    """The secrets a client may present, as configured (each of a rotation's too)."""
    values = []
    for name in INBOUND_SECRETS:
        secret = getattr(settings, name)
        if secret is not None:
            values.append(secret.get_secret_value())
    return values + [part.decode() for part in settings.github_secrets()]


def _lifespan(
    settings: Settings, targets: dict[str, Target], proxies: tuple[Network, ...]
) -> Callable[[Starlette], AbstractAsyncContextManager[dict[str, Runtime]]]:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Runtime]]:
        engine = db.make_engine(settings.records_url())
        await run_in_threadpool(_prepare_records, engine, settings, list(targets))
        metrics = Metrics()
        metrics.attach_records(engine, targets)
        recorder = Recorder(
            WriterSettings(settings.records_url(), settings.broker_url()),
            on_dispatch=metrics.count_dispatch,
            on_commit=metrics.count_commit,
        )
        await recorder.start()
        rt = Runtime(
            settings=settings,
            targets=targets,
            matcher=Matcher(targets),
            engine=engine,
            recorder=recorder,
            metrics=metrics,
            addresses=ClientAddress(proxies),
            auth_failures=AuthFailures(
                settings.auth_failures_allowed, settings.auth_failure_window
            ),
            slack_replies=(
                SlackReplies(allowed_base(settings.slack_api_url))
                if settings.slack_signing_secret is not None
                else None
            ),
        )
        log.info(
            "rollhook web ready: %d target(s), broker %s", len(targets), _broker_kind(settings)
        )
        # What start-up built (SQLAlchemy, Celery, pydantic) lives as long as the app;
        # keeping it out of the collector's full passes keeps them short under load.
        gc.collect()
        gc.freeze()
        try:
            yield {"rollhook": rt}
        finally:
            # Given back when the app stops: a process that goes on (a test run) must see
            # its objects again. Frozen, they were never freed, and gc.get_referrers
            # missed them: Hypothesis, first imported at the end of a pytest run, took
            # trio's module-level Random for a garbage one and warned (an error there).
            gc.unfreeze()
            await recorder.stop()
            if rt.slack_replies is not None:
                await rt.slack_replies.close()
            engine.dispose()

    return lifespan


def _prepare_records(engine: Engine, settings: Settings, names: list[str]) -> None:
    db.migrate(engine, settings.data_dir)
    with engine.begin() as conn:
        target_records.ensure(conn, names)
        sync_records.ensure(conn, names)


def _broker_kind(settings: Settings) -> str:
    return "embedded (SQLite)" if settings.embedded_broker else "Redis"


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and wrong methods answer JSON like everything else."""
    if not isinstance(exc, HTTPException):
        return answers.answer(500, "error")
    if exc.status_code == 404:
        return answers.not_found()  # the same answer as an endpoint that is not configured
    document = {"status": "error", "reason": exc.detail}
    return answers.reply(exc.status_code, document, headers=dict(exc.headers or {}))
