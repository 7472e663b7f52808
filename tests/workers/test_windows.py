"""Deploy windows on the real engine, with the worker's clock injected: automatic changes
wait as pending while the window is closed and beat's kick starts the newest of them when
it opens; a person's request passes at any time, and the record says so (and whether it
was forced). Heals (the reconcile branch's kind "heal") are exempt by kind; main has none."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rollhook.broker import RUN_TARGET
from tests.harness import INFRA_PATH
from tests.workers.deployer import Deployer
from workers.dispatcher import kick_targets
from workers.runner import has_work

pytestmark = pytest.mark.engine

OFFICE_HOURS = [{"deny": "Mon-Fri 08:00-18:00", "tz": "Europe/Berlin"}]
WEDNESDAY_NOON = datetime(2026, 12, 2, 11, 0, tzinfo=UTC)  # 12:00 CET
WEDNESDAY_EVENING = datetime(2026, 12, 2, 17, 0, tzinfo=UTC)  # 18:00 CET: it opens


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.mark.parametrize("deployer", [{"windows": OFFICE_HOURS}], indirect=True)
def test_automatic_changes_wait_for_the_window_and_the_newest_starts_when_it_opens(
    deployer: Deployer,
) -> None:
    clock = Clock(WEDNESDAY_NOON)
    deployer.ctx.clock = clock

    # A person deploys in office hours: not held, and the record says the window was closed.
    deployer.commit("1.0.0")
    first = deployer.deploy(source="api", manual=True)
    assert first.status == "succeeded", first.log
    assert first.requested["window"]["forced"] is False
    assert "a person's request is not held" in first.log

    # Two pushes arrive: both wait, the app is untouched, beat does not wake the target.
    deployer.commit("2.0.0")
    older = deployer.deploy()
    deployer.commit("2.0.0", "a second change", **{f"{INFRA_PATH}/note.txt": "x"})
    newer = deployer.deploy()
    pending = "pending: deploy window closed (deny Mon-Fri 08:00-18:00 Europe/Berlin); "
    for record in (older, newer):
        assert record.status == "queued"
        assert record.reason == pending + "opens Wed 2026-12-02 18:00 CET"
    assert deployer.app_version() == "1.0.0"
    assert kick_targets(deployer.ctx) == []

    # 18:00 in Berlin: the next beat tick wakes the target, the newest runs, once.
    clock.now = WEDNESDAY_EVENING
    assert kick_targets(deployer.ctx) == [deployer.name]
    assert (RUN_TARGET, [deployer.name]) in deployer.sent
    deployer.run()
    ran = deployer.record(newer.id)
    assert ran.status == "succeeded", ran.log
    assert "window" not in ran.requested
    assert deployer.record(older.id).status == "superseded"
    assert deployer.app_version() == "2.0.0"


@pytest.mark.parametrize("deployer", [{"windows": OFFICE_HOURS}], indirect=True)
def test_a_persons_forced_request_is_noted_and_supersedes_what_waits(deployer: Deployer) -> None:
    deployer.ctx.clock = Clock(WEDNESDAY_NOON)
    deployer.commit("1.0.0")
    waiting = deployer.deploy()
    assert waiting.status == "queued"
    with deployer.records.begin() as conn:
        assert not has_work(conn, deployer.name, window="closed")
        assert has_work(conn, deployer.name)  # the same work, once the window is open

    forced = deployer.queue(source="api", manual=True, force=True)
    deployer.run()
    done = deployer.record(forced)
    assert done.status == "succeeded", done.log
    assert done.requested["window"]["forced"] is True
    assert "a person's request is not held, forced by" in done.log
    assert deployer.record(waiting.id).status == "superseded"
