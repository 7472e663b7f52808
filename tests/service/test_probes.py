"""Liveness, readiness and metrics."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from starlette.requests import Request

from rollhook.records import db
from service import probes
from tests.service.support import METRICS_TOKEN, Served, add_deployment, fresh_push


def test_healthz_and_readyz(served: Served) -> None:
    assert served.client.get("/healthz").json() == {"status": "ok"}
    ready = served.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["records"] == "ok"


def test_readyz_is_503_when_the_records_do_not_answer(tmp_path: Path) -> None:
    broken = tmp_path / "records.sqlite"
    broken.write_bytes(b"this is not a database" * 100)
    engine = db.make_engine(f"sqlite:///{broken}")
    runtime: Any = SimpleNamespace(engine=engine, recorder=SimpleNamespace(broker_state="up"))
    request = Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/readyz",
            "headers": [],
            "state": {"rollhook": runtime},
        }
    )
    response = asyncio.run(probes.readyz(request))
    engine.dispose()
    assert response.status_code == 503
    assert bytes(response.body) == b'{"status":"unavailable","records":"error","broker":"up"}'


def metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line == name:
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics(serve: Callable[..., Served]) -> None:
    app = serve(redis_url="redis://127.0.0.1:1/0")  # broker down: jobs stay in the outbox
    for _ in range(2):
        assert app.github(fresh_push()).status_code == 202
    app.github(b"{}", x_hub_signature_256="sha256=0")
    good = add_deployment(app, "hello", "succeeded")
    add_deployment(app, "hello", "rolled_back")
    add_deployment(app, "hello", "succeeded", kind="rollback")
    text = app.client.get("/metrics").text
    assert metric(text, 'rollhook_requests_total{code="202",source="github"}') == 2
    assert metric(text, 'rollhook_requests_total{code="401",source="github"}') == 1
    assert metric(text, 'rollhook_events_stored_total{source="github"}') == 2
    assert metric(text, "rollhook_outbox_backlog") == 2
    assert metric(text, 'rollhook_deployments_total{status="succeeded",target="hello"}') == 2
    assert metric(text, 'rollhook_deployments_total{status="rolled_back",target="hello"}') == 1
    assert metric(text, 'rollhook_rollbacks_total{kind="automatic",target="hello"}') == 1
    assert metric(text, 'rollhook_rollbacks_total{kind="manual",target="hello"}') == 1
    assert metric(text, 'rollhook_deployment_duration_seconds_count{target="hello"}') == 3
    assert (
        metric(text, 'rollhook_deployment_duration_seconds_bucket{le="30.0",target="hello"}') == 0
    )
    assert (
        metric(text, 'rollhook_deployment_duration_seconds_bucket{le="60.0",target="hello"}') == 3
    )
    assert metric(text, 'rollhook_deployment_duration_seconds_sum{target="hello"}') == 126
    last = metric(text, 'rollhook_last_success_timestamp_seconds{target="hello"}')
    assert last is not None and last > 0
    assert good  # the record exists for the gauge above


def test_metrics_token(serve: Callable[..., Served]) -> None:
    app = serve(metrics_token=METRICS_TOKEN)
    assert app.client.get("/metrics").status_code == 401
    assert app.client.get("/metrics", headers={"authorization": "Bearer nope"}).status_code == 401
    allowed = app.client.get("/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"})
    assert allowed.status_code == 200
    assert "rollhook_outbox_backlog" in allowed.text


def test_what_the_app_froze_is_given_back_to_the_collector_when_it_stops(
    serve: Callable[..., Served],
) -> None:
    """Start-up's objects are kept out of the collector (gc.freeze) while the app runs; a
    process that goes on after it (a test run) gets them back. Left frozen they were never
    freed and gc.get_referrers missed them: Hypothesis, imported at the end of a pytest
    run, took trio's module-level Random for garbage and warned, an error there."""
    app = serve()
    assert gc.get_freeze_count() > 0
    app.stop()
    assert gc.get_freeze_count() == 0
