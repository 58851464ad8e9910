"""Thin Celery tasks: ids in, a plain scan function called, nothing returned (results are in SQL)."""

from __future__ import annotations

import os
from typing import Any

import torch
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import celeryd_after_setup, worker_process_init
from celery.utils.log import get_task_logger
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError

from scanner.scan import ScanContext, give_up_on_batch, scan_batch
from scanner.settings import Settings
from worker import app

logger = get_task_logger(__name__)
TRANSIENT = (OperationalError, InterfaceError, DisconnectionError, ConnectionError, TimeoutError)


@celeryd_after_setup.connect
def remember_concurrency(sender: Any, instance: Any, **_: Any) -> None:
    """Record the pool size before forking so each child can take its share of the cores."""
    os.environ.setdefault("SCANNER_WORKER_CONCURRENCY", str(getattr(instance, "concurrency", 1) or 1))


@worker_process_init.connect
def limit_torch_threads(**_: Any) -> None:
    """Give each prefork child a share of the cores so children x threads ~ cores (fast, no model load)."""
    settings = Settings.from_env()
    concurrency = int(os.environ.get("SCANNER_WORKER_CONCURRENCY", "1"))
    threads = settings.torch_threads or max(1, (os.cpu_count() or 1) // max(1, concurrency))
    torch.set_num_threads(threads)


class ScanTask(Task):  # type: ignore[misc]
    """Holds one ScanContext per worker process, created on the first task (after any fork)."""

    _ctx: ScanContext | None = None

    @property
    def ctx(self) -> ScanContext:
        """The process's scan context; the model loads lazily inside it."""
        if self._ctx is None:
            self._ctx = ScanContext.create(Settings.from_env())
        return self._ctx


@app.task(
    base=ScanTask,
    bind=True,
    name="fauxscan.scan_batch",
    ignore_result=True,
    acks_late=True,
    autoretry_for=TRANSIENT,
    retry_backoff=2,
    retry_backoff_max=120,
    retry_jitter=True,
    max_retries=8,
)
def scan_batch_task(self: ScanTask, job_id: int, item_ids: list[int]) -> None:
    """Scan one batch of a job's items."""
    logger.info("job %s: scanning %d items", job_id, len(item_ids))
    try:
        scan_batch(self.ctx, job_id, item_ids)
    except SoftTimeLimitExceeded:
        limit = self.ctx.settings.task_time_limit
        logger.error("job %s: batch exceeded %s s; its unscanned items become errors", job_id, limit)
        give_up_on_batch(self.ctx, job_id, item_ids, f"the batch exceeded the {limit} s time limit")
