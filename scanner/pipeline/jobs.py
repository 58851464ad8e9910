"""Job records: a submitted job, one item per input and the skipped files, in batched transactions."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, DateTime, delete, exists, func, insert, literal, select, text, update
from sqlalchemy.orm import Session

from scanner.db import Item, Job, Skipped, uri_key, utcnow
from scanner.pipeline.sink import insert_ignoring_conflicts
from scanner.pipeline.sources import LIST_PREFIX, RAW_PREFIX, ItemSpec, SkippedFile, is_url, listed_sources, path_uri
from scanner.safe_text import mask_passwords

INSERT_CHUNK = 1000


def sources_key(sources: Iterable[str], model_version: str) -> str:
    """Identifies 'the same submission again' (canonical sources, list entries by their lines, same model) so an
    interrupted job resumes; the sha256 of the JSON `[sources, model_version]`, hashed as the sources stream by."""
    digest = hashlib.sha256(b"[[")
    for index, source in enumerate(listed_sources(sources)):
        digest.update((", " if index else "").encode() + json.dumps(source).encode("utf-8", "surrogateescape"))
    digest.update(f"], {json.dumps(model_version)}]".encode())
    return digest.hexdigest()


def spool_list(lines: Iterable[str], folder: Path) -> tuple[str, int]:
    """A --from-file list's lines, canonical, streamed into a file of their own under `folder` named by their
    sha256; returns the job source that stands for them (its lines are read again only to record the job) and how
    many there are. Nothing is kept when reading the list fails."""
    folder.mkdir(parents=True, exist_ok=True)
    digest, count = hashlib.sha256(), 0
    with tempfile.NamedTemporaryFile("wb", dir=folder, suffix=".partial", delete=False) as spool:
        try:
            for source in map(canonical_source, lines):
                line = source.encode("utf-8", "surrogateescape") + b"\n"
                digest.update(line)
                spool.write(line)
                count += 1
        except BaseException:
            os.unlink(spool.name)
            raise
    target = folder / f"{digest.hexdigest()}.txt"
    os.replace(spool.name, target)
    return LIST_PREFIX + str(target), count


def canonical_sources(arguments: Iterable[str]) -> list[str]:
    """Arguments as the job records them: URLs as given, paths absolute and normalised (so `images` typed in two
    different folders are two different jobs), list entries as they are."""
    return [canonical_source(argument) for argument in arguments]


def canonical_source(argument: str) -> str:
    """One argument as the job records it (see `canonical_sources`)."""
    keep = is_url(argument) or argument.startswith((RAW_PREFIX, LIST_PREFIX))
    return argument if keep else _canonical_path(argument)


def _canonical_path(argument: str) -> str:
    uri, kind = path_uri(Path(os.path.normpath(os.path.abspath(os.path.expanduser(argument)))))
    return RAW_PREFIX + uri if kind == "rawpath" else uri


def chunks(values: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive runs of at most `size` values, read as they come."""
    values = iter(values)
    while part := list(itertools.islice(values, max(1, size))):
        yield part


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
    found: Iterable[ItemSpec | SkippedFile],
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
            "items_total": literal(0), "items_skipped": literal(0),
            "items_done": literal(0), "items_error": literal(0), "items_flagged": literal(0),
            "created_at": literal(utcnow(), DateTime(timezone=True)),
        }  # fmt: skip
        row = select(*values.values()).where(~exists(unfinished))
        statement = insert(Job).from_select(list(values), row, include_defaults=False).returning(Job.id)
        inserted = session.execute(statement).scalar()
        job_id = int(inserted or session.scalar(unfinished.order_by(Job.id.desc())) or 0)
    created = inserted is not None
    if created:
        complete_creation(sessions, job_id, found)
    return job_id, created


def complete_creation(sessions: Any, job_id: int, found: Iterable[ItemSpec | SkippedFile]) -> None:
    """Insert the items not yet recorded (idempotent on job + uri: the first of a URI stays) and the skipped files,
    a chunk at a time as they are found, then mark the job ready with its counts."""
    with sessions.begin() as session:
        session.execute(delete(Skipped).where(Skipped.job_id == job_id))
    for part in chunks(found, INSERT_CHUNK):
        items: dict[str, ItemSpec] = {}
        for spec in part:
            if isinstance(spec, ItemSpec):
                items.setdefault(spec.uri, spec)  # the first of each URI
        skipped = [{"job_id": job_id, "path": s.path, "reason": s.reason} for s in part if isinstance(s, SkippedFile)]
        with sessions.begin() as session:
            rows = [_item_row(job_id, spec) for spec in items.values()]
            insert_ignoring_conflicts(session, Item, rows, ["job_id", "uri_key"])
            if skipped:
                session.execute(insert(Skipped), skipped)
    with sessions.begin() as session:
        items_of_job = select(Item.uri).where(Item.job_id == job_id)
        session.execute(delete(Skipped).where(Skipped.job_id == job_id, Skipped.path.in_(items_of_job)))
        total = session.scalar(select(func.count()).select_from(Item).where(Item.job_id == job_id))
        skipped_count = session.scalar(select(func.count()).select_from(Skipped).where(Skipped.job_id == job_id))
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "creating")
            .values(status="running", items_total=total, items_skipped=skipped_count)
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
