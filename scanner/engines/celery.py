"""The Celery engine: batches recorded in SQL and sent through Redis to `scanner worker` processes.

This module configures the Celery app (JSON only, late acks, no prefetch) and sends messages; the worker
package builds its app with `create_app` and holds the signals and the thin task. The broker only carries
`(job_id, batch_id)`: SQL leases decide who scans a batch (scanner/pipeline/leases.py).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

from celery import Celery
from kombu.exceptions import ChannelError, OperationalError
from redis.exceptions import RedisError
from sqlalchemy import exc as sql_errors
from sqlalchemy import select, update

from scanner.connect import SetupError, safe_url
from scanner.db import Batch, Job
from scanner.engines import ProgressFactory
from scanner.moderation.reports import job_counts
from scanner.pipeline.jobs import chunks, queued_item_ids
from scanner.pipeline.leases import Send, create_batches, last_seen_workers, reap_expired
from scanner.settings import Settings

TASK_NAME = "fauxscan.scan_batch"
BROKER_ERRORS = (OperationalError, RedisError, ConnectionError, TimeoutError, OSError)
DATABASE_ERRORS = (sql_errors.OperationalError, sql_errors.InterfaceError, sql_errors.DisconnectionError)


class CeleryEngine:
    """Hands batches to Celery workers; `run(wait=True)` follows the job and re-sends dead workers' batches."""

    mode = "distributed"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)  # one app (and connection pool) for the check, the messages and the follow
        self.send = batch_sender(self.app, settings.queue)
        self.queue_empty = queue_empty_check(self.app, settings.queue)

    def check(self) -> None:
        """Fail fast with a clear message when the broker cannot be reached."""
        try:
            with self.app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=5)
        except Exception as exc:  # noqa: BLE001 - kombu raises many transport-specific types
            url = safe_url(self.settings.broker_url or "")
            raise SetupError(f"cannot reach the broker at {url}: {exc}") from None

    def run(self, sessions: Any, job_id: int, queued: int, wait: bool, progress: ProgressFactory | None) -> None:
        """Send one message per batch; with `wait`, follow the job until it is finished."""
        try:
            enqueue_distributed(self.settings, sessions, job_id, self.send)
        except Exception as exc:  # noqa: BLE001 - kombu raises transport-specific errors
            if not wait or not isinstance(exc, BROKER_ERRORS):
                raise SetupError(
                    f"job {job_id} is recorded but could not be fully enqueued ({type(exc).__name__}); "
                    f"`scanner resume {job_id}` sends the rest"
                ) from None
            # every batch is recorded in SQL: those not sent are sent again once the broker is back (follow_job)
            print(f"job {job_id}: the broker stopped answering while its batches were sent ({type(exc).__name__}); "
                  "following the job, the rest are sent once it is back", file=sys.stderr, flush=True)  # fmt: skip
        if wait:
            follow_job(self.settings, sessions, job_id, queued, progress, self.send, self.queue_empty)


def create_app(settings: Settings) -> Celery:
    """A Celery app bound to the settings' broker; its task is defined in worker.tasks."""
    app = Celery("fauxscan", broker=settings.broker_url or "redis://127.0.0.1:6379/0", include=["worker.tasks"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_disable_prefetch=True,  # a message is taken only by a free process: a dead worker holds no spares
        task_default_queue=settings.queue,
        task_soft_time_limit=settings.task_time_limit,
        task_time_limit=settings.task_time_limit + 60,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout},
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=3,
        worker_max_memory_per_child=4_000_000,
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_annotations={TASK_NAME: {"max_retries": settings.task_retries}},
    )
    return app


def batch_sender(app: Celery, queue: str) -> Send:
    """A function that sends one batch message, (job_id, batch_id) as JSON, to `queue`."""

    def send(job_id: int, batch_id: int) -> None:
        with app.producer_or_acquire() as producer:
            app.send_task(TASK_NAME, args=[job_id, batch_id], queue=queue, producer=producer)

    return send


def queue_empty_check(app: Celery, queue: str) -> Callable[[], bool]:
    """A function that says whether `queue` holds no waiting message."""

    def empty() -> bool:
        with app.connection_for_write() as connection:
            try:
                declared = connection.default_channel.queue_declare(queue=queue, passive=True)
            except ChannelError:  # Redis drops an empty list's key: "no queue" means empty
                return True
            return int(declared.message_count) == 0

    return empty


def enqueue_distributed(settings: Settings, sessions: Any, job_id: int, send: Send) -> int:
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
    for batch_id in batch_ids:
        send(job_id, batch_id)
    return len(batch_ids)


