"""the reconcile loop: a sync row per target, and each deployment's containers

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 10:00:00

``sync`` holds what polling and inspection observed and decided for a target;
``deployments.containers`` the compose config hash of each service once the gate passed,
which drift is compared with (older records have none: that check is skipped for them).
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sync",
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("observed_commit", sa.String(length=64), nullable=True),
        sa.Column("observed_at", sa.DateTime(), nullable=True),
        sa.Column("observed_images", sa.JSON(), nullable=False),
        sa.Column("newest_tags", sa.JSON(), nullable=False),
        sa.Column("raised", sa.JSON(), nullable=False),
        sa.Column("synced_commit", sa.String(length=64), nullable=True),
        sa.Column("last_poll_at", sa.DateTime(), nullable=True),
        sa.Column("next_poll_at", sa.DateTime(), nullable=True),
        sa.Column("poll_errors", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.JSON(), nullable=True),
        sa.Column("live", sa.JSON(), nullable=False),
        sa.Column("inspected_at", sa.DateTime(), nullable=True),
        sa.Column("drift", sa.JSON(), nullable=False),
        sa.Column("drift_since", sa.DateTime(), nullable=True),
        sa.Column("heals", sa.JSON(), nullable=False),
        sa.Column("heals_for", sa.String(length=40), nullable=True),
        sa.Column("degraded_at", sa.DateTime(), nullable=True),
        sa.Column("degraded_reason", sa.String(length=300), nullable=True),
        sa.Column("notified", sa.JSON(), nullable=False),
        sa.Column("drift_counts", sa.JSON(), nullable=False),
        sa.Column("heal_count", sa.Integer(), nullable=False),
        sa.Column("poll_error_counts", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("target", name=op.f("pk_sync")),
    )
    # A plain ADD COLUMN: no table rebuild on SQLite.
    op.add_column("deployments", sa.Column("containers", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("deployments", "containers")
    op.drop_table("sync")
