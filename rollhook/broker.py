"""The broker between web and workers: Redis in production, SQLite embedded by default.

Both processes build their Celery app here, from plain values, so that the web process
can publish without importing the workers. Delivery is at least once either way; the
records (outbox, claims, leases) make it effectively once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import Celery
from kombu import Exchange, Queue
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Channel as SQLAlchemyChannel
from kombu.transport.sqlalchemy import Transport as SQLAlchemyTransport
from sqlalchemy.exc import IntegrityError

from rollhook.settings import LOCAL_HOST

# Task names are the contract between publisher and worker; keep them stable.
PROCESS_JOBS = "rollhook.process_jobs"
RUN_TARGET = "rollhook.run_target"
NOTIFY = "rollhook.notify"
DISPATCH_OUTBOX = "rollhook.dispatch_outbox"
HOUSEKEEPING = "rollhook.housekeeping"
RECONCILE = "rollhook.reconcile"
# The parts of a reconcile tick and of housekeeping that need a target's engine or files,
# for the targets of another host than the worker that took the tick.
INSPECT_TARGET = "rollhook.inspect_target"
TIDY_TARGET = "rollhook.tidy_target"
# Off-host backups (workers/offsite): beat's tick, a snapshot, a deployment's backup sent
# off-host, a restore drill. Their own queue: an upload may take hours.
OFFSITE_TICK = "rollhook.offsite_tick"
OFFSITE_SNAPSHOT = "rollhook.offsite_snapshot"
OFFSITE_SHIP = "rollhook.offsite_ship"
DRILL = "rollhook.drill"

DEPLOY_QUEUE = "deploy"
NOTIFY_QUEUE = "notify"
HOUSEKEEPING_QUEUE = "housekeeping"
BACKUP_QUEUE = "backup"


EMBEDDED_SCHEME = "embedded+sqlite:///"

# The tasks that need the target's host (its engine, its files): first argument the
# target's name, sent to that host's own queue of this kind.
HOST_TASKS = {
    RUN_TARGET: DEPLOY_QUEUE,
    INSPECT_TARGET: DEPLOY_QUEUE,
    TIDY_TARGET: DEPLOY_QUEUE,
    OFFSITE_SNAPSHOT: BACKUP_QUEUE,
    OFFSITE_SHIP: BACKUP_QUEUE,
    DRILL: BACKUP_QUEUE,
}


def host_queue(kind: str, host: str) -> str:
    """The queue of one host for ``kind`` (deploy or backup): ``deploy.<host>``; the local
    host keeps the plain names, so one-host installs (their Procfiles, units) are unchanged."""
    return kind if host == LOCAL_HOST else f"{kind}.{host}"


def worker_queues(host: str) -> list[str]:
    """What ``rollhook worker --host <host>`` consumes: its host's queues and the shared ones."""
    return [
        host_queue(DEPLOY_QUEUE, host),
        NOTIFY_QUEUE,
        HOUSEKEEPING_QUEUE,
        host_queue(BACKUP_QUEUE, host),
    ]


def send_to_host(app: Celery, task: str, host: str, args: list[Any], **options: Any) -> None:
    """Send a host task to ``host``'s queue (publish options as ``send_task``'s)."""
    app.send_task(task, args=args, queue=host_queue(HOST_TASKS[task], host), **options)


def sender(
    app: Celery, host_of: Callable[[str], str], **options: Any
) -> Callable[[str, list[Any]], None]:
    """The workers' ``send(task, args)``: a host task (first argument its target's name)
    goes to that target's host's queue, any other by its route."""

    def send(task: str, args: list[Any]) -> None:
        if task in HOST_TASKS and args:
            send_to_host(app, task, host_of(str(args[0])), args, **options)
        else:
            app.send_task(task, args=args, **options)

    return send


