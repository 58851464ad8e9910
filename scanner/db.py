"""The system of record: SQLAlchemy 2.0 models, engine set-up and Alembic helpers."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

RowT = TypeVar("RowT")
MAX_ID = 2**31 - 1  # ids are INTEGER: int4 on PostgreSQL (64-bit on SQLite); a larger id is no row, not an overflow
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# The newest migration's revision, so that opening a database needs no Alembic import (a test checks it
# against Alembic's own head).
SCHEMA_HEAD = "0010"


def uri_key(uri: str) -> str:
    """The sha256 of an item's URI: what makes it unique within its job (migration 0006 fills older rows)."""
    return hashlib.sha256(uri.encode("utf-8", "surrogateescape")).hexdigest()


def utcnow() -> datetime:
    """Timezone-aware now, stored as UTC."""
    return datetime.now(UTC)


def row_by_id(session: Session, model: type[RowT], row_id: int) -> RowT | None:
    """The row with this id, or None; an id past MAX_ID is no row, never sent to the database (it would overflow)."""
    return session.get(model, row_id) if 1 <= row_id <= MAX_ID else None


class Base(DeclarativeBase):
    """Declarative base with deterministic constraint names."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Job(Base):
    """One `scanner submit` call."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), default="running", index=True)
    mode: Mapped[str] = mapped_column(String(16), default="embedded")
    sources: Mapped[list[str]] = mapped_column(JSON)
    sources_key: Mapped[str] = mapped_column(String(64), index=True)
    model_version: Mapped[str] = mapped_column(String(128))
    threshold: Mapped[float] = mapped_column(Float)
    items_total: Mapped[int] = mapped_column(Integer, default=0)
    items_done: Mapped[int] = mapped_column(Integer, default=0)
    items_error: Mapped[int] = mapped_column(Integer, default=0)
    items_flagged: Mapped[int] = mapped_column(Integer, default=0)
    items_skipped: Mapped[int] = mapped_column(Integer, default=0)


