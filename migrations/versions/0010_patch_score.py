"""The native patch's score beside the whole image's: a verdict says which of the two drove it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08 01:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add `patch_score` (the native patch's calibrated score; NULL where the model or the image has none)."""
    op.add_column("verdicts", sa.Column("patch_score", sa.Float(), nullable=True))


def downgrade() -> None:
    """Drop `patch_score`."""
    with op.batch_alter_table("verdicts") as batch:
        batch.drop_column("patch_score")
