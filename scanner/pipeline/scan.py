"""The scan stage as plain functions: prepare a batch (read, hash, decode), score it, record it.

Both the embedded runner and the Celery task call `scan_batch`; the embedded runner also calls
`read_batch`, `decode_batch` and `complete_batch` separately, to read one batch while scoring another.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from sqlalchemy import select

from scanner.db import Batch, Item, Job, make_engine, session_factory
from scanner.detector.views import ImageViews
from scanner.pipeline.leases import Claim, Send, claim_batch, finish_batch, lease_holder, lease_kept, split_batch
from scanner.pipeline.loader import LoadedItem, decode_item, probe_header, read_item
from scanner.pipeline.model import ModelRunner
from scanner.pipeline.sink import existing_verdicts, fail_queued_items, finish_job_if_complete, record_batch
from scanner.settings import Settings

LOG = logging.getLogger(__name__)
# Reads wait on disks and servers, not the CPU: 16 at once keep a batch of 64 slow URLs (each bounded by its
# deadline) well inside the task time limit.
READ_THREADS = 16


def decode_thread_setup() -> None:
    """Run in each decode thread: its torch work stays on this thread. A thread that runs a large tensor operation
    keeps a team of OpenMP threads of its own, and while they live the model's forward pass ran 30% slower."""
    torch.set_num_threads(1)  # OpenMP's thread count is per calling thread: the model's threads keep theirs


def worker_name() -> str:
    """host:pid of this process, stored on every item it scans."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class ScanContext:
    """Per-process resources: settings, sessions, the lazily loaded model, a decode pool and a read pool."""

    settings: Settings
    sessions: Any
    runner: ModelRunner
    pool: ThreadPoolExecutor
    reader: ThreadPoolExecutor
    worker: str = field(default_factory=worker_name)

    @classmethod
    def create(cls, settings: Settings, sessions: Any = None) -> ScanContext:
        """Build a context; the model is not loaded until the first batch."""
        threads = settings.decodes_at_once
        return cls(
            settings=settings,
            sessions=sessions or session_factory(make_engine(settings.database_url)),
            runner=ModelRunner(settings),
            pool=ThreadPoolExecutor(threads, thread_name_prefix="decode", initializer=decode_thread_setup),
            reader=ThreadPoolExecutor(READ_THREADS, thread_name_prefix="read"),
        )

    def close(self) -> None:
        """Stop the decode threads."""
        self.pool.shutdown(wait=True)
        self.reader.shutdown(wait=True)


@dataclass
class ReadBatch:
    """A batch after reading and hashing: each item's bytes (None on error) and the hashes with a verdict."""

    job_id: int
    read: list[tuple[LoadedItem, bytes | None]]
    known: set[str]


@dataclass
class PreparedBatch:
    """A batch after the load/decode stage, ready for the model."""

    job_id: int
    items: list[LoadedItem]
    to_score: dict[str, ImageViews]


def _guarded(item_id: int, work: Callable[[], LoadedItem]) -> LoadedItem:
    try:
        return work()
    except Exception as exc:  # noqa: BLE001 - one bad item must never take the batch down
        return LoadedItem(item_id).fail("internal_error", f"{type(exc).__name__}: {exc}")


def _read_all(ctx: ScanContext, rows: list[Any]) -> list[tuple[LoadedItem, bytes | None]]:
    def read(row: Any) -> tuple[LoadedItem, bytes | None]:
        try:
            return read_item(row.id, row.uri, row.kind, ctx.settings)
        except Exception as exc:  # noqa: BLE001
            return LoadedItem(row.id).fail("internal_error", f"{type(exc).__name__}: {exc}"), None

    return list(ctx.reader.map(read, rows))


def _queued_rows(ctx: ScanContext, job_id: int, item_ids: list[int]) -> list[Any]:
    """The batch's still-queued items; ids that belong to another job are ignored (and logged)."""
    with ctx.sessions() as session:
        rows = session.execute(
            select(Item.id, Item.uri, Item.kind, Item.job_id, Item.status).where(Item.id.in_(item_ids))
        ).all()
    foreign = sorted(row.id for row in rows if row.job_id != job_id)
    if foreign:
        LOG.warning("job %s: ignoring %d item ids of other jobs: %s", job_id, len(foreign), foreign[:20])
    return [row for row in rows if row.job_id == job_id and row.status == "queued"]


def _decode_new_content(ctx: ScanContext, read: list[tuple[LoadedItem, bytes | None]], known: set[str]) -> None:
    """Decode the first item of each content without a verdict; only read headers for the rest."""
    preprocess, limit, finder = ctx.runner.loaded.preprocess, ctx.settings.max_pixels, ctx.runner.finder
    first_of: dict[str, LoadedItem] = {}
    work: list[tuple[LoadedItem, Callable[[], LoadedItem]]] = []
    for loaded, data in read:
        if data is None or loaded.sha256 is None:
            continue
        if loaded.sha256 in known or loaded.sha256 in first_of:
            work.append((loaded, partial(probe_header, loaded, data)))
        else:
            first_of[loaded.sha256] = loaded
            work.append((loaded, partial(decode_item, loaded, data, preprocess, limit, finder)))
    list(ctx.pool.map(lambda job: _guarded(job[0].item_id, job[1]), work))
    for loaded, _ in read:  # a copy of content that failed to decode fails the same way
        first = first_of.get(loaded.sha256 or "")
        if first is not None and first.error_code and loaded.error_code is None:
            loaded.fail(first.error_code, first.error_message or "")


