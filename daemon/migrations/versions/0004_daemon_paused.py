"""daemons.paused: why a running daemon takes no work now (its outputs disk is full), for status

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 19:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("daemons", schema=None) as batch_op:
        batch_op.add_column(sa.Column("paused", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("daemons", schema=None) as batch_op:
        batch_op.drop_column("paused")
