"""Items are unique per job by a hash of their URI: PostgreSQL's btree refused URIs over about 2.7 KB.

A URI over 2,704 bytes in the (job_id, uri) unique index failed the insert ("index row size exceeds btree
version 4 maximum"): the job stayed `creating` for ever and the short URIs beside it were never scanned.
`items.uri_key` is the sha256 of the URI, unique per job on both databases. PostgreSQL drops the old
constraint; SQLite, which has no such limit, keeps it, since dropping a table constraint there means rebuilding
`items`, and with foreign keys on that would delete every decision through the cascade.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 16:45:00
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

CHUNK = 10_000


def uri_key(uri: str) -> str:
    """The sha256 of a URI as stored (text that may hold escaped undecodable bytes)."""
    return hashlib.sha256(uri.encode("utf-8", "surrogateescape")).hexdigest()


def upgrade() -> None:
    """Add items.uri_key, fill it, index it uniquely per job; PostgreSQL drops the (job_id, uri) constraint."""
    op.add_column("items", sa.Column("uri_key", sa.String(length=64), nullable=True))
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("UPDATE items SET uri_key = encode(sha256(convert_to(uri, 'UTF8')), 'hex')")
    else:
        last = 0
        while rows := bind.execute(
            sa.text("SELECT id, uri FROM items WHERE id > :last ORDER BY id LIMIT :n"), {"last": last, "n": CHUNK}
        ).all():
            bind.execute(
                sa.text("UPDATE items SET uri_key = :key WHERE id = :id"),
                [{"key": uri_key(uri), "id": item_id} for item_id, uri in rows],
            )
            last = rows[-1][0]
    op.create_index("uq_items_job_id_uri_key", "items", ["job_id", "uri_key"], unique=True)
    if bind.dialect.name == "postgresql":
        op.drop_constraint("uq_items_job_id_uri", "items", type_="unique")


def downgrade() -> None:
    """Restore the (job_id, uri) constraint on PostgreSQL; drop the key."""
    if op.get_bind().dialect.name == "postgresql":
        op.create_unique_constraint("uq_items_job_id_uri", "items", ["job_id", "uri"])
    op.drop_index("uq_items_job_id_uri_key", table_name="items")
    op.drop_column("items", "uri_key")
