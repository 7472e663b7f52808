"""The records database: events, the outbox of jobs, deployments, targets, notifications.

SQLite by default (its own file, WAL), PostgreSQL by URL. Alembic migrations in
``rollhook/records/migrations`` create and evolve these tables; this module is their
single description.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    text,
)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the records database")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def db_now(conn: Connection) -> datetime:
    """The records database's clock (UTC): one clock for every host, where two hosts'
    clocks may disagree (heartbeats; the order of events, ``records/events.py``)."""
    if conn.dialect.name == "sqlite":
        value = conn.execute(text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")).scalar_one()
        return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)
    moment: datetime = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# One row per accepted delivery. ``dedup_key`` makes the same delivery one event;
# ``body_key`` (signed sources only: the raw body's SHA-256) makes a signed body replayed
# under a new delivery id the same event too.
events = Table(
    "events",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("source", String(16), nullable=False),
    Column("dedup_key", String(200), nullable=False, unique=True),
    Column("body_key", String(80), nullable=True, unique=True, index=True),
    Column("delivery_id", String(200)),
    Column("kind", String(40), nullable=False),
    Column("actor", String(200)),
    Column("summary", JSON, nullable=False),  # what the hint said; never the raw body
    Column("received_at", UTCDateTime, nullable=False, index=True),
)

# The outbox: one job per (event, target), committed with its event. ``dispatched_at``
# is set once the broker took it; ``consumed_at`` once a worker claimed it (exactly once).
jobs = Table(
    "jobs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("event_id", String(40), ForeignKey("events.id", ondelete="CASCADE"), nullable=False),
    Column("target", String(64), nullable=False),
    Column("payload", Text, nullable=False),  # Job.to_json()
    Column("created_at", UTCDateTime, nullable=False),
    Column("dispatched_at", UTCDateTime),
    Column("dispatch_attempts", Integer, nullable=False, default=0),
    Column("consumed_at", UTCDateTime),
    Column("deployment_id", String(40)),
    Index("ix_jobs_undispatched", "dispatched_at", "created_at"),
    Index("ix_jobs_event", "event_id"),
)

targets = Table(
    "targets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("paused", Boolean, nullable=False, default=False),
    Column("paused_reason", String(200)),
    Column("paused_at", UTCDateTime),
    # Set by a manual rollback: automatic deployments wait for a new event or a resume.
    Column("held", Boolean, nullable=False, default=False),
    Column("current_deployment_id", String(40)),  # what runs now, as far as we know
    Column("last_good_deployment_id", String(40)),
    Column("pins", JSON, nullable=False, default=dict),  # service -> pin
    Column("failed_fingerprint", String(80)),  # a desired state that failed: not retried
    Column("lease_owner", String(120)),
    Column("lease_token", Integer, nullable=False, default=0),  # fencing token
    Column("lease_expires_at", UTCDateTime),
    Column("updated_at", UTCDateTime),
)

deployments = Table(
    "deployments",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("target", String(64), nullable=False),
    Column("kind", String(16), nullable=False, default="deploy"),  # deploy|rollback|heal|sync
    Column("status", String(16), nullable=False),
    Column("reason", Text),
    Column("trigger", JSON, nullable=False),
    Column("requested", JSON, nullable=False, default=dict),  # ref, pins, rollback_to ...
    Column("commit", String(64)),
    Column("commit_info", JSON),  # message, author, url
    Column("images", JSON, nullable=False, default=dict),  # service -> {old, new}
    Column("config_hash", String(80)),
    Column("fingerprint", String(80)),
    Column("previous_deployment_id", String(40)),
    Column("backup_id", String(80)),
    Column("superseded_by", String(40)),
    Column("steps", JSON, nullable=False, default=list),
    Column("log", Text, nullable=False, default=""),
    Column("lease_token", Integer),
    Column("attempt", Integer, nullable=False, default=0),
    Column("children", JSON, nullable=False, default=list),  # process groups to end on recovery
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    # service -> compose's config hash, once the gate passed: what drift is compared with.
    Column("containers", JSON),
    # start-first: which colour serves, which is new, each one's project, port, containers
    Column("colours", JSON),
    Index("ix_deployments_target_created", "target", "created_at"),
    Index("ix_deployments_status", "status"),
)

# Delivery state per (notice, channel): what was sent, its external id, attempts. A notice
# is about a subject: a deployment (its start and result) today; a target (drift found,
# healed, degraded, waiting for approval) or a host (down, up) to come. A row is found
# again by (kind, subject, channel).
notifications = Table(
    "notifications",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("deployment_id", String(40)),  # the deployment it is about, or that it led to
    Column("target", String(64)),  # None for a notice about a host
    Column(
        "channel", String(24), nullable=False
    ),  # slack | slack_webhook | email | github | console
    Column("status", String(16), nullable=False),  # pending | delivered | failed | skipped
    Column("attempts", Integer, nullable=False, default=0),
    Column("external", JSON, nullable=False, default=dict),  # e.g. slack channel id + ts
    Column("history", JSON, nullable=False, default=list),  # each attempt and its outcome
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime),
    # What is told (a notices.KIND), about what (deployment | target | host), and its id or name.
    Column("kind", String(32), nullable=False, server_default="deployment"),
    Column("subject_kind", String(16), nullable=False, server_default="deployment"),
    Column("subject", String(120), nullable=False),
    Index("ix_notifications_deployment", "deployment_id", "channel"),
    Index("ix_notifications_subject", "kind", "subject", "channel"),
)

# Per (target, channel) memory for "still failing, n times" and recovery messages,
# and per channel rate limiting across processes.
notify_state = Table(
    "notify_state",
    metadata,
    Column("key", String(120), primary_key=True),
    Column("value", JSON, nullable=False, default=dict),
    Column("updated_at", UTCDateTime),
)

# Dashboard sign-ins (service/ui): one row per session, found by the SHA-256 of the
# cookie's secret (a copy of this table signs nobody in); deleted at sign-out.
ui_sessions = Table(
    "ui_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("who", String(64), nullable=False),  # recorded as the actor "ui:<who>"
    Column("client", String(64)),  # the address it signed in from
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False, index=True),
)

# Several hosts (rollhook/records/hosts.py): each worker's heartbeat, on the records
# database's clock (never a worker's); and each host's state as last told (up/down), so
# that a host going down or coming back is told once.
host_workers = Table(
    "host_workers",
    metadata,
    Column("worker", String(128), primary_key=True),  # <machine>:<pid> of the main process
    Column("host", String(64), nullable=False, index=True),
    Column("rollhook_version", String(64)),
    Column("engine_version", String(64)),
    Column("started_at", UTCDateTime, nullable=False),
    Column("last_beat", UTCDateTime, nullable=False),
)

hosts = Table(
    "hosts",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("state", String(8), nullable=False),  # up | down | unseen (named, never beat)
    Column("changed_at", UTCDateTime, nullable=False),
)

# The reconcile loop's observations and decisions, one row per target: what polling and
# inspection saw, never the truth of what was deployed (that is ``deployments`` and
# ``targets``). ``raised`` is what polling already turned into events (stored in the same
# transaction as them); ``notified`` the target notices already told, for deduplication.
sync = Table(
    "sync",
    metadata,
    Column("target", String(64), primary_key=True),
    Column("observed_commit", String(64)),  # the tracked branch's head as last seen
    Column("observed_at", UTCDateTime),
    Column("observed_images", JSON, nullable=False, default=dict),  # "repo:tag" -> digest
    Column("newest_tags", JSON, nullable=False, default=dict),  # repo -> newest allowed tag
    Column("raised", JSON, nullable=False, default=dict),  # commit, images, tags
    Column("synced_commit", String(64)),  # newest commit known to run (or need nothing)
    Column("last_poll_at", UTCDateTime),
    Column("next_poll_at", UTCDateTime),
    Column("poll_errors", Integer, nullable=False, default=0),  # consecutive
    Column("last_error", JSON),  # kind (git | registry | engine), message, at
    Column("live", JSON, nullable=False, default=dict),  # the containers as last inspected
    Column("inspected_at", UTCDateTime),
    Column("drift", JSON, nullable=False, default=list),  # [{service, what, detail}]
    Column("drift_since", UTCDateTime),
    Column("heals", JSON, nullable=False, default=list),  # ISO times of heals of heals_for
    Column("heals_for", String(40)),  # the deployment the heals re-applied
    Column("degraded_at", UTCDateTime),
    Column("degraded_reason", String(300)),
    Column("notified", JSON, nullable=False, default=dict),  # notice key -> notification ids
    Column("drift_counts", JSON, nullable=False, default=dict),  # what -> episodes
    Column("heal_count", Integer, nullable=False, default=0),
    Column("poll_error_counts", JSON, nullable=False, default=dict),  # kind -> errors
    Column("updated_at", UTCDateTime),
)

# Off-host backups per target (rollhook/records/remote_backups.py): when the next
# scheduled snapshot and drill are due, how the last of each went, and what was told.
remote_backups = Table(
    "remote_backups",
    metadata,
    Column("target", String(64), primary_key=True),
    Column("schedule", String(80)),  # the schedule next_due_at was computed from
    Column("scheduled_since", UTCDateTime),  # staleness counts from here before a success
    Column("next_due_at", UTCDateTime),
    Column("running_since", UTCDateTime),  # a snapshot being taken (cleared when it ends)
    Column("last_attempt_at", UTCDateTime),
    Column("last_success_at", UTCDateTime),
    Column("last_snapshot_id", String(64)),
    Column("last_duration", Float),  # seconds, staging and upload
    Column("last_size", BigInteger),  # bytes of the files the snapshot holds
    Column("last_added", BigInteger),  # bytes the repository grew by
    Column("last_error", Text),
    Column("last_error_at", UTCDateTime),
    Column("failures", Integer, nullable=False, default=0),  # in a row, since the last success
    Column("stale_told_at", UTCDateTime),  # "older than twice the schedule", told once
    Column("drill_schedule", String(80)),
    Column("drill_due_at", UTCDateTime),
    Column("drill_at", UTCDateTime),
    Column("drill_ok", Boolean),
    Column("drill_snapshot_id", String(64)),
    Column("drill_detail", Text),
    Column("updated_at", UTCDateTime),
)

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "rolled_back", "no_op", "superseded"})
STATUSES = TERMINAL_STATUSES | {"queued", "running"}


def row_dict(row: Any) -> dict[str, Any]:
    return dict(row._mapping)
