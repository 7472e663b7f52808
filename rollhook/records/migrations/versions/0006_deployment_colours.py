"""deployments.colours: which of a start-first target's two colours serves

Revision ID: 0006
Revises: 0003
Create Date: 2026-12-03 12:00:00

A nullable JSON column (recreate deployments leave it empty): a plain ADD COLUMN, no
table rebuild.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deployments", sa.Column("colours", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_column("colours")
