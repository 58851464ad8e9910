"""Reports: job status, job lists and per-item reports as table, CSV, JSON or JSON Lines."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from scanner.db import Decision, Face, Item, Job, Skipped, Verdict, row_by_id
from scanner.safe_text import mask_passwords, printable

REPORT_FIELDS = [
    "item_id", "uri", "kind", "status", "score", "label", "threshold", "model_version", "error_code",
    "error_message", "sha256", "size_bytes", "format", "width", "height", "final_url", "http_status",
    "decision", "reviewer", "whole_score", "patch_score", "face_count", "faces",
]  # fmt: skip


def job_counts(session: Session, job_id: int) -> dict[str, int]:
    """Live counts of a job's items by outcome, flagged included."""
    rows = session.execute(select(Item.status, func.count()).where(Item.job_id == job_id).group_by(Item.status)).all()
    by_status = {status: count for status, count in rows}
    flagged = session.scalar(select(func.count()).where(Item.job_id == job_id, Item.label == "fake"))
    return {
        "items": sum(by_status.values()),
        "queued": by_status.get("queued", 0),
        "done": by_status.get("done", 0),
        "errors": by_status.get("error", 0),
        "flagged": flagged or 0,
    }


class JobNotFound(LookupError):
    """No job with that id."""


def get_job(session: Session, job_id: int) -> Job:
    """The job row, or JobNotFound."""
    job = row_by_id(session, Job, job_id)
    if job is None:
        raise JobNotFound(f"no job with id {job_id}")
    return job


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def utc_iso(moment: datetime) -> str:
    """A stored time in ISO 8601 with its UTC offset (SQLite returns it without one; it was stored as UTC)."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat(timespec="seconds")


def errors_by_code(session: Session, job_id: int) -> dict[str, int]:
    """Count of error items per error code."""
    rows = session.execute(
        select(Item.error_code, func.count())
        .where(Item.job_id == job_id, Item.status == "error")
        .group_by(Item.error_code)
        .order_by(Item.error_code)
    ).all()
    return {str(code): count for code, count in rows}


def worker_throughput(session: Session, job_id: int) -> list[dict[str, Any]]:
    """Items scanned per worker process and its images/s over its active span."""
    rows = session.execute(
        select(Item.worker, func.count(), func.min(Item.scanned_at), func.max(Item.scanned_at))
        .where(Item.job_id == job_id, Item.worker.is_not(None))
        .group_by(Item.worker)
        .order_by(Item.worker)
    ).all()
    result = []
    for worker, count, first, last in rows:
        span = (last - first).total_seconds() if first and last else 0.0
        result.append({"worker": worker, "items": count, "images_per_second": count / span if span > 0 else None})
    return result


def job_overview(session: Session, job_id: int) -> dict[str, Any]:
    """A job's row, live counts and errors by code: what a page header needs, read from indexes only."""
    job = get_job(session, job_id)
    counts = job_counts(session, job_id)
    return {
        "job_id": job.id, "status": job.status, "mode": job.mode, **counts, "skipped": job.items_skipped,
        "finished": job.finished_at is not None, "created_at": _iso(job.created_at),
        "finished_at": _iso(job.finished_at), "model_version": job.model_version, "threshold": job.threshold,
        "errors_by_code": errors_by_code(session, job_id),
    }  # fmt: skip


def job_status(session: Session, job_id: int) -> dict[str, Any]:
    """Everything `scanner status` shows; the same fields as submit's JSON plus `finished`."""
    job = get_job(session, job_id)
    counts = job_counts(session, job_id)
    return {
        "job_id": job.id,
        "status": job.status,
        "mode": job.mode,
        "items": counts["items"],
        "queued": counts["queued"],
        "done": counts["done"],
        "errors": counts["errors"],
        "flagged": counts["flagged"],
        "skipped": job.items_skipped,
        "finished": job.finished_at is not None,
        "created_at": _iso(job.created_at),
        "finished_at": _iso(job.finished_at),
        "model_version": job.model_version,
        "threshold": job.threshold,
        "errors_by_code": errors_by_code(session, job_id),
        "skipped_files": [
            {"path": path, "reason": reason}
            for path, reason in session.execute(
                select(Skipped.path, Skipped.reason).where(Skipped.job_id == job_id).order_by(Skipped.id)
            )
        ],
        "workers": worker_throughput(session, job_id),
    }


