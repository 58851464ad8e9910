"""Reviewer decisions (rows, never overwriting verdicts) and exporting reviewed images as training folders."""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from scanner.db import Decision, Item, row_by_id
from scanner.detector.preprocess import FORMAT_SUFFIX, IMAGE_SUFFIXES
from scanner.moderation.reports import get_job, latest_decision_subquery
from scanner.pipeline.loader import read_item
from scanner.settings import Settings

DECISIONS = ("fake", "real", "unsure")
MAX_REVIEWER = 128  # the column's length
MAX_NOTE = 10_000


class ReviewError(ValueError):
    """A decision that cannot be recorded (unknown item, bad value)."""


def add_decision(session: Session, item_id: int, decision: str, reviewer: str, note: str | None = None) -> Decision:
    """Record one decision on an item."""
    check_decision(session, item_id, decision, reviewer, note)
    row = Decision(item_id=item_id, decision=decision, reviewer=reviewer.strip(), note=note)
    session.add(row)
    session.flush()
    return row


def check_decision(session: Session, item_id: int, decision: str, reviewer: str, note: str | None) -> None:
    """Raise ReviewError unless the decision could be recorded as given."""
    if decision not in DECISIONS:
        raise ReviewError(f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}")
    if row_by_id(session, Item, item_id) is None:
        raise ReviewError(f"no item with id {item_id}")
    if not reviewer.strip():
        raise ReviewError("a reviewer name is required")
    if len(reviewer.strip()) > MAX_REVIEWER:
        raise ReviewError(f"the reviewer name is longer than {MAX_REVIEWER} characters")
    if note is not None and len(note) > MAX_NOTE:
        raise ReviewError(f"the note is longer than {MAX_NOTE} characters")


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


@dataclass
class ExportResult:
    """Counts of an export-labels run, and what was not exported with why."""

    written: dict[str, int]
    unreadable: list[str]
    changed: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)


SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def export_labels(
    session: Session, settings: Settings, job_id: int, out_dir: Path, overwrite: bool = False
) -> ExportResult:
    """Write the reviewed bytes of each item whose latest decision is real or fake into out_dir/real|fake.

    Only content whose sha256 is the one scanned and reviewed is written (a source changed since is listed,
    not exported); files are created without following links and without replacing existing ones unless
    `overwrite`, through a temporary file renamed into place.
    """
    get_job(session, job_id)
    latest = latest_decision_subquery()
    rows = session.execute(
        select(Item.id, Item.uri, Item.kind, Item.sha256, Item.format, latest.c.decision)
        .join(latest, latest.c.item_id == Item.id)
        .where(Item.job_id == job_id, latest.c.decision.in_(("real", "fake")))
        .order_by(Item.id)
    ).all()
    result = ExportResult({"real": 0, "fake": 0}, [])
    for item_id, uri, kind, sha256, fmt, decision in rows:
        loaded, data = read_item(item_id, uri, kind, settings)
        if data is None:
            result.unreadable.append(f"{uri}: {loaded.error_code}")
        elif sha256 is None or loaded.sha256 != sha256:
            result.changed.append(f"{uri}: content changed since it was scanned and reviewed")
        else:
            folder = out_dir / decision
            folder.mkdir(parents=True, exist_ok=True)
            name = SAFE_NAME.sub("_", Path(uri.split("?")[0]).name)[-80:] or "image"
            if Path(name).suffix.lower() not in IMAGE_SUFFIXES:  # so `scanner train` reads it back
                name += FORMAT_SUFFIX.get(fmt or "", ".img")
            if write_new_file(folder / f"{item_id}_{name}", data, overwrite):
                result.written[decision] += 1
            else:
                result.existing.append(str(folder / f"{item_id}_{name}"))
    return result


def write_new_file(target: Path, data: bytes, overwrite: bool) -> bool:
    """Write atomically (temp + rename) without following a link at `target`; False if it exists and
    `overwrite` is off."""
    if target.is_symlink() or (target.exists() and not target.is_file()):
        return False  # never write through, or over, a link or a special file
    if target.exists() and not overwrite:
        return False
    temp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        if overwrite:
            os.replace(temp, target)
        else:
            os.link(temp, target)  # fails if a file (or link) appeared at target meanwhile: never overwrite
    finally:
        temp.unlink(missing_ok=True)
    return True
