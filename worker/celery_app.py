"""The Celery application: JSON only, late acks, one prefetched batch, results kept in SQL."""

from __future__ import annotations

from collections.abc import Callable

from celery import Celery
from kombu.exceptions import ChannelError

from scanner.settings import Settings


def create_app(settings: Settings) -> Celery:
    """A Celery app bound to the settings' broker; tasks live in worker.tasks."""
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
        task_annotations={"fauxscan.scan_batch": {"max_retries": settings.task_retries}},
    )
    return app


def batch_sender(app: Celery, queue: str) -> Callable[[int, int], None]:
    """A function that sends one batch message, (job_id, batch_id) as JSON, to `queue`."""

    def send(job_id: int, batch_id: int) -> None:
        with app.producer_or_acquire() as producer:
            app.send_task("fauxscan.scan_batch", args=[job_id, batch_id], queue=queue, producer=producer)

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
