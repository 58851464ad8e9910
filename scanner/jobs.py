"""Job records: a submitted job, one item per input and the skipped files, in batched transactions."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from scanner.db import Item, Job, Skipped, utcnow
from scanner.sources import Expansion

INSERT_CHUNK = 1000


def sources_key(sources: Sequence[str], model_version: str) -> str:
    """Identifies 'the same submission again' so an interrupted job can be resumed."""
    return hashlib.sha256(json.dumps([list(sources), model_version]).encode()).hexdigest()


def chunks(values: Sequence[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive slices of at most `size`."""
    for start in range(0, len(values), max(1, size)):
        yield list(values[start : start + size])


def find_resumable_job(sessions: Any, key: str) -> int | None:
    """The newest unfinished job with the same sources and model, if any."""
    with sessions() as session:
        return session.scalar(
            select(Job.id).where(Job.sources_key == key, Job.finished_at.is_(None)).order_by(Job.id.desc())
        )


def _item_row(job_id: int, spec: Any) -> dict[str, Any]:
    row = {"job_id": job_id, "uri": spec.uri, "kind": spec.kind, "status": "queued",
           "error_code": None, "error_message": None}  # fmt: skip
    if spec.error:
        row.update(status="error", error_code=spec.error, error_message=spec.message, scanned_at=utcnow())
    return row


def create_job(
    sessions: Any,
    sources: Sequence[str],
    expansion: Expansion,
    model_version: str,
    threshold: float,
    mode: str,
) -> int:
    """Record the job, its items and skipped files; items go in chunks of INSERT_CHUNK rows."""
    with sessions.begin() as session:
        job = Job(
            sources=list(sources), sources_key=sources_key(sources, model_version), mode=mode,
            model_version=model_version, threshold=threshold,
            items_total=len(expansion.items), items_skipped=len(expansion.skipped),
        )  # fmt: skip
        session.add(job)
        session.flush()
        job_id = job.id
    for part in chunks(expansion.items, INSERT_CHUNK):
        with sessions.begin() as session:
            session.execute(insert(Item), [_item_row(job_id, spec) for spec in part])
    for skipped in chunks(expansion.skipped, INSERT_CHUNK):
        with sessions.begin() as session:
            session.execute(insert(Skipped), [{"job_id": job_id, "path": s.path, "reason": s.reason} for s in skipped])
    return job_id


def queued_item_ids(session: Session, job_id: int) -> list[int]:
    """Ids of the job's items that still wait for a verdict, in submit order."""
    return list(
        session.scalars(select(Item.id).where(Item.job_id == job_id, Item.status == "queued").order_by(Item.id))
    )
