"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-27 03:13:22.796356
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("trigger", sa.JSON(), nullable=False),
        sa.Column("requested", sa.JSON(), nullable=False),
        sa.Column("commit", sa.String(length=64), nullable=True),
        sa.Column("commit_info", sa.JSON(), nullable=True),
        sa.Column("images", sa.JSON(), nullable=False),
        sa.Column("config_hash", sa.String(length=80), nullable=True),
        sa.Column("fingerprint", sa.String(length=80), nullable=True),
        sa.Column("previous_deployment_id", sa.String(length=40), nullable=True),
        sa.Column("backup_id", sa.String(length=80), nullable=True),
        sa.Column("superseded_by", sa.String(length=40), nullable=True),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("log", sa.Text(), nullable=False),
        sa.Column("lease_token", sa.Integer(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("children", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployments")),
    )
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.create_index("ix_deployments_status", ["status"], unique=False)
        batch_op.create_index(
            "ix_deployments_target_created", ["target", "created_at"], unique=False
        )

    op.create_table(
        "events",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("dedup_key", sa.String(length=200), nullable=False),
        sa.Column("delivery_id", sa.String(length=200), nullable=True),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint("dedup_key", name=op.f("uq_events_dedup_key")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_events_received_at"), ["received_at"], unique=False)

    op.create_table(
        "notifications",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("deployment_id", sa.String(length=40), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=24), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("external", sa.JSON(), nullable=False),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index(
            "ix_notifications_deployment", ["deployment_id", "channel"], unique=False
        )

    op.create_table(
        "notify_state",
        sa.Column("key", sa.String(length=120), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_notify_state")),
    )
    op.create_table(
        "targets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("paused_reason", sa.String(length=200), nullable=True),
        sa.Column("paused_at", sa.DateTime(), nullable=True),
        sa.Column("held", sa.Boolean(), nullable=False),
        sa.Column("current_deployment_id", sa.String(length=40), nullable=True),
        sa.Column("last_good_deployment_id", sa.String(length=40), nullable=True),
        sa.Column("pins", sa.JSON(), nullable=False),
        sa.Column("failed_fingerprint", sa.String(length=80), nullable=True),
        sa.Column("lease_owner", sa.String(length=120), nullable=True),
        sa.Column("lease_token", sa.Integer(), nullable=False),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_targets")),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("event_id", sa.String(length=40), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("dispatched_at", sa.DateTime(), nullable=True),
        sa.Column("dispatch_attempts", sa.Integer(), nullable=False),
        sa.Column("consumed_at", sa.DateTime(), nullable=True),
        sa.Column("deployment_id", sa.String(length=40), nullable=True),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.id"], name=op.f("fk_jobs_event_id"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_event", ["event_id"], unique=False)
        batch_op.create_index("ix_jobs_undispatched", ["dispatched_at", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_undispatched")
        batch_op.drop_index("ix_jobs_event")

    op.drop_table("jobs")
    op.drop_table("targets")
    op.drop_table("notify_state")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_deployment")

    op.drop_table("notifications")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_received_at"))

    op.drop_table("events")
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_index("ix_deployments_target_created")
        batch_op.drop_index("ix_deployments_status")

    op.drop_table("deployments")
