"""The scan stage as plain functions: prepare a batch (read, hash, decode), score it, record it.

Both the embedded runner and the Celery task call `scan_batch`; the embedded runner also calls
`read_batch`, `decode_batch` and `complete_batch` separately, to read one batch while scoring another.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from sqlalchemy import select

from scanner.db import Batch, Item, Job, make_engine, session_factory
from scanner.detector.views import ImageViews
from scanner.pipeline.leases import (
    Claim,
    Send,
    claim_batch,
    finish_batch,
    lease_holder,
    lease_kept,
    mark_finished,
    split_batch,
)
from scanner.pipeline.loader import (
    READ_THREADS,
    ByteBudget,
    LoadedItem,
    ReadItem,
    decode_item,
    expected_size,
    probe_header,
    read_item,
)
from scanner.pipeline.model import ModelRunner
from scanner.pipeline.sink import existing_verdicts, fail_queued_items, finish_job_if_complete, record_batch
from scanner.settings import Settings

LOG = logging.getLogger(__name__)


def decode_thread_setup() -> None:
    """Run in each decode thread: its torch work stays on this thread. A thread that runs a large tensor operation
    keeps a team of OpenMP threads of its own, and while they live the model's forward pass ran 30% slower."""
    torch.set_num_threads(1)  # OpenMP's thread count is per calling thread: the model's threads keep theirs


def worker_name() -> str:
    """host:pid of this process, stored on every item it scans."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class ScanContext:
    """Per-process resources: settings, sessions, the lazily loaded model, a decode pool, a read pool and the
    budget of raw bytes held between reading and decoding."""

    settings: Settings
    sessions: Any
    runner: ModelRunner
    pool: ThreadPoolExecutor
    reader: ThreadPoolExecutor
    budget: ByteBudget
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
            budget=ByteBudget(settings.max_bytes_in_flight),
        )

    def close(self) -> None:
        """Stop the decode threads and give this process's cores back."""
        self.pool.shutdown(wait=True)
        self.reader.shutdown(wait=True)
        self.runner.close()


@dataclass
class ReadBatch:
    """A batch after reading and hashing: items still holding their bytes (`read`), items already decoded because
    the batch did not fit the byte budget at once (`done`), the hashes with a verdict, and the first item of each
    content decoded so far."""

    job_id: int
    read: list[ReadItem]
    known: set[str]
    done: list[LoadedItem] = field(default_factory=list)
    first_of: dict[str, LoadedItem] = field(default_factory=dict)


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


def _read_one(ctx: ScanContext, row: Any, reserved: int) -> ReadItem:
    """Read one item into its reservation, corrected to the bytes read; a failed read gives its reservation back."""
    try:
        loaded, data = read_item(row.id, row.uri, row.kind, ctx.settings)
    except Exception as exc:  # noqa: BLE001
        loaded, data = LoadedItem(row.id).fail("internal_error", f"{type(exc).__name__}: {exc}"), None
    size = len(data) if data is not None else 0
    ctx.budget.adjust(size - reserved)
    return ReadItem(loaded, data, size)


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


def _decode_new_content(ctx: ScanContext, batch: ReadBatch) -> None:
    """Decode the first item of each content without a verdict, only read headers for the rest, and give the bytes
    back to the budget as each finishes."""
    preprocess, limit, finder = ctx.runner.loaded.preprocess, ctx.settings.max_pixels, ctx.runner.finder
    # Each job reads the item's bytes when it runs, so once the item drops them nothing else keeps them alive.
    work: list[tuple[ReadItem, Callable[[LoadedItem, bytes], LoadedItem]]] = []
    for item in batch.read:
        sha256 = item.loaded.sha256
        if item.data is None or sha256 is None:
            item.drop(ctx.budget)
        elif sha256 in batch.known or sha256 in batch.first_of:
            work.append((item, probe_header))
        else:
            batch.first_of[sha256] = item.loaded
            work.append((item, partial(decode_item, preprocess=preprocess, max_pixels=limit, finder=finder)))

    def run(job: tuple[ReadItem, Callable[[LoadedItem, bytes], LoadedItem]]) -> None:
        item, step = job
        try:
            _guarded(item.loaded.item_id, lambda: step(item.loaded, item.data or b""))
        finally:
            item.drop(ctx.budget)

    list(ctx.pool.map(run, work))
    for item in batch.read:  # a copy of content that failed to decode fails the same way
        first = batch.first_of.get(item.loaded.sha256 or "")
        if first is not None and first.error_code and item.loaded.error_code is None:
            item.loaded.fail(first.error_code, first.error_message or "")
    batch.done.extend(item.loaded for item in batch.read)
    batch.read = []


def _look_up_verdicts(ctx: ScanContext, batch: ReadBatch) -> None:
    """Add the read items' contents that already have a verdict of this model to `batch.known`."""
    with ctx.sessions() as session:
        hashes = [item.loaded.sha256 for item in batch.read if item.loaded.sha256]
        batch.known.update(existing_verdicts(session, hashes, ctx.runner.loaded.version))


def read_batch(ctx: ScanContext, job_id: int, item_ids: list[int]) -> ReadBatch:
    """Read and hash the batch's still-queued items, and look up which contents already have a verdict. The raw
    bytes held stay within the process's byte budget: when the next item does not fit, the items read so far are
    decoded (and their bytes let go) first."""
    batch = ReadBatch(job_id, [], set())
    reads: list[Future[ReadItem]] = []
    for row in _queued_rows(ctx, job_id, item_ids):
        size = expected_size(row.uri, row.kind, ctx.settings)
        if not ctx.budget.try_reserve(size):
            if reads:  # this batch holds bytes: decode them to make room
                batch.read = [read.result() for read in reads]
                reads = []
                _look_up_verdicts(ctx, batch)
                _decode_new_content(ctx, batch)
            ctx.budget.reserve(size)  # waits for another batch's bytes, if any
        reads.append(ctx.reader.submit(_read_one, ctx, row, size))
    batch.read = [read.result() for read in reads]
    _look_up_verdicts(ctx, batch)
    return batch


def decode_batch(ctx: ScanContext, batch: ReadBatch) -> PreparedBatch:
    """Decode the read batch's new contents into model views; reuse verdicts that already exist."""
    _decode_new_content(ctx, batch)
    items = batch.done
    to_score = {i.sha256: i.views for i in items if i.sha256 is not None and i.views is not None}
    return PreparedBatch(batch.job_id, items, to_score)


def prepare_batch(ctx: ScanContext, job_id: int, item_ids: list[int]) -> PreparedBatch:
    """Read, hash and decode the batch's still-queued items; reuse verdicts that already exist."""
    return decode_batch(ctx, read_batch(ctx, job_id, item_ids))


def complete_batch(ctx: ScanContext, batch: PreparedBatch, leased: int | None = None) -> None:
    """Score the decoded images in one model batch and record everything in one transaction (with the leased
    batch they came in marked done)."""
    hashes = list(batch.to_score)
    scores = ctx.runner.score([batch.to_score[h] for h in hashes]) if hashes else []
    loaded = ctx.runner.loaded
    with ctx.sessions.begin() as session:
        record_batch(session, batch.items, dict(zip(hashes, scores)), loaded.version, loaded.threshold, ctx.worker)
        if leased is not None:
            mark_finished(session, leased)
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
