"""The worker's and beat's log lines: who a line is about, and silence when idle.

**Who.** Celery's worker format (``[time: LEVEL/process] message``) prints no ``extra``
field, so a line about a deployment would not say which one. While a deployment runs,
:func:`about` names it, and every line the worker writes meanwhile, from rollhook's
loggers or the adapters', begins with ``target=... deployment=... delivery=...`` in its
text, whatever the handler's format.

**Silence.** Beat runs periodic tasks every few seconds (the outbox, housekeeping, and any
added later). Celery writes three INFO lines per run of each (beat's "Sending due task",
the worker's "received" and "succeeded"); an idle rollhook would write dozens a minute.
:func:`quiet_periodic_tasks` turns exactly those lines into DEBUG ones (shown with
``--loglevel DEBUG``); a failure of such a task stays an ERROR. A periodic task is
expected to log at INFO only when it did something (``outbox: dispatched 2 job(s)``).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from celery.exceptions import SecurityWarning

_ABOUT: ContextVar[str | None] = ContextVar("rollhook_log_about", default=None)

# Celery's loggers that report a task's arrival and end, and beat's sending of it.
CELERY_TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace", "celery.beat")


def _printable(text: str) -> str:
    """A delivery id comes from a request header: never let it start a forged line."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def prefix(target: str, deployment: str, delivery: str | None) -> str:
    return f"target={target} deployment={deployment} delivery={_printable(delivery or '-')}"


@contextmanager
def about(target: str, deployment: str, delivery: str | None) -> Iterator[None]:
    """Lines logged in this block (this thread or task) name the deployment."""
    token = _ABOUT.set(prefix(target, deployment, delivery))
    try:
        yield
    finally:
        _ABOUT.reset(token)


def _with_context(make: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        context = _ABOUT.get()
        if context is not None and not getattr(record, "rollhook_about", False):
            # The message is a %-format when there are args: keep the prefix literal.
            head = context.replace("%", "%%") if record.args else context
            record.msg = f"{head}: {record.msg}"
            record.rollhook_about = True
        return record

    factory.rollhook_factory = True  # type: ignore[attr-defined]
    return factory


def name_deployments_in_lines() -> None:
    """Install the prefix (idempotent: once per process)."""
    current = logging.getLogRecordFactory()
    if not getattr(current, "rollhook_factory", False):
        logging.setLogRecordFactory(_with_context(current))


def _task_name(record: logging.LogRecord) -> str | None:
    data = getattr(record, "data", None)  # the worker's received/succeeded lines
    if isinstance(data, dict) and isinstance(data.get("name"), str):
        return str(data["name"])
    if record.name == "celery.beat" and isinstance(record.args, tuple) and len(record.args) == 2:
        return str(record.args[1])  # "Sending due task %s (%s)": entry, task
    return None


class PeriodicTasksAtDebug(logging.Filter):
    def __init__(self, tasks: Collection[str]) -> None:
        super().__init__()
        self.tasks = frozenset(tasks)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or _task_name(record) not in self.tasks:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def quiet_periodic_tasks(beat_schedule: dict[str, dict[str, Any]]) -> None:
    """Celery's INFO lines about every task in the beat schedule become DEBUG lines."""
    tasks = {entry["task"] for entry in beat_schedule.values()}
    for name in CELERY_TASK_LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, PeriodicTasksAtDebug)]:
            logger.removeFilter(old)
        logger.addFilter(PeriodicTasksAtDebug(tasks))


def configure(beat_schedule: dict[str, dict[str, Any]]) -> None:
    """The worker's and beat's logging, set once when ``workers.app`` is imported."""
    allow_root()
    quiet_periodic_tasks(beat_schedule)
    name_deployments_in_lines()
    # httpx logs every request at INFO: a health gate would write two lines a second.
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


def allow_root() -> None:
    """Silence Celery's warning about running as root, which rollhook must.

    rollhook reads and restores the app's data at the volume paths on the host and runs
    ``docker compose`` against the host's engine: it runs as root on the Docker host (the
    README says so). Celery's real danger as root is unpickling messages from the broker;
    rollhook accepts JSON only (``accept_content=["json"]``), and Celery itself refuses to
    start as root with pickle enabled, so the warning says nothing an operator can act on.
    """
    warnings.filterwarnings("ignore", message=r".*superuser privileges", category=SecurityWarning)
