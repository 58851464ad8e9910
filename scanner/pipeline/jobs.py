"""Job records: a submitted job, one item per input and the skipped files, in batched transactions."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, DateTime, delete, exists, insert, literal, select, text, update
from sqlalchemy.orm import Session

from scanner.db import Item, Job, Skipped, uri_key, utcnow
from scanner.pipeline.sink import insert_ignoring_conflicts
from scanner.pipeline.sources import RAW_PREFIX, Expansion, is_url, path_uri
from scanner.safe_text import mask_passwords

INSERT_CHUNK = 1000


def sources_key(sources: Sequence[str], model_version: str) -> str:
    """Identifies 'the same submission again' (canonical sources, same model) so an interrupted job resumes."""
    return hashlib.sha256(json.dumps([list(sources), model_version]).encode("utf-8", "surrogateescape")).hexdigest()


def canonical_sources(arguments: Sequence[str]) -> list[str]:
    """Arguments as the job records them: URLs as given, paths absolute and normalised (so `images` typed in two
    different folders are two different jobs)."""
    return [arg if is_url(arg) or arg.startswith(RAW_PREFIX) else _canonical_path(arg) for arg in arguments]


def _canonical_path(argument: str) -> str:
    uri, kind = path_uri(Path(os.path.normpath(os.path.abspath(os.path.expanduser(argument)))))
    return RAW_PREFIX + uri if kind == "rawpath" else uri


def chunks(values: Sequence[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive slices of at most `size`."""
    for start in range(0, len(values), max(1, size)):
        yield list(values[start : start + size])


def find_resumable_job(sessions: Any, key: str) -> int | None:
    """The newest unfinished job with the same sources and model, if any (also one whose creation was cut)."""
    with sessions() as session:
        return session.scalar(
            select(Job.id).where(Job.sources_key == key, Job.finished_at.is_(None)).order_by(Job.id.desc())
        )


def _item_row(job_id: int, spec: Any) -> dict[str, Any]:
    row = {"job_id": job_id, "uri": spec.uri, "uri_key": uri_key(spec.uri), "kind": spec.kind, "status": "queued",
           "error_code": None, "error_message": None}  # fmt: skip
    if spec.error:
        row.update(
            status="error", error_code=spec.error, error_message=mask_passwords(spec.message), scanned_at=utcnow()
        )
    return row


def create_job(
    sessions: Any,
    sources: Sequence[str],
    expansion: Expansion,
    model_version: str,
    threshold: float,
    mode: str,
) -> tuple[int, bool]:
    """Record the job (status 'creating'), its items and skipped files in chunks, then mark it 'running'; returns
    (job id, created). Another process that recorded the same sources and model first, even a moment ago, wins:
    its unfinished job is returned instead, so simultaneous submits of one folder make one job.

    A job still 'creating' was interrupted; `complete_creation` finishes it without losing or doubling items.
    """
    key = sources_key(sources, model_version)
    unfinished = select(Job.id).where(Job.sources_key == key, Job.finished_at.is_(None))
    with sessions.begin() as session:
        if session.get_bind().dialect.name == "postgresql":  # SQLite's INSERT below takes the write lock first
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": int(key[:15], 16)})
        values = {
            "sources": literal(list(sources), JSON), "sources_key": literal(key), "mode": literal(mode),
            "model_version": literal(model_version), "threshold": literal(threshold), "status": literal("creating"),
            "items_total": literal(len(expansion.items)), "items_skipped": literal(len(expansion.skipped)),
            "items_done": literal(0), "items_error": literal(0), "items_flagged": literal(0),
            "created_at": literal(utcnow(), DateTime(timezone=True)),
        }  # fmt: skip
        row = select(*values.values()).where(~exists(unfinished))
        statement = insert(Job).from_select(list(values), row, include_defaults=False).returning(Job.id)
        inserted = session.execute(statement).scalar()
        job_id = int(inserted or session.scalar(unfinished.order_by(Job.id.desc())) or 0)
    created = inserted is not None
    if created:
        complete_creation(sessions, job_id, expansion)
    return job_id, created


def complete_creation(sessions: Any, job_id: int, expansion: Expansion) -> None:
    """Insert the items not yet recorded (idempotent on job + uri), the skipped files, then mark the job ready."""
    for part in chunks(expansion.items, INSERT_CHUNK):
        with sessions.begin() as session:
            insert_ignoring_conflicts(session, Item, [_item_row(job_id, spec) for spec in part], ["job_id", "uri_key"])
    with sessions.begin() as session:
        session.execute(delete(Skipped).where(Skipped.job_id == job_id))
    for skipped in chunks(expansion.skipped, INSERT_CHUNK):
        with sessions.begin() as session:
            session.execute(insert(Skipped), [{"job_id": job_id, "path": s.path, "reason": s.reason} for s in skipped])
    with sessions.begin() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "creating")
            .values(status="running", items_total=len(expansion.items), items_skipped=len(expansion.skipped))
        )


def job_is_ready(sessions: Any, job_id: int) -> bool:
    """False while the job's items are still being recorded (or their recording was interrupted)."""
    with sessions() as session:
        return session.scalar(select(Job.status).where(Job.id == job_id)) != "creating"


def queued_item_ids(session: Session, job_id: int) -> list[int]:
    """Ids of the job's items that still wait for a verdict, in submit order."""
    return list(
        session.scalars(select(Item.id).where(Item.job_id == job_id, Item.status == "queued").order_by(Item.id))
    )
