"""Review finding 8: a worker killed while ``docker stop`` waits out the grace period.

The app's PID 1 ignores SIGTERM, so the stop step waits ``stop_timeout`` before the engine
kills it. The engine goes on stopping the container after its client (compose, ended by
recovery) is gone: a recovery that gates the old version while it still answers sees it
healthy, then sees the engine kill it. Recovery must let the stop finish first, then start
the old version again, then deploy.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.faults.support import FaultTarget, check_recovered, kill_when, recover

pytestmark = pytest.mark.fault

STOP = 10  # the target's stop_timeout: the engine kills the ignoring app after this


def test_a_worker_killed_while_the_engine_stops_the_app_leaves_it_serving(
    make_target: Callable[..., FaultTarget],
) -> None:
    # settle 8 s: the old version's gate in recovery (from 4-9 s) spans the engine's kill (10 s)
    target = make_target(stop_timeout=f"{STOP}s", health={"settle": 8})
    worker = target.worker()
    target.commit("1.0.0", IGNORE_SIGTERM="1")
    assert target.deploy().status == "succeeded"
    before = target.database()
    target.commit("2.0.0", IGNORE_SIGTERM="1")
    deployment_id = target.queue()
    worker.go()

    ignored = target.storage / "stop-signals.log"  # 1.0.0 got SIGTERM and ignored it
    killed_at = kill_when(target, worker, deployment_id, ignored.exists, step="stop")
    record = recover(target, deployment_id, killed_at)

    check_recovered(target, record, old="1.0.0", new="2.0.0", before=before, allowed={"succeeded"})
    assert record.attempt == 2
