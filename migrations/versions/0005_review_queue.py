"""Review queue: each item carries its verdict's score and label; indexes for counts and review order per job.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add items.score and items.label (copied from existing verdicts) and the indexes that read them."""
    op.add_column("items", sa.Column("score", sa.Float(), nullable=True))
    op.add_column("items", sa.Column("label", sa.String(length=8), nullable=True))
    for column in ("score", "label"):
        op.execute(f"UPDATE items SET {column} = (SELECT {column} FROM verdicts WHERE verdicts.id = items.verdict_id) "
                   "WHERE verdict_id IS NOT NULL")  # fmt: skip
    op.drop_index("ix_items_job_id_status", table_name="items")
    op.create_index("ix_items_job_id_status_label", "items", ["job_id", "status", "label"])
    # Highest score first, unscored items last: SQLite puts NULLs last in DESC by itself, PostgreSQL is told.
    nulls_last = " NULLS LAST" if op.get_context().dialect.name == "postgresql" else ""
    op.execute(f"CREATE INDEX ix_items_job_id_score ON items (job_id, score DESC{nulls_last}, id)")
    op.create_index("ix_decisions_item_id_id", "decisions", ["item_id", "id"])


def downgrade() -> None:
    """Drop the indexes and the columns; restore the old index."""
    op.drop_index("ix_decisions_item_id_id", table_name="decisions")
    op.drop_index("ix_items_job_id_score", table_name="items")
    op.drop_index("ix_items_job_id_status_label", table_name="items")
    op.create_index("ix_items_job_id_status", "items", ["job_id", "status"])
    # Plain ALTER TABLE (SQLite 3.35+ drops columns itself): a batch copy-and-rename would break the views.
    op.drop_column("items", "label")
    op.drop_column("items", "score")
