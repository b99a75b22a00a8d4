"""queue: instance snapshot versions, delivery leases, result versions, series errors, worker heartbeats

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dicomnode.db.models import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_instances_version"), ["version"], unique=False)
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_error", sa.Text(), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("result_version", sa.Integer(), nullable=False, server_default="1"))
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_owner", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("lease_expires_at", UTCDateTime(), nullable=True))
    op.create_table(
        "workers",
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("host", sa.String(length=128), nullable=False),
        sa.Column("pipelines", sa.JSON(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=False),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("owner"),
    )
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_workers_heartbeat_at"), ["heartbeat_at"], unique=False)
    # Instances of series already complete belong to their current version.
    op.execute(
        "UPDATE instances SET version = (SELECT series.version FROM series WHERE series.id = instances.series_id "
        "AND series.state = 'COMPLETE')"
    )
    op.execute("UPDATE jobs SET result_version = series_version")


def downgrade() -> None:
    op.drop_table("workers")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("lease_expires_at")
        batch_op.drop_column("lease_owner")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("result_version")
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.drop_column("last_error")
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instances_version"))
        batch_op.drop_column("version")
