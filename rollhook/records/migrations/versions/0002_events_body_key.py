"""events.body_key: a signed body replayed under a new delivery id is the same event

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 11:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN and a unique index: no table rebuild on SQLite (a rebuild of
    # events would cascade into its jobs).
    op.add_column("events", sa.Column("body_key", sa.String(length=80), nullable=True))
    op.create_index("ix_events_body_key", "events", ["body_key"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_events_body_key", table_name="events")
    op.drop_column("events", "body_key")
