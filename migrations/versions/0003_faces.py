"""Face-aware verdicts: the whole-image score, the number of faces, and one row per face.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 13:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add verdict columns and the faces table."""
    op.add_column("verdicts", sa.Column("whole_score", sa.Float(), nullable=True))
    op.add_column("verdicts", sa.Column("face_count", sa.Integer(), nullable=True))
    op.create_table(
        "faces",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("verdict_id", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("x", sa.Integer(), nullable=False),
        sa.Column("y", sa.Integer(), nullable=False),
        sa.Column("w", sa.Integer(), nullable=False),
        sa.Column("h", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["verdict_id"], ["verdicts.id"], name=op.f("fk_faces_verdict_id_verdicts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_faces")),
        sa.UniqueConstraint("verdict_id", "rank", name="uq_faces_verdict_id_rank"),
    )


def downgrade() -> None:
    """Drop the faces table and the verdict columns."""
    op.drop_table("faces")
    op.drop_column("verdicts", "face_count")
    op.drop_column("verdicts", "whole_score")
