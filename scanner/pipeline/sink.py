"""Sink stage: write verdicts and item statuses in one transaction, idempotently; finish jobs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, exists, select, update
from sqlalchemy.orm import Session

from scanner.db import Face, Item, Job, Verdict, dialect_insert, utcnow
from scanner.moderation.reports import job_counts
from scanner.safe_text import mask_passwords

if TYPE_CHECKING:
    from scanner.detector.views import ViewScores
    from scanner.pipeline.loader import LoadedItem


def insert_ignoring_conflicts(session: Session, model: Any, rows: list[dict[str, Any]], keys: list[str]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING on PostgreSQL and SQLite, the rows passed as parameters (one cached
    statement; `.values(rows)` compiled a new statement for every batch, 0.5 ms an image)."""
    if not rows:
        return
    session.execute(dialect_insert(session, model).on_conflict_do_nothing(index_elements=keys), rows)


def existing_verdicts(session: Session, hashes: Iterable[str], model_version: str) -> dict[str, Verdict]:
    """Verdicts already stored for these contents under this model version."""
    wanted = sorted(set(hashes))
    if not wanted:
        return {}
    rows = session.scalars(select(Verdict).where(Verdict.model_version == model_version, Verdict.sha256.in_(wanted)))
    return {verdict.sha256: verdict for verdict in rows}


def record_batch(
    session: Session,
    loaded_items: list[LoadedItem],
    new_scores: dict[str, ViewScores],
    model_version: str,
    threshold: float,
    worker: str,
) -> None:
    """Upsert new verdicts and their faces, then mark each still-queued item done or error (a redelivery
    writes nothing)."""
    insert_ignoring_conflicts(
        session,
        Verdict,
        [_verdict_values(sha, scored, model_version, threshold) for sha, scored in sorted(new_scores.items())],
        ["sha256", "model_version"],
    )
    verdicts = existing_verdicts(session, [i.sha256 for i in loaded_items if i.sha256], model_version)
    face_rows = [
        {"verdict_id": verdicts[sha].id, "rank": rank, "x": box.x, "y": box.y, "w": box.w, "h": box.h, "score": score}
        for sha, scored in sorted(new_scores.items())
        if sha in verdicts
        for rank, (box, score) in enumerate(zip(scored.boxes, scored.faces))
    ]
    insert_ignoring_conflicts(session, Face, face_rows, ["verdict_id", "rank"])
    now = utcnow()
    rows = [_item_values(loaded, verdicts.get(loaded.sha256 or ""), worker, now) for loaded in loaded_items]
    if rows:
        session.execute(ITEM_RESULT.execution_options(synchronize_session=False), rows)


def _verdict_values(sha: str, scored: ViewScores, model_version: str, threshold: float) -> dict[str, Any]:
    score = scored.score
    return {
        "sha256": sha, "model_version": model_version, "score": score,
        "label": "fake" if score >= threshold else "real", "threshold": threshold, "created_at": utcnow(),
        "whole_score": scored.whole, "patch_score": scored.patch, "face_count": len(scored.faces),
    }  # fmt: skip


ITEM_COLUMNS = ("status", "error_code", "error_message", "verdict_id", "score", "label", "sha256", "size_bytes",
                "format", "width", "height", "final_url", "http_status", "worker", "scanned_at")  # fmt: skip
ITEMS = Item.__table__
ITEM_RESULT = (
    update(ITEMS)  # type: ignore[arg-type]
    .where(ITEMS.c.id == bindparam("item_id"), ITEMS.c.status == "queued")
    .values({name: bindparam(f"new_{name}") for name in ITEM_COLUMNS})
)


def _item_values(loaded: LoadedItem, verdict: Verdict | None, worker: str, now: Any) -> dict[str, Any]:
    """Bind parameters of ITEM_RESULT for one item: done with its verdict, or an error."""
    done = loaded.error_code is None and verdict is not None
    values = {
        "status": "done" if done else "error",
        "error_code": None if done else loaded.error_code or "internal_error",
        "error_message": None if done else mask_passwords(loaded.error_message) or "no verdict was produced",
        "verdict_id": verdict.id if done and verdict is not None else None,
        "score": verdict.score if done and verdict is not None else None,
        "label": verdict.label if done and verdict is not None else None,
        "sha256": loaded.sha256, "size_bytes": loaded.size_bytes, "format": loaded.format,
        "width": loaded.width, "height": loaded.height, "final_url": mask_passwords(loaded.final_url),
        "http_status": loaded.http_status, "worker": worker, "scanned_at": now,
    }  # fmt: skip
    return {"item_id": loaded.item_id, **{f"new_{k}": v for k, v in values.items()}}


def finish_job_if_complete(session: Session, job_id: int) -> bool:
    """Atomically mark the job finished once no item is queued; True only for the caller that did it."""
    counts = job_counts(session, job_id)
    if counts["queued"]:
        return False
    no_queued = ~exists().where(and_(Item.job_id == job_id, Item.status == "queued"))
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.finished_at.is_(None), Job.status != "creating", no_queued)
        .values(
            finished_at=utcnow(),
            status="finished",
            items_total=counts["items"],
            items_done=counts["done"],
            items_error=counts["errors"],
            items_flagged=counts["flagged"],
        )  # fmt: skip
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def fail_queued_items(session: Session, item_ids: list[int], code: str, message: str, worker: str) -> None:
    """Mark the still-queued items of a batch as errors (e.g. the batch hit its time limit)."""
    session.execute(
        update(Item)
        .where(Item.id.in_(item_ids), Item.status == "queued")
        .values(
            status="error", error_code=code, error_message=mask_passwords(message), worker=worker, scanned_at=utcnow()
        )
    )
