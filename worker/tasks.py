"""Thin Celery tasks: ids in, a plain scan function called, nothing returned (results are in SQL)."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init
from celery.utils.log import get_task_logger
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError

from scanner.db import make_engine, session_factory
from scanner.engines.celery import TASK_NAME, batch_sender, queue_empty_check
from scanner.pipeline.leases import reap_expired
from scanner.pipeline.scan import ScanContext, fail_leased_batch, scan_leased_batch, worker_name
from scanner.settings import Settings
from worker import app

logger = get_task_logger(__name__)
TRANSIENT = (OperationalError, InterfaceError, DisconnectionError, ConnectionError, TimeoutError)


class ScanTask(Task):  # type: ignore[misc]
    """Holds one ScanContext per worker process, created on the first task (after any fork)."""

    _ctx: ScanContext | None = None
    # Failures that could not be written yet (the database was down); the process's reaper thread retries them.
    pending_failures: list[tuple[int, int, str]] = []

    @property
    def ctx(self) -> ScanContext:
        """The process's scan context; the model loads lazily inside it."""
        if self._ctx is None:
            self._ctx = ScanContext.create(Settings.from_env())
        return self._ctx

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """Retries ran out: the batch's unscanned items become error rows so the job can finish."""
        job_id, batch_id = args[0], args[1]
        message = f"gave up after {self.max_retries} retries: {type(exc).__name__}: {str(exc)[:300]}"
        logger.error("job %s: batch %s %s", job_id, batch_id, message)
        try:
            fail_leased_batch(self.ctx.sessions, job_id, batch_id, message, "retries_exhausted", self.ctx.worker)
        except Exception:  # noqa: BLE001 - the database is still down: the reaper thread records it later
            logger.warning("job %s: batch %s failure will be recorded when the database is back", job_id, batch_id)
            self.pending_failures.append((job_id, batch_id, message))


# Messages the reaper and split batches send, and the check for messages a dead worker took.
send_batch = batch_sender(app, app.conf.task_default_queue)
queue_is_empty = queue_empty_check(app, app.conf.task_default_queue)


@worker_process_init.connect
def start_reaper(**_: Any) -> None:
    """Each worker process re-sends batches whose worker died (a daemon thread, so start-up stays fast)."""
    settings = Settings.from_env()
    threading.Thread(target=_reap_forever, args=(settings,), name="reaper", daemon=True).start()


def _reap_forever(settings: Settings) -> None:
    sessions = session_factory(make_engine(settings.database_url))
    while True:
        time.sleep(max(1.0, settings.lease_seconds / 2) * random.uniform(0.8, 1.2))
        try:
            pending = scan_batch_task.pending_failures
            while pending:
                job_id, batch_id, message = pending[0]
                fail_leased_batch(sessions, job_id, batch_id, message, "retries_exhausted", worker_name())
                pending.pop(0)
            sent = reap_expired(sessions, send_batch, queue_empty=queue_is_empty, stale=2 * settings.lease_seconds)
            if sent:
                logger.warning("re-sent %d batches whose worker stopped renewing its lease", sent)
        except Exception as exc:  # noqa: BLE001 - database or broker away: try again at the next round
            logger.warning("reaper round failed (%s); trying again", type(exc).__name__)


@app.task(
    base=ScanTask,
    bind=True,
    name=TASK_NAME,
    autoretry_for=TRANSIENT,
    retry_backoff=2,
    retry_backoff_max=120,
    retry_jitter=True,
    max_retries=8,
)
def scan_batch_task(self: ScanTask, job_id: int, batch_id: int) -> None:
    """Scan one leased batch of a job's items."""
    logger.info("job %s: batch %s", job_id, batch_id)
    try:
        scan_leased_batch(self.ctx, job_id, batch_id, send_batch, delivery=self.request.id or "")
    except SoftTimeLimitExceeded:
        limit = self.ctx.settings.task_time_limit
        logger.error("job %s: batch %s exceeded %s s; its unscanned items become errors", job_id, batch_id, limit)
        message = f"the batch exceeded the {limit} s time limit"
        fail_leased_batch(self.ctx.sessions, job_id, batch_id, message, "internal_error", self.ctx.worker)
