"""Dispatch: run a job's batches in this process (embedded default) or enqueue them for Celery workers."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from sqlalchemy import update

from scanner.db import Batch
from scanner.jobs import chunks, queued_item_ids
from scanner.leases import Send, create_batches
from scanner.scan import PreparedBatch, ScanContext, complete_batch, prepare_batch
from scanner.settings import Settings
from scanner.sink import finish_job_if_complete

Advance = Callable[[int], None]


def run_embedded(settings: Settings, sessions: Any, job_id: int, advance: Advance | None = None) -> None:
    """Scan every queued item of the job here, decoding batch N+1 while batch N is scored."""
    ctx = ScanContext.create(settings, sessions)
    try:
        with ctx.sessions() as session:
            batches = list(chunks(queued_item_ids(session, job_id), settings.batch_size))
        with ThreadPoolExecutor(1, thread_name_prefix="prepare") as ahead:
            pending: Future[PreparedBatch] | None = None
            for index, batch in enumerate(batches):
                current = pending.result() if pending else prepare_batch(ctx, job_id, batch)
                pending = (
                    ahead.submit(prepare_batch, ctx, job_id, batches[index + 1]) if index + 1 < len(batches) else None
                )
                complete_batch(ctx, current)
                if advance:
                    advance(len(batch))
        with ctx.sessions.begin() as session:
            finish_job_if_complete(session, job_id)
    finally:
        ctx.close()


def enqueue_distributed(settings: Settings, sessions: Any, job_id: int) -> int:
    """Record one leased batch per chunk of queued item ids and send one Celery task per batch; returns how many.

    Batches of an earlier run of this job are superseded (never reaped again); their items are in the new ones.
    """
    with sessions.begin() as session:
        session.execute(
            update(Batch)
            .where(Batch.job_id == job_id, Batch.status.in_(("queued", "running")))
            .values(status="superseded", lease_until=None)
        )
        batch_ids = create_batches(session, job_id, list(chunks(queued_item_ids(session, job_id), settings.batch_size)))
    send, _ = celery_messaging(settings)
    for batch_id in batch_ids:
        send(job_id, batch_id)
    return len(batch_ids)


def celery_messaging(settings: Settings) -> tuple[Send, Callable[[], bool]]:
    """(send one batch message, is the workers' queue empty?) over one Celery app for these settings."""
    from worker.celery_app import batch_sender, create_app, queue_empty_check

    app = create_app(settings)
    return batch_sender(app, settings.queue), queue_empty_check(app, settings.queue)
