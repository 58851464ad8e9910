"""Retracted decisions: an undone decision stays in the history, marked, and stops counting.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 21:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

FLAGGED_ITEMS = """
CREATE VIEW flagged_items AS
SELECT i.id AS item_id, i.job_id, i.uri, i.sha256, v.score, v.threshold, v.model_version, i.scanned_at,
       d.decision AS latest_decision, d.reviewer, d.created_at AS decided_at
FROM items i
JOIN verdicts v ON v.id = i.verdict_id
LEFT JOIN decisions d ON d.id = (SELECT max(d2.id) FROM decisions d2 WHERE d2.item_id = i.id{retracted})
WHERE v.label = 'fake'
"""


def upgrade() -> None:
    """Add when and by whom a decision was retracted; the flagged view's latest decision skips retracted ones."""
    op.add_column("decisions", sa.Column("retracted_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("decisions", sa.Column("retracted_by", sa.String(length=128), nullable=True))
    op.execute("DROP VIEW IF EXISTS flagged_items")
    op.execute(FLAGGED_ITEMS.format(retracted=" AND d2.retracted_at IS NULL"))


def downgrade() -> None:
    """Drop the retraction columns (retracted decisions count again) and restore the view."""
    op.execute("DROP VIEW IF EXISTS flagged_items")
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("retracted_by")
        batch.drop_column("retracted_at")
    op.execute(FLAGGED_ITEMS.format(retracted=""))
