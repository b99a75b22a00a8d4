"""delivery lanes: circuit breaker and pause flag per destination

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dicomnode.db.models import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("destination_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("circuit", sa.String(length=24), nullable=False, server_default="CLOSED"))
        batch_op.add_column(sa.Column("circuit_opened_at", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("last_attempt_at", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("paused_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("destination_state", schema=None) as batch_op:
        batch_op.drop_column("paused_at")
        batch_op.drop_column("paused")
        batch_op.drop_column("last_attempt_at")
        batch_op.drop_column("circuit_opened_at")
        batch_op.drop_column("circuit")