def read_batch(ctx: ScanContext, job_id: int, item_ids: list[int]) -> ReadBatch:
    """Read and hash the batch's still-queued items, and look up which contents already have a verdict."""
    read = _read_all(ctx, _queued_rows(ctx, job_id, item_ids))
    with ctx.sessions() as session:
        hashes = [loaded.sha256 for loaded, _ in read if loaded.sha256]
        known = set(existing_verdicts(session, hashes, ctx.runner.loaded.version))
    return ReadBatch(job_id, read, known)


def decode_batch(ctx: ScanContext, batch: ReadBatch) -> PreparedBatch:
    """Decode the read batch's new contents into model views; reuse verdicts that already exist."""
    _decode_new_content(ctx, batch.read, batch.known)
    items = [loaded for loaded, _ in batch.read]
    to_score = {i.sha256: i.views for i in items if i.sha256 is not None and i.views is not None}
    return PreparedBatch(batch.job_id, items, to_score)


def prepare_batch(ctx: ScanContext, job_id: int, item_ids: list[int]) -> PreparedBatch:
    """Read, hash and decode the batch's still-queued items; reuse verdicts that already exist."""
    return decode_batch(ctx, read_batch(ctx, job_id, item_ids))


def complete_batch(ctx: ScanContext, batch: PreparedBatch) -> None:
    """Score the decoded images in one model batch and record everything in one transaction."""
    hashes = list(batch.to_score)
    scores = ctx.runner.score([batch.to_score[h] for h in hashes]) if hashes else []
    loaded = ctx.runner.loaded
    with ctx.sessions.begin() as session:
        record_batch(session, batch.items, dict(zip(hashes, scores)), loaded.version, loaded.threshold, ctx.worker)
    with ctx.sessions.begin() as session:
        finish_job_if_complete(session, batch.job_id)


def scan_batch(ctx: ScanContext, job_id: int, item_ids: list[int]) -> None:
    """Scan one batch of items of a job end to end; safe to run twice on the same ids."""
    complete_batch(ctx, prepare_batch(ctx, job_id, item_ids))


def give_up_on_batch(
    ctx: ScanContext, job_id: int, item_ids: list[int], message: str, code: str = "internal_error"
) -> None:
    """Record the batch's unscanned items as errors with `code` so the job can still finish."""
    _give_up(ctx.sessions, job_id, item_ids, message, code, ctx.worker)


def _give_up(sessions: Any, job_id: int, item_ids: list[int], message: str, code: str, worker: str) -> None:
    with sessions.begin() as session:
        fail_queued_items(session, item_ids, code, message, worker)
    with sessions.begin() as session:
        finish_job_if_complete(session, job_id)


def fail_leased_batch(sessions: Any, job_id: int, batch_id: int, message: str, code: str, worker: str) -> None:
    """A leased batch that cannot be scanned (time limit, retries exhausted): its unscanned items become
    `code` errors, the job finishes if they were the last, and the batch is retired."""
    with sessions() as session:
        item_ids = session.scalar(select(Batch.item_ids).where(Batch.id == batch_id)) or []
    _give_up(sessions, job_id, list(item_ids), message, code, worker)
    finish_batch(sessions, batch_id, "failed")


def scan_leased_batch(ctx: ScanContext, job_id: int, batch_id: int, send: Send, delivery: str = "") -> None:
    """The distributed unit of work: claim the batch's lease, scan it while renewing the lease, mark it done.

    A batch already done, or held by another live worker, is left alone; a retry of the same `delivery` takes
    its own lease back; one that has lost its worker `max_deliveries` times is split (or, down to one item,
    recorded as `worker_lost`).
    """
    holder = lease_holder(ctx.worker, delivery)
    claim = claim_batch(ctx.sessions, job_id, batch_id, holder, ctx.settings.lease_seconds)
    if claim is None:
        LOG.info("job %s: batch %s is done or held by a live worker; nothing to do", job_id, batch_id)
        return
    if claim.lost_count >= ctx.settings.max_deliveries:
        _isolate(ctx, claim, send)
        return
    mismatch = _model_mismatch(ctx, job_id)
    if mismatch:
        give_up_on_batch(ctx, job_id, claim.item_ids, mismatch, "model_mismatch")
    else:
        with lease_kept(ctx.sessions, batch_id, holder, ctx.settings.lease_seconds):
            scan_batch(ctx, job_id, claim.item_ids)
    finish_batch(ctx.sessions, batch_id)


def _model_mismatch(ctx: ScanContext, job_id: int) -> str | None:
    with ctx.sessions() as session:
        wanted = session.scalar(select(Job.model_version).where(Job.id == job_id))
    held = ctx.runner.loaded.version
    if wanted is None or wanted == held:
        return None
    LOG.error("job %s wants model %s; this worker holds %s: refusing its batch", job_id, wanted, held)
    return f"the job was submitted with model {wanted}, this worker ({ctx.worker}) holds {held}"


def _isolate(ctx: ScanContext, claim: Claim, send: Send) -> None:
    """Split a batch that keeps killing workers; a single such item becomes a worker_lost error row."""
    if len(claim.item_ids) > 1:
        halves = split_batch(ctx.sessions, claim)
        LOG.warning("job %s: batch %s lost its worker %d times; split into %s", claim.job_id, claim.batch_id,
                    claim.lost_count, halves)  # fmt: skip
        for batch_id in halves:
            send(claim.job_id, batch_id)
        return
    message = f"scanning this item killed the worker process {claim.lost_count} times"
    give_up_on_batch(ctx, claim.job_id, claim.item_ids, message, "worker_lost")
    finish_batch(ctx.sessions, claim.batch_id)
