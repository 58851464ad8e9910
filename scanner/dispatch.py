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
    send = celery_sender(settings)
    for batch_id in batch_ids:
        send(job_id, batch_id)
    return len(batch_ids)


def celery_queue_empty(settings: Settings) -> Callable[[], bool]:
    """A function that says whether the workers' queue holds no waiting message (Redis: its list is empty)."""
    from worker.celery_app import create_app

    app = create_app(settings)

    def empty() -> bool:
        from kombu.exceptions import ChannelError

        with app.connection_for_write() as connection:
            try:
                declared = connection.default_channel.queue_declare(queue=settings.queue, passive=True)
            except ChannelError:  # Redis drops an empty list's key: "no queue" means empty
                return True
            return int(declared.message_count) == 0

    return empty


def celery_sender(settings: Settings) -> Send:
    """A function that sends one batch message to the workers' queue (JSON: two integers)."""
    from worker.celery_app import create_app

    app = create_app(settings)

    def send(job_id: int, batch_id: int) -> None:
        with app.producer_or_acquire() as producer:
            app.send_task("fauxscan.scan_batch", args=[job_id, batch_id], queue=settings.queue, producer=producer)

    return send
