"""scrub: photos.outputs_removed_at marks results that retention deleted on purpose; failures.stage widens
to 20 characters for the stage `results_lost`

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 13:00:00
"""

import importlib.util
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("photos", schema=None) as batch_op:
        batch_op.add_column(sa.Column("outputs_removed_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("failures", schema=None) as batch_op:
        batch_op.alter_column("stage", existing_type=sa.String(length=10), type_=sa.String(length=20),
                              existing_nullable=False)


def _revision_0005():
    path = Path(__file__).with_name("0005_taping_measures_waiting_files.py")
    spec = importlib.util.spec_from_file_location("qa_daemon_migration_0005", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def downgrade() -> None:
    # the older code knows neither `lost` nor `results_lost`: a lost photo is one whose file vanished (taken
    # again when its bytes reappear), and its record says why in the older stage's words
    op.execute("UPDATE jobs SET status = 'missing' WHERE status = 'lost'")
    op.execute("UPDATE failures SET stage = 'process', error = 'results lost: ' || error "
               "WHERE stage = 'results_lost'")
    with op.batch_alter_table("failures", schema=None) as batch_op:
        batch_op.alter_column("stage", existing_type=sa.String(length=20), type_=sa.String(length=10),
                              existing_nullable=False)
    # SQLite rebuilds `photos` to drop a column; the views that read it go first and come back after
    views = _revision_0005()
    for name in reversed(list(views.VIEWS)):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    with op.batch_alter_table("photos", schema=None) as batch_op:
        batch_op.drop_column("outputs_removed_at")
    views._create(views.VIEWS)
