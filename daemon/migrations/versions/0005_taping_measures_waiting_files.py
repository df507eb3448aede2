"""taping measures in the trend views; daemons.waiting: the files a daemon has seen but not yet taken

photo_results gains the taping mask's area, length (its skeleton, as for cracks) and confidence;
daily_site_summary gains photos with taping, their share, taped segments and their length. New
columns go at the end, so an analyst's query that names columns keeps working.
daemons.waiting holds, as JSON, the files a running daemon is letting settle or waiting on (a copy
in progress, an empty or truncated file), so that `qa-daemon status` can count and list them.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 12:40:00
"""

import importlib.util
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
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
               p.overlay_path, c.mask_path AS crack_mask, t.mask_path AS taping_mask,
               t.area_px AS taping_area_px, t.length_px AS taping_length_px, t.length_mm AS taping_length_mm,
               t.mean_confidence AS taping_confidence
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
               SUM(CASE WHEN crack_severity = 'wide' THEN 1 ELSE 0 END) AS wide,
               SUM(CASE WHEN taping_coverage_pct > 0 THEN 1 ELSE 0 END) AS photos_with_taping,
               100.0 * SUM(CASE WHEN taping_coverage_pct > 0 THEN 1 ELSE 0 END) / COUNT(*) AS taping_share_pct,
               SUM(taping_components) AS taping_segments,
               SUM(taping_length_px) AS taping_length_px,
               SUM(taping_length_mm) AS taping_length_mm
        FROM photo_results GROUP BY day, site""",
}


def _day() -> str:
    """The capture day as an ISO date: SQLite keeps datetimes as text, other databases cast."""
    return "date(p.captured_at)" if op.get_bind().dialect.name == "sqlite" else "CAST(p.captured_at AS DATE)"


def _create(views: dict[str, str]) -> None:
    for name in reversed(list(views)):  # the summary reads photo_results: drop it first
        op.execute(f"DROP VIEW IF EXISTS {name}")
    for name, sql in views.items():
        op.execute(f"CREATE VIEW {name} AS {sql.format(day=_day())}")


def _views_of_0002() -> dict[str, str]:
    path = Path(__file__).with_name("0002_registry_schedule_views.py")
    spec = importlib.util.spec_from_file_location("qa_daemon_migration_0002", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.VIEWS


def upgrade() -> None:
    with op.batch_alter_table("daemons", schema=None) as batch_op:
        batch_op.add_column(sa.Column("waiting", sa.Text(), nullable=True))
    _create(VIEWS)


def downgrade() -> None:
    _create(_views_of_0002())
    with op.batch_alter_table("daemons", schema=None) as batch_op:
        batch_op.drop_column("waiting")
