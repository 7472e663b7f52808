"""The worker's log lines: the deployment they are about in their text; periodic tasks
quiet at INFO."""

from __future__ import annotations

import logging

import pytest

from workers import logs


@pytest.fixture(autouse=True)
def _factory() -> None:
    logs.name_deployments_in_lines()


def record(name: str, msg: str, *args: object, **attrs: object) -> logging.LogRecord:
    made = logging.getLogger(name).makeRecord(name, logging.INFO, __file__, 1, msg, args, None)
    made.__dict__.update(attrs)
    return made


@pytest.mark.parametrize(
    ("logger", "msg", "args"),
    [
        ("rollhook.deploy", "%s", ("gate: ok",)),
        ("workers.backup.store", "pass 1 of %d source(s)", (2,)),
        ("rollhook.runner", "plain text, 100% literal", ()),
    ],
)
def test_lines_inside_a_deployment_name_it(logger: str, msg: str, args: tuple[object]) -> None:
    with logs.about("llm", "d01abc", "dl%1\n"):
        line = record(logger, msg, *args).getMessage()
    assert line.startswith("target=llm deployment=d01abc delivery=dl%1\\n: ")
    assert line.endswith(msg % args if args else msg)
    assert record(logger, msg, *args).getMessage() == (msg % args if args else msg)


def test_installing_twice_prefixes_once() -> None:
    logs.name_deployments_in_lines()
    with logs.about("llm", "d1", None):
        assert (
            record("rollhook.deploy", "x").getMessage() == "target=llm deployment=d1 delivery=-: x"
        )


SCHEDULE = {"outbox": {"task": "rollhook.dispatch_outbox", "schedule": 2.0}}


OUTBOX = {"name": "rollhook.dispatch_outbox"}
TRACE, STRATEGY, BEAT = "celery.app.trace", "celery.worker.strategy", "celery.beat"
SUCCEEDED = "Task %(name)s succeeded"


@pytest.mark.parametrize(
    ("made", "level", "shown"),
    [
        # The worker's "received" and "succeeded" lines carry the task in record.data.
        (record(TRACE, SUCCEEDED, data=OUTBOX), logging.INFO, False),
        (record(STRATEGY, "Task %(name)s received", data=OUTBOX), logging.INFO, False),
        (record(BEAT, "Sending due task %s (%s)", "o", OUTBOX["name"]), logging.INFO, False),
        # Other tasks keep their lines, and so does a periodic task's failure.
        (record(TRACE, SUCCEEDED, data={"name": "rollhook.run_target"}), logging.INFO, True),
        (record(TRACE, "Task %(name)s raised", data=OUTBOX), logging.ERROR, True),
    ],
)  # fmt: skip
def test_periodic_tasks_are_quiet_at_info(made: logging.LogRecord, level: int, shown: bool) -> None:
    made.levelno = level
    quiet = logs.PeriodicTasksAtDebug({e["task"] for e in SCHEDULE.values()})
    logging.getLogger(made.name).setLevel(logging.INFO)
    assert quiet.filter(made) is shown
    logging.getLogger(made.name).setLevel(logging.DEBUG)
    assert quiet.filter(made) is True  # --loglevel DEBUG shows them, as DEBUG lines
    assert made.levelno == (logging.DEBUG if not shown else level)
    logging.getLogger(made.name).setLevel(logging.NOTSET)