class EmbeddedChannel(SQLAlchemyChannel):  # type: ignore[misc]
    def _get_or_create(self, queue: str) -> Any:
        """kombu's version, safe when processes declare the same queue at once.

        Its lock is per process: web, worker and beat starting together raced to
        insert the same queue row and the loser died on the unique constraint.
        """
        try:
            return super()._get_or_create(queue)
        except IntegrityError:
            self.session.rollback()
            return super()._get_or_create(queue)


class EmbeddedTransport(SQLAlchemyTransport):  # type: ignore[misc]
    """kombu's SQLAlchemy transport, polling faster than its default second.

    The poll interval cannot go in the transport options: this transport hands all of
    them to ``create_engine``, which refuses unknown arguments.
    """

    Channel = EmbeddedChannel
    polling_interval = 0.2


TRANSPORT_ALIASES["embedded"] = f"{__name__}:EmbeddedTransport"


def prepare_embedded(path: Path) -> None:
    """Create the embedded broker's SQLite file in WAL mode before kombu opens it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path, timeout=30) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def purge_consumed(path: Path) -> int:
    """kombu's SQLAlchemy transport keeps consumed messages (visible=0); delete them."""
    if not path.exists():
        return 0
    with sqlite3.connect(path, timeout=30) as conn:
        try:
            return conn.execute("DELETE FROM kombu_message WHERE visible = 0").rowcount
        except sqlite3.OperationalError:  # kombu has not created its tables yet
            return 0


def _queue(name: str) -> Queue:
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def make_celery(broker_url: str, *, name: str = "rollhook", **conf: Any) -> Celery:
    if broker_url.startswith(EMBEDDED_SCHEME):
        prepare_embedded(Path(broker_url.removeprefix(EMBEDDED_SCHEME)))
        transport_options: dict[str, Any] = {"connect_args": {"timeout": 30}}
    else:
        # Redis: a deployment task may run for longer than the default visibility
        # timeout; recovery comes from the records' leases, never from redelivery.
        transport_options = {"visibility_timeout": 4 * 3600, "socket_timeout": 5}
    app = Celery(name, broker=broker_url, set_as_current=False)
    app.conf.update(
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=False,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        task_default_queue=DEPLOY_QUEUE,
        # Each queue its own exchange and key, like the host queues Celery makes for
        # deploy.<host>: Queue(name) alone binds every queue to the default exchange
        # (deploy) under one key (deploy), so only the queue name keeps them apart.
        task_queues=[
            _queue(DEPLOY_QUEUE),
            _queue(NOTIFY_QUEUE),
            _queue(HOUSEKEEPING_QUEUE),
            _queue(BACKUP_QUEUE),
        ],
        task_routes={
            # Recording jobs needs no host: any worker takes them (housekeeping is the
            # queue every worker consumes), and sends each target's run to its host.
            PROCESS_JOBS: {"queue": HOUSEKEEPING_QUEUE},
            RUN_TARGET: {"queue": DEPLOY_QUEUE},
            INSPECT_TARGET: {"queue": DEPLOY_QUEUE},
            TIDY_TARGET: {"queue": DEPLOY_QUEUE},
            NOTIFY: {"queue": NOTIFY_QUEUE},
            DISPATCH_OUTBOX: {"queue": HOUSEKEEPING_QUEUE},
            HOUSEKEEPING: {"queue": HOUSEKEEPING_QUEUE},
            RECONCILE: {"queue": HOUSEKEEPING_QUEUE},
            OFFSITE_TICK: {"queue": HOUSEKEEPING_QUEUE},
            OFFSITE_SNAPSHOT: {"queue": BACKUP_QUEUE},
            OFFSITE_SHIP: {"queue": BACKUP_QUEUE},
            DRILL: {"queue": BACKUP_QUEUE},
        },
        **conf,
    )
    return app


def publish_jobs(app: Celery, job_jsons: list[str]) -> None:
    """Hand jobs to the broker in one message: a message costs far more than a job.

    Raises if the broker cannot take them right now; they stay in the outbox.
    """
    app.send_task(
        PROCESS_JOBS,
        args=[job_jsons],
        retry=True,
        retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.5},
    )
