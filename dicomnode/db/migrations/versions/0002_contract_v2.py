"""contract v2: job outcome and dependencies, series frame count

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("outcome", sa.String(length=24), nullable=True))
        batch_op.add_column(sa.Column("depends_on", sa.JSON(), nullable=False, server_default="[]"))
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.add_column(sa.Column("frame_count", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.drop_column("frame_count")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("depends_on")
        batch_op.drop_column("outcome")
