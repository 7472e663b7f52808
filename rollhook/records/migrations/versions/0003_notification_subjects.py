"""notifications name what they are about: a deployment today, a target or a host later

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 12:00:00

Existing rows are deployment notices: their subject is their deployment.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("kind", sa.String(length=32), nullable=False, server_default="deployment")
        )
        batch_op.add_column(
            sa.Column(
                "subject_kind", sa.String(length=16), nullable=False, server_default="deployment"
            )
        )
        batch_op.add_column(sa.Column("subject", sa.String(length=120), nullable=True))
        batch_op.alter_column("deployment_id", existing_type=sa.String(length=40), nullable=True)
        batch_op.alter_column("target", existing_type=sa.String(length=64), nullable=True)
    op.execute("UPDATE notifications SET subject = deployment_id WHERE subject IS NULL")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.alter_column("subject", existing_type=sa.String(length=120), nullable=False)
        batch_op.create_index(
            "ix_notifications_subject", ["kind", "subject", "channel"], unique=False
        )


def downgrade() -> None:
    op.execute("DELETE FROM notifications WHERE deployment_id IS NULL OR target IS NULL")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_subject")
        batch_op.alter_column("target", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("deployment_id", existing_type=sa.String(length=40), nullable=False)
        batch_op.drop_column("subject")
        batch_op.drop_column("subject_kind")
        batch_op.drop_column("kind")
