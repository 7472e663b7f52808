"""host_workers and hosts: the workers' heartbeats per host, and each host's told state

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 19:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "host_workers",
        sa.Column("worker", sa.String(length=128), nullable=False),
        sa.Column("host", sa.String(length=64), nullable=False),
        sa.Column("rollhook_version", sa.String(length=64), nullable=True),
        sa.Column("engine_version", sa.String(length=64), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("last_beat", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("worker", name=op.f("pk_host_workers")),
    )
    op.create_index(op.f("ix_host_workers_host"), "host_workers", ["host"])
    op.create_table(
        "hosts",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("changed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_hosts")),
    )


def downgrade() -> None:
    op.drop_table("hosts")
    op.drop_index(op.f("ix_host_workers_host"), table_name="host_workers")
    op.drop_table("host_workers")
