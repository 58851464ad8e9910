"""Submit: expand sources, record (or resume) the job, dispatch it, and summarise the outcome."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from scanner.connect import SetupError, describe_db_error, open_database, safe_url
from scanner.db import Job, row_by_id
from scanner.detector.checkpoint import CheckpointError
from scanner.engines import Engine, ProgressFactory, open_engine
from scanner.moderation.reports import job_counts, job_status
from scanner.pipeline.jobs import (
    canonical_sources,
    complete_creation,
    create_job,
    find_resumable_job,
    job_is_ready,
    sources_key,
)
from scanner.pipeline.model import model_identity
from scanner.pipeline.sources import LIST_PREFIX, iter_sources
from scanner.settings import Settings

__all__ = ["SetupError", "describe_db_error", "open_database", "resume", "safe_url", "submit"]


@dataclass
class SubmitResult:
    """What `scanner submit` reports."""

    summary: dict[str, Any]
    resumed: bool


def submit(
    settings: Settings, arguments: Sequence[str], wait: bool, progress: ProgressFactory | None = None
) -> SubmitResult:
    """Record a job for the arguments (or resume the same unfinished one) and scan it, here or through the broker.
    An argument may stand for a list's lines (`spool_list`): they are read a chunk at a time, never held whole."""
    started = time.perf_counter()
    engine = open_engine(settings)
    model_version, threshold = _model(settings, engine)
    sessions = open_database(settings)
    sources = canonical_sources(arguments)
    job_id = find_resumable_job(sessions, sources_key(sources, model_version))
    resumed = job_id is not None
    if job_id is None:  # another process may record the same job meanwhile: then that one is resumed
        found = iter_sources(sources)
        job_id, created = create_job(sessions, sources, found, model_version, threshold, engine.mode)
        resumed = not created
    return SubmitResult(_run_job(engine, sessions, job_id, wait, progress, started), resumed)


def resume(settings: Settings, job_id: int, wait: bool, progress: ProgressFactory | None = None) -> SubmitResult:
    """Carry on with an unfinished job by id (its recording finished first if it was cut short)."""
    started = time.perf_counter()
    engine = open_engine(settings)
    model_version, _ = _model(settings, engine)
    sessions = open_database(settings)
    with sessions() as session:
        job = row_by_id(session, Job, job_id)
    if job is None:
        raise SetupError(f"no job with id {job_id}")
    if job.model_version != model_version:
        raise SetupError(
            f"job {job_id} was submitted with model {job.model_version}; this process has {model_version}: "
            "choose that model with --model or SCANNER_MODEL"
        )
    return SubmitResult(_run_job(engine, sessions, job_id, wait, progress, started), True)


def _model(settings: Settings, engine: Engine) -> tuple[str, float]:
    """The model's identity, after checking that the engine can run jobs (before any job row exists)."""
    engine.check()
    try:
        return model_identity(settings)
    except CheckpointError as exc:
        raise SetupError(str(exc)) from None


def _run_job(
    engine: Engine, sessions: Any, job_id: int, wait: bool, progress: ProgressFactory | None, started: float
) -> dict[str, Any]:
    if not job_is_ready(sessions, job_id):  # an interrupted creation: record the missing items first
        with sessions() as session:
            sources = list(session.scalar(select(Job.sources).where(Job.id == job_id)) or [])
        if missing := [s for s in sources if s.startswith(LIST_PREFIX) and not Path(s[len(LIST_PREFIX) :]).is_file()]:
            raise SetupError(f"job {job_id} was cut short while its items were recorded, and its list is gone "
                             f"({missing[0][len(LIST_PREFIX) :]}): submit the list again as a new job")  # fmt: skip
        complete_creation(sessions, job_id, iter_sources(sources))
    queued = _queued_count(sessions, job_id)
    engine.run(sessions, job_id, queued, wait, progress)
    summary = _summary(sessions, job_id, time.perf_counter() - started, queued)
    sessions.kw["bind"].dispose()
    return summary


def _queued_count(sessions: Any, job_id: int) -> int:
    with sessions() as session:
        return job_counts(session, job_id)["queued"]


def _summary(sessions: Any, job_id: int, elapsed: float, scanned: int) -> dict[str, Any]:
    with sessions() as session:
        status = job_status(session, job_id)
    status["elapsed_seconds"] = round(elapsed, 3)
    status["images_per_second"] = round(scanned / elapsed, 2) if elapsed > 0 and status["finished"] else None
    return status
