"""Reporting views: flagged items with their latest decision, per-job and per-day counts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 07:40:00
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

LATEST_DECISION = """
LEFT JOIN decisions d ON d.id = (SELECT max(d2.id) FROM decisions d2 WHERE d2.item_id = i.id)
"""

FLAGGED_ITEMS = f"""
CREATE VIEW flagged_items AS
SELECT i.id AS item_id, i.job_id, i.uri, i.sha256, v.score, v.threshold, v.model_version, i.scanned_at,
       d.decision AS latest_decision, d.reviewer, d.created_at AS decided_at
FROM items i
JOIN verdicts v ON v.id = i.verdict_id
{LATEST_DECISION}
WHERE v.label = 'fake'
"""

JOB_SUMMARY = """
CREATE VIEW job_summary AS
SELECT j.id AS job_id, j.created_at, j.finished_at, j.status, j.mode, j.model_version, j.threshold,
       count(i.id) AS items,
       sum(CASE WHEN i.status = 'done' THEN 1 ELSE 0 END) AS done,
       sum(CASE WHEN i.status = 'error' THEN 1 ELSE 0 END) AS errors,
       sum(CASE WHEN i.status = 'queued' THEN 1 ELSE 0 END) AS queued,
       sum(CASE WHEN v.label = 'fake' THEN 1 ELSE 0 END) AS flagged,
       j.items_skipped AS skipped
FROM jobs j
LEFT JOIN items i ON i.job_id = j.id
LEFT JOIN verdicts v ON v.id = i.verdict_id
GROUP BY j.id, j.created_at, j.finished_at, j.status, j.mode, j.model_version, j.threshold, j.items_skipped
"""

DAILY_COUNTS = """
CREATE VIEW daily_counts AS
SELECT {day} AS day,
       count(i.id) AS processed,
       sum(CASE WHEN v.label = 'fake' THEN 1 ELSE 0 END) AS flagged,
       sum(CASE WHEN i.status = 'error' THEN 1 ELSE 0 END) AS errors
FROM items i
LEFT JOIN verdicts v ON v.id = i.verdict_id
WHERE i.scanned_at IS NOT NULL
GROUP BY {day}
"""

DAY = {"postgresql": "CAST(i.scanned_at AT TIME ZONE 'UTC' AS DATE)", "sqlite": "date(i.scanned_at)"}


def upgrade() -> None:
    """Create the views."""
    dialect = op.get_bind().dialect.name
    op.execute(FLAGGED_ITEMS)
    op.execute(JOB_SUMMARY)
    op.execute(DAILY_COUNTS.format(day=DAY.get(dialect, "CAST(i.scanned_at AS DATE)")))


def downgrade() -> None:
    """Drop the views."""
    for view in ("daily_counts", "job_summary", "flagged_items"):
        op.execute(f"DROP VIEW IF EXISTS {view}")
