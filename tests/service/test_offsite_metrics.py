"""/metrics on off-host backups: per target, the last good snapshot (when, how long, how
big), the failures in a row since, and the last restore drill's verdict, read from the
records the workers leave."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rollhook.records import remote_backups
from tests.service.support import Served
from tests.service.test_probes import metric


def test_off_host_backups_in_the_metrics(served: Served) -> None:
    taken = datetime(2026, 5, 4, 3, 0, 12, tzinfo=UTC)
    with served.records.begin() as conn:
        remote_backups.succeeded(
            conn,
            "llm",
            at=taken,
            snapshot_id="a" * 64,
            duration=12.5,
            size=734_003_200,
            added=1_048_576,
        )
        remote_backups.drill_done(
            conn, "llm", at=taken, ok=True, snapshot_id="a" * 64, detail="served"
        )
        # Another target whose snapshots have only ever failed, and whose drill failed.
        remote_backups.failed(conn, "wiki", at=taken, error="wrong password")
        remote_backups.failed(conn, "wiki", at=taken + timedelta(hours=1), error="again")
        remote_backups.drill_done(
            conn, "wiki", at=taken, ok=False, snapshot_id=None, detail="no snapshot"
        )
    text = served.client.get("/metrics").text

    success = 'rollhook_remote_backup_last_success_timestamp_seconds{target="llm"}'
    assert metric(text, success) == taken.timestamp()
    assert metric(text, 'rollhook_remote_backup_last_duration_seconds{target="llm"}') == 12.5
    assert metric(text, 'rollhook_remote_backup_last_size_bytes{target="llm"}') == 734_003_200
    assert metric(text, 'rollhook_remote_backup_failures{target="llm"}') == 0
    assert metric(text, 'rollhook_restore_drill_ok{target="llm"}') == 1

    # Never a success: no timestamp (an alert on its age would see zero), two failures.
    assert metric(text, success.replace("llm", "wiki")) is None
    assert metric(text, 'rollhook_remote_backup_failures{target="wiki"}') == 2
    assert metric(text, 'rollhook_restore_drill_ok{target="wiki"}') == 0
    assert "wrong password" not in text  # errors stay in the records and notices
