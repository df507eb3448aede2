"""daemons: heartbeats of running daemons, for status and for requeueing the jobs of a dead one

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 17:51:30.442496
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "daemons",
        sa.Column("worker", sa.String(length=200), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("worker"),
    )
    with op.batch_alter_table("daemons", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_daemons_seen_at"), ["seen_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("daemons", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_daemons_seen_at"))

    op.drop_table("daemons")
