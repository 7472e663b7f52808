"""About one Slack message per second per channel, across every process and thread.

The assertions are about the order and spacing of what arrived (with generous
tolerance), not about speed."""

from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine

from rollhook.records.db import make_engine
from rollhook.targets import Target
from tests.workers.notify import records as rec
from tests.workers.notify.flow import Flow, notifiers_for
from tests.workers.notify.standins import SlackStandIn
from workers.notify.errors import TransientError
from workers.notify.ratelimit import SlotLimiter

ROOT = Path(__file__).resolve().parents[3]

_TAKE_TURNS = textwrap.dedent(
    """
    import json, sys, time
    from rollhook.records.db import make_engine
    from workers.notify.ratelimit import SlotLimiter

    url, start, turns = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    limiter = SlotLimiter(make_engine(url), interval=1.0, max_wait=30.0)
    time.sleep(max(0.0, start - time.time()))
    times = []
    for _ in range(turns):
        limiter.wait_turn("slack-deploys")
        times.append(time.time())
    print(json.dumps(times))
    """
)


def test_processes_sharing_a_channel_take_turns_a_second_apart(
    records: Engine, tmp_path: Path
) -> None:
    url = str(records.url)
    start = time.time() + 2.0  # both processes are up before either takes a turn
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _TAKE_TURNS, url, str(start), "3"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    times = sorted(t for child in children for t in json.loads(child.communicate(timeout=60)[0]))
    assert all(child.returncode == 0 for child in children)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert len(times) == 6
    assert min(gaps) > 0.8, gaps


def test_threads_posting_to_one_channel_reach_slack_spaced(
    records: Engine, slack: SlackStandIn, target: Target
) -> None:
    notifiers = dataclasses.replace(
        notifiers_for(
            slack_token=slack.token, slack_channel="deploys", slack_api_url=slack.api_url
        ),
        slack_interval=1.0,
    )
    ids = [Flow(records, notifiers, target).announce(rec.insert_running(records)) for _ in range(4)]
    own_engines = [make_engine(str(records.url)) for _ in range(2)]

    def post(engine: Engine, batch: list[list[str]]) -> None:
        for notification_ids in batch:
            Flow(engine, notifiers, target).deliver(notification_ids)

    threads = [
        threading.Thread(target=post, args=(own_engines[0], ids[:2])),
        threading.Thread(target=post, args=(own_engines[1], ids[2:])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    arrived = sorted(m.at for m in slack.messages)
    assert len(arrived) == 4
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrived)]
    assert min(gaps) > 0.8, gaps
    for engine in own_engines:
        engine.dispose()


def test_a_slot_too_far_away_goes_back_to_the_queue(records: Engine) -> None:
    clock = [1000.0]
    waited: list[float] = []
    limiter = SlotLimiter(
        records, interval=1.0, max_wait=10.0, clock=lambda: clock[0], sleep=waited.append
    )
    assert [limiter.wait_turn("c") for _ in range(3)] == [1000.0, 1001.0, 1002.0]
    assert waited == [1.0, 2.0]  # each caller sleeps until its own slot
    limiter.back_off("c", 60)  # Slack said 429, Retry-After: 60
    with pytest.raises(TransientError) as info:
        limiter.wait_turn("c")
    assert info.value.retry_after == pytest.approx(60)
    assert limiter.wait_turn("another-channel") == 1000.0  # channels are independent
