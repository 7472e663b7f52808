"""remote_backups: off-host snapshots and restore drills per target

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-10 12:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "remote_backups",
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("schedule", sa.String(length=80), nullable=True),
        sa.Column("scheduled_since", sa.DateTime(), nullable=True),
        sa.Column("next_due_at", sa.DateTime(), nullable=True),
        sa.Column("running_since", sa.DateTime(), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("last_success_at", sa.DateTime(), nullable=True),
        sa.Column("last_snapshot_id", sa.String(length=64), nullable=True),
        sa.Column("last_duration", sa.Float(), nullable=True),
        sa.Column("last_size", sa.BigInteger(), nullable=True),
        sa.Column("last_added", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", sa.DateTime(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("stale_told_at", sa.DateTime(), nullable=True),
        sa.Column("drill_schedule", sa.String(length=80), nullable=True),
        sa.Column("drill_due_at", sa.DateTime(), nullable=True),
        sa.Column("drill_at", sa.DateTime(), nullable=True),
        sa.Column("drill_ok", sa.Boolean(), nullable=True),
        sa.Column("drill_snapshot_id", sa.String(length=64), nullable=True),
        sa.Column("drill_detail", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("target", name=op.f("pk_remote_backups")),
    )


def downgrade() -> None:
    op.drop_table("remote_backups")
