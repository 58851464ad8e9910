"""Dispatch: run a job's batches in this process (embedded default) or enqueue them for Celery workers."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from scanner.jobs import chunks, queued_item_ids
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
    """Send one Celery task per batch of queued item ids; returns the number of tasks sent."""
    from worker.celery_app import create_app

    app = create_app(settings)
    with sessions() as session:
        ids = queued_item_ids(session, job_id)
    batches = list(chunks(ids, settings.batch_size))
    with app.producer_or_acquire() as producer:
        for batch in batches:
            app.send_task("fauxscan.scan_batch", args=[job_id, batch], queue=settings.queue, producer=producer)
    return len(batches)