def recent_jobs(session: Session, limit: int = 20) -> list[dict[str, Any]]:
    """The newest jobs with live counts."""
    jobs = session.scalars(select(Job).order_by(Job.id.desc()).limit(limit)).all()
    return [
        {"job_id": job.id, "created_at": _iso(job.created_at), "status": job.status, "mode": job.mode,
         "sources": job.sources, **job_counts(session, job.id)}
        for job in jobs
    ]  # fmt: skip


def latest_decision_subquery() -> Any:
    """Each item's most recent reviewer decision that still counts (not retracted)."""
    ranked = (
        select(
            Decision.item_id,
            Decision.id.label("decision_id"),
            Decision.decision,
            Decision.reviewer,
            func.row_number().over(partition_by=Decision.item_id, order_by=Decision.id.desc()).label("rank"),
        )
        .where(Decision.retracted_at.is_(None))
        .subquery()
    )
    latest = select(ranked.c.item_id, ranked.c.decision_id, ranked.c.decision, ranked.c.reviewer)
    return latest.where(ranked.c.rank == 1).subquery()


def report_query(job_id: int, flagged_only: bool = False) -> Select[Any]:  # type: ignore[type-arg]
    """Items of a job with verdict and latest decision; flagged first by score, then the rest."""
    latest = latest_decision_subquery()
    query: Any = (
        select(
            Item.id.label("item_id"),
            Item.uri,
            Item.kind,
            Item.status,
            Verdict.score,
            Verdict.label,
            Verdict.threshold,
            Verdict.model_version,
            Item.error_code,
            Item.error_message,
            Item.sha256,
            Item.size_bytes,
            Item.format,
            Item.width,
            Item.height,
            Item.final_url,
            Item.http_status,
            latest.c.decision,
            latest.c.reviewer,
            Verdict.whole_score,
            Verdict.patch_score,
            Verdict.face_count,
            Item.verdict_id,
        )  # fmt: skip
        .outerjoin(Verdict, Item.verdict_id == Verdict.id)
        .outerjoin(latest, latest.c.item_id == Item.id)
        .where(Item.job_id == job_id)
        .order_by((Verdict.label == "fake").desc(), Verdict.score.desc(), Item.id)
    )
    if flagged_only:
        query = query.where(Verdict.label == "fake")
    return query


def report_rows(session: Session, job_id: int, flagged_only: bool = False, redact: bool = True) -> list[dict[str, Any]]:
    """The report as dictionaries with REPORT_FIELDS keys; `faces` lists each face's box and score.

    URL passwords are masked unless `redact` is False (only for code that must fetch the source again).
    """
    return list(iter_report_rows(session, job_id, flagged_only, redact))


def iter_report_rows(
    session: Session, job_id: int, flagged_only: bool = False, redact: bool = True, chunk: int = 1000
) -> Iterator[dict[str, Any]]:
    """The report's rows one at a time, read from the database `chunk` at a time (a server-side cursor on
    PostgreSQL), so a report of a million items holds a chunk in memory, not the job; JobNotFound at once."""
    get_job(session, job_id)
    result = session.execute(report_query(job_id, flagged_only).execution_options(yield_per=chunk))
    for part in result.partitions():
        rows = [dict(row._mapping) for row in part]
        faces = faces_by_verdict(session, {row["verdict_id"] for row in rows if row["verdict_id"] is not None})
        for row in rows:
            row["faces"] = faces.get(row.pop("verdict_id"), [])
            yield redact_row(row) if redact else row


def redact_row(row: dict[str, Any]) -> dict[str, Any]:
    """Mask URL passwords in a report row's uri, final_url and error message (older rows may hold them), in place."""
    for key in ("uri", "final_url", "error_message"):
        if key in row:
            row[key] = mask_passwords(row[key])
    return row


