"""Distributed throughput (submit to job finished, 1 and 2 worker processes) against in-process
decode + model throughput on the same images, measured in the same run.

    .venv/bin/python scripts/bench_distributed.py [--images 1500] [--database-url postgresql+psycopg://...]

Needs the local Redis and PostgreSQL. Each run uses a fresh database and its own queue.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import redis
from bench_embedded import parse_args  # the script's own folder is on the path

from scanner.db import upgrade
from scanner.pipeline.scan import ScanContext, complete_batch, prepare_batch
from scanner.pipeline.submit import open_database, submit
from scanner.settings import Settings

SCANNER = str(Path(sys.executable).with_name("scanner"))

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def fresh_database() -> str:
    """Create an empty, migrated PostgreSQL database for one run."""
    name = f"fauxscan_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    upgrade(url)
    return url


def in_process(paths: list[Path], settings: Settings) -> float:
    """Decode + model on this process, batches recorded to SQL as the workers do (no broker)."""
    from scanner.pipeline.jobs import chunks, create_job, queued_item_ids
    from scanner.pipeline.model import model_identity
    from scanner.pipeline.sources import expand_sources

    sessions = open_database(settings)
    version, threshold = model_identity(settings)
    job_id, _ = create_job(sessions, ["bench"], expand_sources([str(p) for p in paths]), version, threshold, "bench")
    ctx = ScanContext.create(settings, sessions)
    assert ctx.runner.loaded.version  # load before timing, as a warm worker has
    with sessions() as session:
        batches = list(chunks(queued_item_ids(session, job_id), settings.batch_size))
    started = time.perf_counter()
    for batch in batches:
        complete_batch(ctx, prepare_batch(ctx, job_id, batch))
    elapsed = time.perf_counter() - started
    ctx.close()
    return len(paths) / elapsed


def start_worker(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    """`scanner worker` (one process) with the settings in its environment; returns once Celery says ready."""
    env = {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:
        worker = subprocess.Popen([SCANNER, "worker"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while b"ready." not in log_path.read_bytes():
        if worker.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"worker did not start:\n{log_path.read_text()}")
        time.sleep(0.2)
    return worker


def distributed(paths: list[Path], settings: Settings, processes: int, log_dir: Path) -> float:
    """Submit to finished (submit follows the job) with `processes` single-process workers already running."""
    workers = [start_worker(settings, log_dir / f"bench{processes}-{i}.log") for i in range(processes)]
    try:
        started = time.perf_counter()
        summary = submit(settings, [str(p) for p in paths], wait=True).summary
        assert summary["finished"], summary
        return len(paths) / (time.perf_counter() - started)
    finally:
        for worker in workers:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(60)
        redis.Redis.from_url(settings.broker_url or "").delete(settings.queue)


def main() -> None:
    """Print in-process and distributed rates and their ratios."""
    args, paths = parse_args(__doc__)
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / "fauxscan-bench"
    log_dir.mkdir(exist_ok=True)
    base = Settings.from_env().with_overrides(batch_size=args.batch_size, torch_threads=0)
    local = in_process(paths, base.with_overrides(database_url=fresh_database(), broker_url=None))
    print(f"images: {len(paths)}; in-process decode+model+SQL: {local:8.1f} images/s")
    for processes in (1, 2):
        settings = base.with_overrides(
            database_url=fresh_database(),
            broker_url="redis://127.0.0.1:6379/13",
            queue=f"bench-{uuid.uuid4().hex[:6]}",
            torch_threads=max(1, (os.cpu_count() or 1) // processes),
        )
        rate = distributed(paths, settings, processes, log_dir)
        ratio = rate / local
        print(f"distributed, {processes} worker process(es): {rate:8.1f} images/s | ratio {ratio:.2f}x (goal >= 0.8x)")


if __name__ == "__main__":
    main()
