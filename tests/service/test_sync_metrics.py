"""The reconcile loop's metrics, read from the sync rows at scrape time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from rollhook.records import sync as sync_records
from tests.service.support import Served
from tests.service.test_probes import metric


def test_sync_metrics_come_from_the_records(serve: Callable[..., Served]) -> None:
    app = serve()
    polled = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    with app.records.begin() as conn:
        sync_records.ensure(conn, ["hello"])
        sync_records.change(
            conn,
            "hello",
            last_poll_at=polled,
            drift=[{"service": "web", "what": "stopped", "detail": "exited (137)"}],
            drift_counts={"stopped": 2, "config": 1},
            heal_count=3,
            poll_error_counts={"git": 4},
        )
    text = app.client.get("/metrics").text
    assert metric(text, 'rollhook_target_sync_status{status="drifted",target="hello"}') == 1
    assert metric(text, 'rollhook_target_sync_status{status="synced",target="hello"}') == 0
    assert metric(text, 'rollhook_drift_total{target="hello",what="stopped"}') == 2
    assert metric(text, 'rollhook_drift_total{target="hello",what="config"}') == 1
    assert metric(text, 'rollhook_heals_total{target="hello"}') == 3
    assert metric(text, 'rollhook_poll_errors_total{kind="git",target="hello"}') == 4
    assert (
        metric(text, 'rollhook_last_poll_timestamp_seconds{target="hello"}') == polled.timestamp()
    )