def faces_by_verdict(session: Session, verdict_ids: set[int]) -> dict[int, list[dict[str, Any]]]:
    """Face boxes ([x, y, w, h] in image pixels) and scores of the given verdicts, largest face first."""
    result: dict[int, list[dict[str, Any]]] = {}
    wanted = sorted(verdict_ids)
    for start in range(0, len(wanted), 1000):
        query = (
            select(Face).where(Face.verdict_id.in_(wanted[start : start + 1000])).order_by(Face.verdict_id, Face.rank)
        )
        for face in session.scalars(query):
            result.setdefault(face.verdict_id, []).append(
                {"box": [face.x, face.y, face.w, face.h], "score": face.score}
            )
    return result


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def render_csv(rows: Iterable[dict[str, Any]], fields: list[str] = REPORT_FIELDS) -> Iterator[str]:
    """CSV with a header row and \\n line ends (stdout escapes \\r); formula-like cells are quoted with '."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _defuse(_csv_value(row.get(k))) for k in fields})
        if buffer.tell() > CHUNK_CHARS:
            yield _drained(buffer)
    yield _drained(buffer)


CHUNK_CHARS = 1 << 16  # text handed to the writer at a time


def _drained(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


def _csv_value(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list) else value


def _defuse(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def render_json(rows: Iterable[dict[str, Any]], status: dict[str, Any], key: str = "items") -> Iterator[str]:
    """One JSON object, the job status and its items (or decisions), written row by row (a streamed array)."""
    yield '{\n  "job": ' + json.dumps(status, indent=2, default=str).replace("\n", "\n  ") + f',\n  "{key}": ['
    separator = "\n    "
    for row in rows:
        yield separator + json.dumps(row, default=str)
        separator = ",\n    "
    yield "\n  ]\n}\n"


def render_jsonl(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """One JSON object per line, for streaming into other tools."""
    return (json.dumps(row, default=str) + "\n" for row in rows)


DECISION_FIELDS = [
    "decision_id", "item_id", "uri", "sha256", "score", "label", "model_version", "decision", "reviewer", "note",
    "decided_at", "latest", "retracted_at", "retracted_by",
]  # fmt: skip


def iter_decision_rows(session: Session, job_id: int, chunk: int = 1000) -> Iterator[dict[str, Any]]:
    """Every decision ever recorded on the job's items, oldest first (undone ones too, with when and by whom), with
    the model's verdict beside it and whether it is the one that counts; read `chunk` rows at a time; JobNotFound at
    once."""
    job = get_job(session, job_id)
    latest = latest_decision_subquery()
    query = (
        select(Decision.id.label("decision_id"), Item.id.label("item_id"), Item.uri, Item.sha256, Item.score,
               Item.label, Decision.decision, Decision.reviewer, Decision.note,
               Decision.created_at.label("decided_at"), (latest.c.decision_id == Decision.id).label("latest"),
               Decision.retracted_at, Decision.retracted_by)
        .join(Item, Item.id == Decision.item_id)
        .outerjoin(latest, latest.c.item_id == Item.id)
        .where(Item.job_id == job_id)
        .order_by(Decision.id)
    )  # fmt: skip
    for part in session.execute(query.execution_options(yield_per=chunk)).partitions():
        for row in part:
            values = dict(row._mapping)
            values.update(uri=mask_passwords(values["uri"]), decided_at=utc_iso(values["decided_at"]),
                          model_version=job.model_version, latest=bool(values["latest"]),
                          retracted_at=utc_iso(values["retracted_at"]) if values["retracted_at"] else None)  # fmt: skip
            yield values


def render_decisions_table(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """The decision history as a fixed-width table for the terminal."""
    yield f"{'id':>7}  {'item':>7}  {'decision':8}  {'reviewer':16}  {'decided at (UTC)':25}  note\n"
    for row in rows:
        mark = "" if row["latest"] else "  (superseded)"
        if row["retracted_at"]:
            mark = f"  (undone by {printable(row['retracted_by'] or '', keep_newlines=False)})"
        note = printable(row["note"] or "", keep_newlines=False)
        reviewer = printable(row["reviewer"], keep_newlines=False)[:16]
        yield (f"{row['decision_id']:>7}  {row['item_id']:>7}  {row['decision']:8}  {reviewer:16}  "
               f"{row['decided_at']:25}  {note}{mark}\n")  # fmt: skip


def render_table(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """A plain fixed-width table for the terminal, a line at a time."""
    yield f"{'id':>7}  {'status':6}  {'score':>6}  {'label':5}  {'error':18}  uri\n"
    for row in rows:
        yield (
            f"{row['item_id']:>7}  {row['status']:6}  {_cell(row['score']):>6}  {_cell(row['label']):5}  "
            f"{_cell(row['error_code']):18}  {printable(row['uri'], keep_newlines=False)}\n"
        )
