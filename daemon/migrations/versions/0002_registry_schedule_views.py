"""schedule runs, retraining, model registry, trend views

The views are for analysts (any SQL tool) and for `qa-daemon history` / reports:
photo_results (one row per processed photo, crack and taping side by side) and
daily_site_summary (one row per capture day and site). Days are capture days.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 16:56:26.532494
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

VIEWS = {
    "photo_results": """
        SELECT p.id AS photo_id, p.site, p.location, p.name, p.sha256, p.captured_at, {day} AS day,
               p.processed_at, p.processing_ms, mv.name AS model_version,
               c.area_pct AS crack_pct, c.area_px AS crack_area_px, c.components AS crack_components,
               c.length_px AS crack_length_px, c.length_mm AS crack_length_mm,
               c.max_width_px AS crack_max_width_px, c.max_width_mm AS crack_max_width_mm,
               c.severity AS crack_severity, c.mean_confidence AS crack_confidence,
               t.coverage_pct AS taping_coverage_pct, t.components AS taping_components,
               p.overlay_path, c.mask_path AS crack_mask, t.mask_path AS taping_mask
        FROM photos p
        JOIN jobs j ON j.photo_id = p.id AND j.status = 'done'
        LEFT JOIN detections c ON c.photo_id = p.id AND c.task = 'crack'
        LEFT JOIN detections t ON t.photo_id = p.id AND t.task = 'taping'
        LEFT JOIN model_versions mv ON mv.id = p.model_version_id""",
    "daily_site_summary": """
        SELECT day, site, COUNT(*) AS photos,
               SUM(CASE WHEN crack_pct > 0 THEN 1 ELSE 0 END) AS photos_with_cracks,
               100.0 * SUM(CASE WHEN crack_pct > 0 THEN 1 ELSE 0 END) / COUNT(*) AS crack_share_pct,
               AVG(crack_pct) AS mean_crack_pct,
               SUM(crack_area_px) AS crack_area_px,
               SUM(crack_length_px) AS crack_length_px,
               SUM(crack_length_mm) AS crack_length_mm,
               AVG(taping_coverage_pct) AS mean_taping_coverage_pct,
               SUM(CASE WHEN crack_severity = 'hairline' THEN 1 ELSE 0 END) AS hairline,
               SUM(CASE WHEN crack_severity = 'fine' THEN 1 ELSE 0 END) AS fine,
               SUM(CASE WHEN crack_severity = 'medium' THEN 1 ELSE 0 END) AS medium,
               SUM(CASE WHEN crack_severity = 'wide' THEN 1 ELSE 0 END) AS wide
        FROM photo_results GROUP BY day, site""",
}


def _day() -> str:
    """The capture day as an ISO date: SQLite keeps datetimes as text, other databases cast."""
    return "date(p.captured_at)" if op.get_bind().dialect.name == "sqlite" else "CAST(p.captured_at AS DATE)"


def upgrade() -> None:
    op.create_table(
        "labeled_images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sha256"),
    )
    with op.batch_alter_table("labeled_images", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_labeled_images_first_seen_at"), ["first_seen_at"], unique=False)

    op.create_table(
        "schedule_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job", sa.String(length=50), nullable=False),
        sa.Column("slot", sa.String(length=50), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job", "slot"),
    )
    op.create_table(
        "retrain_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("new_images", sa.Integer(), nullable=False),
        sa.Column("base_version_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("candidate_version_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["base_version_id"],
            ["model_versions.id"],
        ),
        sa.ForeignKeyConstraint(
            ["candidate_version_id"],
            ["model_versions.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status", sa.String(length=10), nullable=False, server_default="active"))
        batch_op.add_column(sa.Column("metrics", sa.Text(), nullable=False, server_default="{}"))
        batch_op.add_column(sa.Column("promoted_at", sa.DateTime(), nullable=True))
    op.execute("UPDATE model_versions SET status = 'retired' WHERE NOT active")
    for name, sql in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {sql.format(day=_day())}")


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW {name}")
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_column("promoted_at")
        batch_op.drop_column("metrics")
        batch_op.drop_column("status")

    op.drop_table("retrain_requests")
    op.drop_table("schedule_runs")
    with op.batch_alter_table("labeled_images", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_labeled_images_first_seen_at"))

    op.drop_table("labeled_images")