def follow_job(
    settings: Settings,
    sessions: Any,
    job_id: int,
    queued: int,
    progress: ProgressFactory | None,
    send: Send,
    queue_empty: Callable[[], bool],
    poll: float = 0.5,
) -> None:
    """Poll SQL until the job is finished, re-sending batches of dead workers; give up after a stall.

    The broker or the database being away for a while is said once a minute and waited out (workers keep
    working meanwhile); only the stall timeout ends the wait.
    """
    advance = progress("scanning", queued) if progress and queued else None
    remaining, last_change, next_reap = queued, time.monotonic(), 0.0
    told_at: dict[str, float] = {}
    while True:
        now = time.monotonic()
        try:
            counts, finished = _job_state(sessions, job_id)
        except DATABASE_ERRORS as exc:
            _tell_database_away(told_at, job_id, exc, now)
            counts, finished = {"queued": remaining}, False
        if counts["queued"] < remaining:
            if advance:
                advance(remaining - counts["queued"])
            remaining, last_change = counts["queued"], now
        if finished:
            return
        if now >= next_reap:
            _reap(settings, sessions, job_id, send, queue_empty, told_at, now)
            next_reap = now + max(1.0, settings.lease_seconds / 2)
        if now - last_change > settings.stall_timeout:
            raise SetupError(stall_message(sessions, job_id, counts["queued"], settings.stall_timeout))
        time.sleep(poll)


def _job_state(sessions: Any, job_id: int) -> tuple[dict[str, int], bool]:
    """The job's counts and whether it is finished, in one read."""
    with sessions() as session:
        counts = job_counts(session, job_id)
        finished = session.scalar(select(Job.finished_at).where(Job.id == job_id)) is not None
    return counts, finished


def _reap(
    settings: Settings, sessions: Any, job_id: int, send: Send, queue_empty: Callable[[], bool],
    told_at: dict[str, float], now: float,
) -> None:  # fmt: skip
    """Re-send dead workers' batches; a broker or database away is said once a minute, not raised."""
    try:
        reap_expired(sessions, send, queue_empty=queue_empty, stale=2 * settings.lease_seconds)
    except DATABASE_ERRORS as exc:
        _tell_database_away(told_at, job_id, exc, now)
    except BROKER_ERRORS as exc:  # the broker is away: workers finish what they hold; keep following
        _tell_once_a_minute(told_at, "broker", now, f"job {job_id}: the broker does not answer "
                            f"({type(exc).__name__}); still following the job, lost batches are sent again "
                            "once it is back")  # fmt: skip


def _tell_database_away(told_at: dict[str, float], job_id: int, exc: Exception, now: float) -> None:
    """Say (once a minute) that the database does not answer and the job is still followed."""
    _tell_once_a_minute(told_at, "database", now, f"job {job_id}: the database does not answer "
                        f"({type(exc).__name__}); still following the job")  # fmt: skip


def _tell_once_a_minute(told_at: dict[str, float], what: str, now: float, line: str) -> None:
    """Print `line` to stderr unless the same kind of trouble was told less than a minute ago."""
    if now - told_at.get(what, -math.inf) >= 60:
        print(line, file=sys.stderr, flush=True)
        told_at[what] = now


def stall_message(sessions: Any, job_id: int, queued: int, waited: float) -> str:
    """Why `submit` stopped following: the job, what remains, and who worked on it last."""
    try:
        seen = last_seen_workers(sessions, job_id)
    except DATABASE_ERRORS:
        return (f"job {job_id} made no progress for {waited:.0f} s and the database does not answer; once it is "
                f"back, `scanner resume {job_id}` (nothing done is lost)")  # fmt: skip
    workers = ", ".join(f"{w['worker']} at {w['seen']}" for w in seen[:5]) or "none ever claimed a batch"
    return (
        f"job {job_id} made no progress for {waited:.0f} s: {queued} items still queued; workers last seen: "
        f"{workers}. Check that workers run on this queue, then `scanner resume {job_id}` "
        "(nothing done is lost)"
    )


def worker_argv(settings: Settings, concurrency: int, queues: str | None, pool: str | None, loglevel: str) -> list[str]:
    """Celery worker arguments: GPU workers run one solo process, CPU workers prefork."""
    gpu = settings.device.startswith("cuda")
    chosen_pool = pool or ("solo" if gpu else "prefork")
    processes = 1 if chosen_pool == "solo" else max(1, concurrency)
    return [
        "worker",
        f"--loglevel={loglevel}",
        f"--pool={chosen_pool}",
        f"--concurrency={processes}",
        f"--queues={queues or settings.queue}",
        "--without-gossip",
        "--without-mingle",
    ]


def exec_worker(argv: list[str]) -> NoReturn:
    """Become `celery -A worker ...` (same process id, signals go straight to Celery)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "celery", "-A", "worker", *argv])
