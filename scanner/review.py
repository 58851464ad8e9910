"""Reviewer decisions (rows, never overwriting verdicts) and exporting reviewed images as training folders."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from scanner.db import Decision, Item
from scanner.loader import read_item
from scanner.reports import get_job, latest_decision_subquery
from scanner.settings import Settings

DECISIONS = ("fake", "real", "unsure")
MAX_ID = 2**63 - 1  # BIGINT; SQLite and PostgreSQL refuse larger ids with an overflow, not a "not found"
MAX_REVIEWER = 128  # the column's length
MAX_NOTE = 10_000


class ReviewError(ValueError):
    """A decision that cannot be recorded (unknown item, bad value)."""


def add_decision(session: Session, item_id: int, decision: str, reviewer: str, note: str | None = None) -> Decision:
    """Record one decision on an item."""
    if decision not in DECISIONS:
        raise ReviewError(f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}")
    if not 1 <= item_id <= MAX_ID or session.get(Item, item_id) is None:
        raise ReviewError(f"no item with id {item_id}")
    if not reviewer.strip():
        raise ReviewError("a reviewer name is required")
    if len(reviewer.strip()) > MAX_REVIEWER:
        raise ReviewError(f"the reviewer name is longer than {MAX_REVIEWER} characters")
    if note is not None and len(note) > MAX_NOTE:
        raise ReviewError(f"the note is longer than {MAX_NOTE} characters")
    row = Decision(item_id=item_id, decision=decision, reviewer=reviewer.strip(), note=note)
    session.add(row)
    session.flush()
    return row


def import_decisions(session: Session, handle: TextIO, default_reviewer: str) -> int:
    """Record decisions from CSV with columns item_id, decision[, reviewer][, note]; all or nothing."""
    reader = csv.DictReader(handle)
    if not reader.fieldnames or not {"item_id", "decision"} <= set(reader.fieldnames):
        raise ReviewError("the CSV needs a header with at least item_id and decision")
    count = 0
    for line, row in enumerate(reader, start=2):
        try:
            item_id = int(row["item_id"])
        except (TypeError, ValueError):
            raise ReviewError(f"line {line}: item_id {row['item_id']!r} is not a number") from None
        try:
            add_decision(
                session, item_id, (row["decision"] or "").strip().lower(),
                row.get("reviewer") or default_reviewer, row.get("note") or None,
            )  # fmt: skip
        except ReviewError as exc:
            raise ReviewError(f"line {line}: {exc}") from None
        count += 1
    return count


def item_decisions(session: Session, item_id: int) -> list[dict[str, Any]]:
    """All decisions on an item, oldest first."""
    rows = session.scalars(select(Decision).where(Decision.item_id == item_id).order_by(Decision.id))
    return [
        {"decision": d.decision, "reviewer": d.reviewer, "note": d.note, "created_at": d.created_at.isoformat()}
        for d in rows
    ]


@dataclass
class ExportResult:
    """Counts of an export-labels run."""

    written: dict[str, int]
    unreadable: list[str]


SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def export_labels(session: Session, settings: Settings, job_id: int, out_dir: Path) -> ExportResult:
    """Write each item whose latest decision is real or fake into out_dir/real or out_dir/fake."""
    get_job(session, job_id)
    latest = latest_decision_subquery()
    rows = session.execute(
        select(Item.id, Item.uri, Item.kind, latest.c.decision)
        .join(latest, latest.c.item_id == Item.id)
        .where(Item.job_id == job_id, latest.c.decision.in_(("real", "fake")))
        .order_by(Item.id)
    ).all()
    written = {"real": 0, "fake": 0}
    unreadable: list[str] = []
    for item_id, uri, kind, decision in rows:
        loaded, data = read_item(item_id, uri, kind, settings)
        if data is None:
            unreadable.append(f"{uri}: {loaded.error_code}")
            continue
        folder = out_dir / decision
        folder.mkdir(parents=True, exist_ok=True)
        name = SAFE_NAME.sub("_", Path(uri.split("?")[0]).name)[-80:] or "image"
        (folder / f"{item_id}_{name}").write_bytes(data)
        written[decision] += 1
    return ExportResult(written, unreadable)