class Item(Base):
    """One submitted input (a file or URL) and what became of it."""

    __tablename__ = "items"
    __table_args__ = (
        Index("uq_items_job_id_uri_key", "job_id", "uri_key", unique=True),  # a hash: URIs have no length limit
        Index("ix_items_job_id_status_label", "job_id", "status", "label"),  # counts without reading rows
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    uri: Mapped[str] = mapped_column(Text)
    uri_key: Mapped[str | None] = mapped_column(String(64))  # sha256 of uri (uri_key()), unique per job
    kind: Mapped[str] = mapped_column(String(8), default="file")
    status: Mapped[str] = mapped_column(String(16), default="queued")
    error_code: Mapped[str | None] = mapped_column(String(32))
    error_message: Mapped[str | None] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int | None] = mapped_column(Integer)
    format: Mapped[str | None] = mapped_column(String(16))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    final_url: Mapped[str | None] = mapped_column(Text)
    http_status: Mapped[int | None] = mapped_column(Integer)
    verdict_id: Mapped[int | None] = mapped_column(ForeignKey("verdicts.id"), index=True)
    # Copies of the verdict's score and label (verdicts never change): counts and the review queue read only
    # the items table and its indexes (ix_items_job_id_score: job, score descending, id; migration 0005).
    score: Mapped[float | None] = mapped_column(Float)
    label: Mapped[str | None] = mapped_column(String(8))
    worker: Mapped[str | None] = mapped_column(String(128))
    scanned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Verdict(Base):
    """The model's score for one image content under one model version."""

    __tablename__ = "verdicts"
    __table_args__ = (UniqueConstraint("sha256", "model_version", name="uq_verdicts_sha256_model_version"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(128))
    score: Mapped[float] = mapped_column(Float)
    label: Mapped[str] = mapped_column(String(8))
    threshold: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    whole_score: Mapped[float | None] = mapped_column(Float)  # the whole image, scaled (see patch_score)
    patch_score: Mapped[float | None] = mapped_column(Float)  # the native patch; before 0010 folded into whole_score
    face_count: Mapped[int | None] = mapped_column(Integer)


class Face(Base):
    """One face found in an image content and the model's score for its crop (boxes in image pixels)."""

    __tablename__ = "faces"
    __table_args__ = (UniqueConstraint("verdict_id", "rank", name="uq_faces_verdict_id_rank"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    verdict_id: Mapped[int] = mapped_column(ForeignKey("verdicts.id", ondelete="CASCADE"))
    rank: Mapped[int] = mapped_column(Integer)
    x: Mapped[int] = mapped_column(Integer)
    y: Mapped[int] = mapped_column(Integer)
    w: Mapped[int] = mapped_column(Integer)
    h: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)


class Batch(Base):
    """One dispatched batch of a distributed job, leased by the worker that scans it.

    A worker that dies stops renewing its lease; any worker or submitter that sees the lease expired sends the
    batch again (`lost_count` + 1). A batch lost `SCANNER_MAX_DELIVERIES` times is split to isolate the item that
    kills its worker.
    """

    __tablename__ = "batches"
    __table_args__ = (Index("ix_batches_status_lease_until", "status", "lease_until"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    item_ids: Mapped[list[int]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    deliveries: Mapped[int] = mapped_column(Integer, default=0)
    lost_count: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Skipped(Base):
    """A file met while walking a directory that is not an image: counted, never silently dropped."""

    __tablename__ = "skipped"
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(String(32))


class Hold(Base):
    """An item open in a reviewer's browser: not handed to another reviewer until `held_until`."""

    __tablename__ = "holds"
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))  # the reviewer and their browser session
    held_until: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class Decision(Base):
    """A reviewer's decision on an item; never overwrites the model's verdict. An undone decision is kept,
    marked retracted, and no longer counts (the item's decision is its latest one not retracted)."""

    __tablename__ = "decisions"
    __table_args__ = (Index("ix_decisions_item_id_id", "item_id", "id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    decision: Mapped[str] = mapped_column(String(8))
    reviewer: Mapped[str] = mapped_column(String(128))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    retracted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    retracted_by: Mapped[str | None] = mapped_column(String(128))


class StoredModel(Base):
    """A model made here (`scanner adapt`), kept in SQL so that every worker of the fleet can load it by name."""

    __tablename__ = "models"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    model_version: Mapped[str] = mapped_column(String(128), unique=True)
    base_version: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))
    sha256: Mapped[str] = mapped_column(String(64))  # of the checkpoint bytes
    checkpoint: Mapped[bytes] = mapped_column(LargeBinary)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)  # jobs, decisions used, evaluation, guardrails


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    _switch_to_wal(cursor)
    cursor.execute("PRAGMA cache_size=-65536")  # 64 MiB: review queries read large jobs in score order
    cursor.close()


def _switch_to_wal(cursor: Any, seconds: float = 30.0) -> None:
    """Set WAL mode, waiting while another process holds the new file: the switch needs the file alone, and
    SQLite answers "database is locked" at once instead of waiting out the busy timeout (seen when four
    processes opened a new database together)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def dialect_insert(session: Session, model: Any) -> Any:
    """INSERT for the session's database, with its ON CONFLICT clauses (PostgreSQL's or SQLite's)."""
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(model)


def make_engine(url: str) -> Engine:
    """An engine; SQLite gets WAL, foreign keys and a busy timeout, and its folder is created."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def session_factory(engine: Engine) -> sessionmaker[Any]:
    """Sessions that keep loaded attributes after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Any:
    """An Alembic Config pointing at our migrations and the given database."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to `revision`."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def current_revision(engine: Engine) -> str | None:
    """The database's Alembic revision, or None when it has no schema (read without importing Alembic)."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def head_revision(url: str) -> str | None:
    """The newest migration's revision id."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()
