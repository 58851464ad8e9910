"""Review holds in SQL: an opened item is not handed to another reviewer, whichever serve process they use.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 16:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the holds table: one row per item open in a browser, until its hold expires."""
    op.create_table(
        "holds",
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("held_until", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], name="fk_holds_item_id_items", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("item_id", name="pk_holds"),
    )
    op.create_index("ix_holds_held_until", "holds", ["held_until"])


def downgrade() -> None:
    """Drop the holds table."""
    op.drop_index("ix_holds_held_until", table_name="holds")
    op.drop_table("holds")
