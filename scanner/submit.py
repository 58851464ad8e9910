"""Submit: expand sources, record (or resume) the job, dispatch it, and summarise the outcome."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from scanner.connect import SetupError, check_broker, describe_db_error, open_database, safe_url
from scanner.db import Job
from scanner.dispatch import celery_messaging, enqueue_distributed, run_embedded
from scanner.jobs import (
    canonical_sources,
    complete_creation,
    create_job,
    find_resumable_job,
    job_is_ready,
    sources_key,
)
from scanner.leases import last_seen_workers, reap_expired
from scanner.model import model_identity
from scanner.reports import job_counts, job_status
from scanner.settings import Settings
from scanner.sources import expand_sources
from training.checkpoint import CheckpointError

__all__ = ["SetupError", "describe_db_error", "open_database", "resume", "safe_url", "submit"]
ProgressFactory = Callable[[str, int], Callable[[int], None]]


@dataclass
class SubmitResult:
    """What `scanner submit` reports."""

    summary: dict[str, Any]
    resumed: bool


def submit(
    settings: Settings, arguments: Sequence[str], wait: bool, progress: ProgressFactory | None = None
) -> SubmitResult:
    """Record a job for the arguments (or resume the same unfinished one) and scan it, here or through the broker."""
    started = time.perf_counter()
    model_version, threshold = _model(settings)
    sessions = open_database(settings)
    if settings.broker_url:
        check_broker(settings)
    sources = canonical_sources(arguments)
    job_id = find_resumable_job(sessions, sources_key(sources, model_version))
    resumed = job_id is not None
    if job_id is None:
        mode = "distributed" if settings.broker_url else "embedded"
        job_id = create_job(sessions, sources, expand_sources(sources), model_version, threshold, mode)
    return SubmitResult(_run_job(settings, sessions, job_id, wait, progress, started), resumed)


def resume(settings: Settings, job_id: int, wait: bool, progress: ProgressFactory | None = None) -> SubmitResult:
    """Carry on with an unfinished job by id (its recording finished first if it was cut short)."""
    started = time.perf_counter()
    model_version, _ = _model(settings)
    sessions = open_database(settings)
    if settings.broker_url:
        check_broker(settings)
    with sessions() as session:
        job = session.get(Job, job_id)
    if job is None:
        raise SetupError(f"no job with id {job_id}")
    if job.model_version != model_version:
        raise SetupError(
            f"job {job_id} was submitted with model {job.model_version}; this process has {model_version}: "
            "choose that model with --model or SCANNER_MODEL"
        )
    return SubmitResult(_run_job(settings, sessions, job_id, wait, progress, started), True)


def _model(settings: Settings) -> tuple[str, float]:
    """The model's identity, after checking that this process could run it (before any job row exists)."""
    if not settings.broker_url and settings.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SetupError(f"SCANNER_DEVICE (--device) is {settings.device!r} but CUDA is not available here")
        index = int(settings.device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise SetupError(f"--device {settings.device}: this machine has {torch.cuda.device_count()} GPU(s)")
    try:
        return model_identity(settings)
    except CheckpointError as exc:
        raise SetupError(str(exc)) from None


def _run_job(
    settings: Settings, sessions: Any, job_id: int, wait: bool, progress: ProgressFactory | None, started: float
) -> dict[str, Any]:
    if not job_is_ready(sessions, job_id):  # an interrupted creation: record the missing items first
        with sessions() as session:
            sources = list(session.scalar(select(Job.sources).where(Job.id == job_id)) or [])
        complete_creation(sessions, job_id, expand_sources(sources))
    queued = _queued_count(sessions, job_id)
    if settings.broker_url:
        try:
            enqueue_distributed(settings, sessions, job_id)
        except Exception as exc:  # noqa: BLE001 - kombu raises transport-specific errors
            raise SetupError(
                f"job {job_id} is recorded but could not be fully enqueued ({type(exc).__name__}); "
                "run the same command again to resume it"
            ) from None
        if wait:
            follow_job(settings, sessions, job_id, queued, progress)
    else:
        advance = progress("scanning", queued) if progress and queued else None
        run_embedded(settings, sessions, job_id, advance)
    summary = _summary(sessions, job_id, time.perf_counter() - started, queued)
    sessions.kw["bind"].dispose()
    return summary


def _queued_count(sessions: Any, job_id: int) -> int:
    with sessions() as session:
        return job_counts(session, job_id)["queued"]


def follow_job(
    settings: Settings, sessions: Any, job_id: int, queued: int, progress: ProgressFactory | None, poll: float = 0.5
) -> None:
    """Poll SQL until the job is finished, re-sending batches of dead workers; give up after a stall."""
    advance = progress("scanning", queued) if progress and queued else None
    remaining, last_change, next_reap = queued, time.monotonic(), 0.0
    send, queue_empty = celery_messaging(settings)
    while True:
        with sessions() as session:
            counts = job_counts(session, job_id)
            finished = session.scalar(select(Job.finished_at).where(Job.id == job_id)) is not None
        now = time.monotonic()
        if counts["queued"] < remaining:
            if advance:
                advance(remaining - counts["queued"])
            remaining, last_change = counts["queued"], now
        if finished:
            return
        if now >= next_reap:
            reap_expired(sessions, send, queue_empty=queue_empty, stale=2 * settings.lease_seconds)
            next_reap = now + max(1.0, settings.lease_seconds / 2)
        if now - last_change > settings.stall_timeout:
            raise SetupError(stall_message(sessions, job_id, counts["queued"], settings.stall_timeout))
        time.sleep(poll)


def stall_message(sessions: Any, job_id: int, queued: int, waited: float) -> str:
    """Why `submit` stopped following: the job, what remains, and who worked on it last."""
    seen = last_seen_workers(sessions, job_id)
    workers = ", ".join(f"{w['worker']} at {w['seen']}" for w in seen[:5]) or "none ever claimed a batch"
    return (
        f"job {job_id} made no progress for {waited:.0f} s: {queued} items still queued; workers last seen: "
        f"{workers}. Check that workers run on this queue, then `scanner resume {job_id}` "
        "(nothing done is lost)"
    )


def _summary(sessions: Any, job_id: int, elapsed: float, scanned: int) -> dict[str, Any]:
    with sessions() as session:
        status = job_status(session, job_id)
    status["elapsed_seconds"] = round(elapsed, 3)
    status["images_per_second"] = round(scanned / elapsed, 2) if elapsed > 0 and status["finished"] else None
    return status
