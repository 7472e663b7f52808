"""The grace-period trap: a stop that waited out the whole grace period is reported.

The stand-in with ``IGNORE_SIGTERM=1`` is PID 1 without a TERM handler, as anything-llm's
bash entrypoint is: ``docker stop`` waits the grace period, then kills it (exit 137).
With ``init: true`` Docker's init passes SIGTERM on and the stop is quick.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from tests.workers.deployer import Deployer
from workers.grace import Stopped, ignored_sigterm
from workers.notify import letter, wording
from workers.notify.report import View, build_report

IGNORING = {"environment": {"IGNORE_SIGTERM": "1"}}


@pytest.mark.parametrize(
    ("codes", "seconds", "grace", "trap"),
    [
        ((137,), 10.1, 10.0, True),  # killed at the end of the grace period
        ((137,), 9.2, 10.0, True),  # compose returned a little early: still the whole grace
        ((0,), 10.1, 10.0, False),  # a slow stop that finished in time
        ((137,), 0.4, 10.0, False),  # died of SIGKILL at once: not the grace period
        ((143,), 10.0, 10.0, False),  # ended by SIGTERM
        ((), 10.0, 10.0, False),  # nothing was running
        ((0, 137), 3.0, 3.0, True),  # one of several containers
        ((137,), 0.0, 0.0, False),  # no grace at all
    ],
)
def test_ignored_sigterm(codes: tuple[int, ...], seconds: float, grace: float, trap: bool) -> None:
    assert ignored_sigterm(codes, seconds, grace) is trap
    note = Stopped(seconds, grace, codes).note
    assert (note is not None) is trap
    if note:
        assert note == (
            f"stop took {seconds:.1f} s: the container ignored SIGTERM; "
            "`init: true` in the compose file would save it"
        )


@pytest.mark.engine
@pytest.mark.parametrize("deployer", [{"stop_timeout": 3}], indirect=True, ids=["grace-3s"])
def test_a_stop_that_ignores_sigterm_is_reported_and_init_saves_it(
    deployer: Deployer, caplog: pytest.LogCaptureFixture
) -> None:
    deployer.compose = IGNORING
    deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"
    deployer.commit("2.0.0")
    with caplog.at_level(logging.WARNING, logger="rollhook.deploy"):
        record = deployer.deploy()
    assert record.status == "succeeded", record.log

    [stop] = [s for s in record.steps if s["name"] == "stop"]
    assert "the container ignored SIGTERM" in stop["note"]
    assert stop["note"] in stop["detail"]
    assert "`init: true` in the compose file would save it" in record.log
    assert any("ignored SIGTERM" in r.getMessage() for r in caplog.records)
    seconds = float(stop["note"].split()[2])
    assert seconds >= 2.7  # the whole grace period (3 s), not a quick stop
    # What the notifications say, from the record as it was left.
    report = build_report(record, deployer.target.service)
    assert report.notes == (stop["note"],)
    assert stop["note"] in letter.compose(report, View()).text
    assert ("Note", stop["note"]) in wording.facts(report, View())

    # The fix the note names: Docker's init as PID 1 passes SIGTERM on.
    deployer.compose = {**IGNORING, "init": True}
    deployer.commit("2.0.0", "init: true")  # this stop still waits: the old one had no init
    assert deployer.deploy().status == "succeeded"
    deployer.commit("2.0.0-slow", "init: true, again")
    quick = deployer.deploy()
    assert quick.status == "succeeded", quick.log
    [stop] = [s for s in quick.steps if s["name"] == "stop"]
    assert "note" not in stop
    assert "ignored SIGTERM" not in quick.log


def test_the_example_compose_for_anything_llm_runs_an_init() -> None:
    example = Path(__file__).parents[2] / "deploy/examples/anything-llm/docker-compose.yml"
    services = yaml.safe_load(example.read_text())["services"]
    assert services["anything-llm"]["init"] is True
